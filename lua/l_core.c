/* l_core.c - the module "sshchain.core": opens every type, turns the loop, and small utilities
 * for the recipes. The Lua half (sshchain/ files) builds the public API on these primitives. */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "lsc.h"

/* core.step(timeout_ms) -> list of ops that became ready (done, or news to take).
 * timeout_ms: 0 polls, negative waits for the next event. */
static int core_step(lua_State *L)
{
    sc_loop *loop = lsc_loop(L);
    int timeout = (int)luaL_optinteger(L, 1, -1);
    sc_loop_turn(loop, timeout);
    lua_newtable(L);
    lsc_push_opmap(L);
    int n = 0;
    sc_op *op;
    while ((op = sc_loop_pop_ready(loop)) != NULL) {
        if (lsc_find_op(L, -1, op))
            lua_rawseti(L, -3, ++n);
        sc_op_release(op);
    }
    lua_pop(L, 1);
    return 1;
}

/* core.stats() -> {sessions=, channels=, ops=}: live core objects, for leak checks. */
static int core_stats(lua_State *L)
{
    sc_loop *loop = lsc_loop(L);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, loop->live_sessions);
    lua_setfield(L, -2, "sessions");
    lua_pushinteger(L, loop->live_channels);
    lua_setfield(L, -2, "channels");
    lua_pushinteger(L, loop->n_live_ops);
    lua_setfield(L, -2, "ops");
    return 1;
}

static int core_now(lua_State *L)
{
    lua_pushnumber(L, sc_loop_now());
    return 1;
}

/* core.isatty(fd) -> whether fd (0, 1, 2) is a terminal (recipes: progress bars, colours) */
static int core_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* core.term_width(fd) -> columns of the terminal on fd, or nil */
static int core_term_width(lua_State *L)
{
    struct winsize ws;
    if (ioctl((int)luaL_checkinteger(L, 1), TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0)
        return 0;
    lua_pushinteger(L, ws.ws_col);
    return 1;
}

/* core.set_interrupted(v): the value a Ctrl-C raises (sshlua's hook reads it from the registry,
 * so scripts see the same object whichever interpreter runs them). */
static int core_set_interrupted(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "sshchain.interrupted");
    return 0;
}

static const luaL_Reg core_functions[] = {
    {"set_interrupted", core_set_interrupted},
    {"step", core_step},
    {"stats", core_stats},
    {"now", core_now},
    {"isatty", core_isatty},
    {"term_width", core_term_width},
    {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_sshchain_core(lua_State *L);
__attribute__((visibility("default"))) int luaopen_sshchain_core(lua_State *L)
{
    if (!lsc_have_loop(L)) {
        lsc_create_loop(L);
        lsc_open_op(L);
        lsc_open_connect(L);
        lsc_open_exec(L);
        lsc_open_forward(L);
        lsc_open_transfer(L);
        lsc_open_sleep(L);
        lsc_open_session(L);
    }
    luaL_newlib(L, core_functions);
    luaL_setfuncs(L, lsc_session_functions, 0);
    luaL_setfuncs(L, lsc_transfer_functions, 0);
    luaL_setfuncs(L, lsc_sleep_functions, 0);
    return 1;
}
