/* l_module.c - luaopen_sshchain: the C core plus the Lua half, whose sources are compiled in
 * (tools/embed.lua), so the module and sshlua need no files at run time. */
#include <string.h>

#include "lsc.h"

struct lsc_embedded {
    const char *name, *chunkname, *src;
    size_t len;
};
extern const struct lsc_embedded lsc_embedded[];

int luaopen_sshchain_core(lua_State *L);
int luaopen_sshchain(lua_State *L);

/* package.preload loader for an embedded Lua module (upvalue 1: its index). */
static int load_embedded(lua_State *L)
{
    const struct lsc_embedded *e = &lsc_embedded[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbufferx(L, e->src, e->len, e->chunkname, "t") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, e->name);
    lua_call(L, 1, 1);
    return 1;
}

/* Registers the embedded modules in package.preload (not overriding files a user put first). */
static void preload_embedded(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (int i = 0; lsc_embedded[i].name; i++) {
        if (lua_getfield(L, -1, lsc_embedded[i].name) == LUA_TNIL) {
            lua_pushinteger(L, i);
            lua_pushcclosure(L, load_embedded, 1);
            lua_setfield(L, -3, lsc_embedded[i].name);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void open_core(lua_State *L)
{
    luaL_requiref(L, "sshchain.core", luaopen_sshchain_core, 0);
    lua_pop(L, 1);
    preload_embedded(L);
}

/* luaopen_sshchain_NAME (generated beside the sources): module i, required before "sshchain"
 * itself; the loader is the one package.preload gets, so a file a user put first still wins. */
int lsc_open_embedded(lua_State *L, int i);
int lsc_open_embedded(lua_State *L, int i)
{
    open_core(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, lsc_embedded[i].name);
    lua_call(L, 1, 1);
    return 1;
}

__attribute__((visibility("default"))) int luaopen_sshchain(lua_State *L)
{
    open_core(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sshchain.init");
    lua_call(L, 1, 1);
    return 1;
}
