/* l_sleep.c - core.sleep(sec): an operation that completes after sec seconds; core.readable(fd):
 * one that completes when fd has input. */
#include "lsc.h"

static int l_sleep(lua_State *L)
{
    double sec = luaL_checknumber(L, 1);
    if (!(sec >= 0 && sec <= 1e9)) /* NaN fails too */
        return luaL_argerror(L, 1, "seconds must be from 0 to 1e9");
    sc_op *op = sc_sleep_start(lsc_loop(L), sec);
    if (!op)
        return luaL_error(L, "out of memory");
    lsc_push_op(L, op, LSC_SLEEP_MT);
    return 1;
}

/* core.readable(fd): an operation that completes once fd has input (or its end) */
static int l_readable(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd >= 0 && fd <= 1 << 30, 1, "a file descriptor");
    sc_op *op = sc_readable_start(lsc_loop(L), (int)fd);
    if (!op)
        return luaL_error(L, "out of memory");
    lsc_push_op(L, op, LSC_SLEEP_MT);
    return 1;
}

static const luaL_Reg sleep_methods[] = {{NULL, NULL}};

const luaL_Reg lsc_sleep_functions[] = {{"sleep", l_sleep}, {"readable", l_readable}, {NULL, NULL}};

void lsc_open_sleep(lua_State *L) { lsc_new_op_type(L, LSC_SLEEP_MT, sleep_methods); }
