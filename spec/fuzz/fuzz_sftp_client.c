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

#include "lua_cov.h"

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, "package.path = 'lua/?.lua;spec/fuzz/?.lua;' .. package.path\n"
                         "fuzz_client = require 'sftp_client'") != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    lua_cov_start(L);
    lua_getglobal(L, "fuzz_client");
    lua_getfield(L, -1, "fuzz");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "the SFTP client broke its contract: %s\n", lua_tostring(L, -1));
        __builtin_trap();
    }
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
