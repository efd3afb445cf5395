/* fuzz_sftp_client.c - the Lua SFTP client (lua/sshchain/sftp.lua, in a Lua state of its own) on
 * any conversation: the input is the server's side, in chunks (spec/fuzz/sftp_client.lua says
 * how, and runs every call of the client over it). Every call must come back as a result or as
 * nil, "CODE: message", CODE, err, never raise, and stay linear (libFuzzer's -timeout catches a
 * slow one). The corpus is made by spec/fuzz/sftp_seeds.lua. Run from the repository's top. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>

#include "lua_fuzz.h"

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, "package.path = 'lua/?.lua;spec/fuzz/?.lua;' .. package.path\n"
                         "probe = require('sftp_client').fuzz") != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    lua_fuzz_call(L, "probe", data, size, "the SFTP client broke its contract");
    return 0;
}
