/* l_core.c - the module "sshchain.core": the per-state loop, turning it, and shared helpers.
 * The Lua half (sshchain.lua) builds the public API on these primitives. */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "lsc.h"

static const char LOOP_KEY = 'L';   /* registry: full userdata holding the sc_loop pointer */
static const char OPMAP_KEY = 'O';  /* registry: weak table lightuserdata(sc_op) -> op box */

typedef struct {
    sc_loop *loop;
} lsc_loopbox;

sc_loop *lsc_loop(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
    lsc_loopbox *box = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!box || !box->loop)
        luaL_error(L, "sshchain: the event loop is gone (state closing)");
    return box->loop;
}

int lsc_push_error(lua_State *L, const sc_err *err)
{
    const char *code = sc_code_name(err->code);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", code, err->msg);
    lua_pushstring(L, code);
    return 3;
}

void lsc_push_op(lua_State *L, sc_op *op)
{
    lsc_op *box = lua_newuserdatauv(L, sizeof *box, 1);
    box->op = op;
    luaL_setmetatable(L, LSC_OP_MT);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OPMAP_KEY);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, op);
    lua_pop(L, 1);
}

const char *lsc_opt_string(lua_State *L, int t, const char *k, size_t *len)
{
    const char *v = NULL;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "option '%s' must be a string", k);
        v = lua_tolstring(L, -1, len);
    } else if (len) {
        *len = 0;
    }
    lua_pop(L, 1); /* the string stays alive in the table */
    return v;
}

double lsc_opt_number(lua_State *L, int t, const char *k, double dflt)
{
    double v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (!lua_isnumber(L, -1))
            luaL_error(L, "option '%s' must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

int lsc_opt_bool(lua_State *L, int t, const char *k, int dflt)
{
    int v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL)
        v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int loop_gc(lua_State *L)
{
    lsc_loopbox *box = lua_touserdata(L, 1);
    if (box->loop) {
        sc_loop_free(box->loop);
        box->loop = NULL;
    }
    return 0;
}

/* core.step(timeout_ms) -> list of ops that became ready (done, or news to take).
 * timeout_ms: 0 polls, negative waits for the next event. */
static int core_step(lua_State *L)
{
    sc_loop *loop = lsc_loop(L);
    int timeout = (int)luaL_optinteger(L, 1, -1);
    sc_loop_turn(loop, timeout);
    lua_newtable(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OPMAP_KEY);
    int n = 0;
    sc_op *op;
    while ((op = sc_loop_pop_ready(loop)) != NULL) {
        if (lua_rawgetp(L, -1, op) != LUA_TNIL)
            lua_rawseti(L, -3, ++n);
        else
            lua_pop(L, 1);
        sc_op_release(op);
    }
    lua_pop(L, 1);
    return 1;
}

static int core_sleep(lua_State *L)
{
    double sec = luaL_checknumber(L, 1);
    sc_op *op = sc_sleep_start(lsc_loop(L), sec);
    if (!op)
        return luaL_error(L, "out of memory");
    lsc_push_op(L, op);
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

static const luaL_Reg core_functions[] = {
    {"step", core_step},   {"sleep", core_sleep},   {"stats", core_stats},
    {"now", core_now},     {"isatty", core_isatty}, {"term_width", core_term_width},
    {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_sshchain_core(lua_State *L);
__attribute__((visibility("default"))) int luaopen_sshchain_core(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
    int have_loop = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!have_loop) {
        ssh_init();
        lsc_loopbox *box = lua_newuserdatauv(L, sizeof *box, 0);
        box->loop = sc_loop_new();
        if (!box->loop)
            return luaL_error(L, "sshchain: cannot create the event loop");
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, loop_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);

        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &OPMAP_KEY);

        lsc_open_op(L);
        lsc_open_session(L);
        lsc_open_transfer(L);
    }
    luaL_newlib(L, core_functions);
    luaL_setfuncs(L, lsc_session_functions, 0);
    luaL_setfuncs(L, lsc_transfer_functions, 0);
    return 1;
}
