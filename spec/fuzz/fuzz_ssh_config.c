/* fuzz_ssh_config.c - the ssh_config tokenizer and parser (lua/sshchain/config.lua, run in a Lua
 * state of its own) on any text: they must return a result or nil and a message, never raise,
 * and stay linear (libFuzzer's -timeout catches a slow one). Include is not followed. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>

#ifndef CONFIG_LUA
#define CONFIG_LUA "lua/sshchain/config.lua"
#endif

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dofile(L, CONFIG_LUA) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        __builtin_trap();
    }
    lua_setglobal(L, "config");
    const char *probe =
        "local text = ...\n"
        "for line in (text .. '\\n'):gmatch('([^\\n]*)\\n') do config.tokenize(line) end\n"
        "config.parse_text(text, 'fuzz', 0, nil, nil, { includes = false })\n";
    if (luaL_loadstring(L, probe) != LUA_OK)
        __builtin_trap();
    lua_setglobal(L, "probe");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    lua_getglobal(L, "probe");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "the parser raised: %s\n", lua_tostring(L, -1));
        __builtin_trap();
    }
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
