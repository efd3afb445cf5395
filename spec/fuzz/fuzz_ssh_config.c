/* fuzz_ssh_config.c - the ssh_config tokenizer and evaluator (lua/sshchain/config.lua, run in a
 * Lua state of its own) on any text taken as a config file: the effective configuration of a host
 * must come back as a result or nil and a message, never raise, and stay linear (libFuzzer's
 * -timeout catches a slow one). Include is not followed and Match exec runs nothing; the few
 * facts of the local system config.lua asks sshchain.core for are fixed here. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>

#include "lua_fuzz.h"

#ifndef CONFIG_LUA
#define CONFIG_LUA "lua/sshchain/config.lua"
#endif

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    const char *facts =
        "package.preload['sshchain.core'] = function() return {\n"
        "  local_info = function() return { user = 'fuzz', uid = 1000, home = '/home/fuzz',\n"
        "    hostname = 'fuzz.example' } end,\n"
        "  user_home = function(u) if u == 'root' then return '/root' end end,\n"
        "  numeric_host = function(s) if s:match('^%d+%.%d+%.%d+%.%d+$') then return s end end,\n"
        "  service_port = function(s) if s == 'ssh' then return 22 end end,\n"
        "  sha1_hex = function(s) return ('%040x'):format(#s) end } end\n";
    if (luaL_dostring(L, facts) != LUA_OK)
        __builtin_trap();
    if (luaL_dofile(L, CONFIG_LUA) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        __builtin_trap();
    }
    lua_setglobal(L, "config");
    const char *probe =
        "local text = ...\n"
        "for line in (text .. '\\n'):gmatch('([^\\n]*)\\n') do config.tokenize(line) end\n"
        "config.on_unsupported = function() end\n"
        "config.set_text('fuzz', text)\n"
        "for _, host in ipairs { 'h', 'Host-1.example', '10.0.0.1' } do\n"
        "  local e = config.effective(host, { config = 'fuzz', exec = false, include = false })\n"
        "  if e then config.dump(e) end\n"
        "end\n";
    if (luaL_loadstring(L, probe) != LUA_OK)
        __builtin_trap();
    lua_setglobal(L, "probe");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    lua_fuzz_call(L, "probe", data, size, "the parser raised");
    return 0;
}
