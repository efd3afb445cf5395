/* l_op.c - what every operation handle has (connect, exec, forward, transfer, sleep): whether it
 * is ready or done, its result when it has no richer one, cancel, and the one way out shared by
 * __gc. Each kind's metatable (its own l_*.c) inherits these methods. */
#include "lsc.h"

/* op:ready([streaming]) -> true when done, or (streaming) when there is news to take */
static int op_ready(lua_State *L)
{
    sc_op *op = lsc_check_op(L, 1);
    int news = lua_toboolean(L, 2) && op->has_news && op->has_news(op);
    lua_pushboolean(L, op->done || news);
    return 1;
}

static int op_done(lua_State *L)
{
    lua_pushboolean(L, lsc_check_op(L, 1)->done);
    return 1;
}

static int op_kind(lua_State *L)
{
    lua_pushstring(L, lsc_check_op(L, 1)->kind);
    return 1;
}

/* op:result() -> true, or nil, msg, CODE, err on failure (a completed op) */
static int op_result(lua_State *L)
{
    sc_op *op = lsc_check_op(L, 1);
    if (!op->done)
        return luaL_error(L, "result: the %s operation is still running", op->kind);
    if (op->err.code != SC_OK)
        return lsc_push_error(L, &op->err);
    lua_pushboolean(L, 1);
    return 1;
}

/* op:cancel(): stops unfinished work; the op completes with ECANCELED. */
static int op_cancel(lua_State *L)
{
    sc_op *op = lsc_check_op(L, 1);
    if (!op->done && op->cancel)
        op->cancel(op);
    return 0;
}

/* __gc: the handle goes; unfinished work is canceled. Idempotent. */
static int op_gc(lua_State *L)
{
    lsc_op *box = lua_touserdata(L, 1);
    if (box && box->op) {
        sc_op_abandon(box->op);
        box->op = NULL;
    }
    return 0;
}

static int op_tostring(lua_State *L)
{
    lsc_op *box = lua_touserdata(L, 1);
    if (!box || !box->op)
        lua_pushliteral(L, "sshchain.op (closed)");
    else
        lua_pushfstring(L, "sshchain.op %s (%s)", box->op->kind,
                        box->op->done ? "done" : "running");
    return 1;
}

static const luaL_Reg op_methods[] = {
    {"ready", op_ready},   {"done", op_done},     {"kind", op_kind},
    {"result", op_result}, {"cancel", op_cancel}, {NULL, NULL},
};

void lsc_open_op(lua_State *L)
{
    luaL_newmetatable(L, LSC_OP_MT);
    luaL_newlib(L, op_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, op_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, op_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
