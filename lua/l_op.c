/* l_op.c - the op type: a handle on one asynchronous operation (connect, exec, sleep).
 * The Lua half waits on ops (yielding inside tasks) and then reads their result. */
#include <string.h>

#include "lsc.h"

static lsc_op *check_op(lua_State *L)
{
    lsc_op *box = luaL_checkudata(L, 1, LSC_OP_MT);
    if (!box->op)
        luaL_error(L, "sshchain: this operation handle is closed");
    return box;
}

static int op_is_exec(const sc_op *op) { return strcmp(op->kind, "exec") == 0; }

static int op_is_forward(const sc_op *op) { return strcmp(op->kind, "forward") == 0; }

static int op_has_news(sc_op *op) { return op->has_news ? op->has_news(op) : 0; }

/* op:ready([streaming]) -> true when done, or (streaming) when output is waiting to be taken */
static int op_ready(lua_State *L)
{
    sc_op *op = check_op(L)->op;
    lua_pushboolean(L, op->done || (lua_toboolean(L, 2) && op_has_news(op)));
    return 1;
}

static int op_done(lua_State *L)
{
    lua_pushboolean(L, check_op(L)->op->done);
    return 1;
}

static int op_kind(lua_State *L)
{
    lua_pushstring(L, check_op(L)->op->kind);
    return 1;
}

/* op:take() -> stdout chunk, stderr chunk (exec in stream mode): output since the last take */
static int op_take(lua_State *L)
{
    sc_op *op = check_op(L)->op;
    if (!op_is_exec(op))
        return luaL_error(L, "take: not an exec operation");
    for (int which = 0; which < 2; which++) {
        size_t n;
        const char *p = sc_exec_output(op, which, &n);
        lua_pushlstring(L, p, n);
        sc_exec_take(op, which);
    }
    return 2;
}

/* op:result() -> the outcome of a completed op: true, or a table for exec; nil, msg, CODE on failure */
static int op_result(lua_State *L)
{
    sc_op *op = check_op(L)->op;
    if (!op->done)
        return luaL_error(L, "result: the %s operation is still running", op->kind);
    if (op->err.code != SC_OK)
        return lsc_push_error(L, &op->err);
    if (!op_is_exec(op)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_createtable(L, 0, 5);
    size_t n;
    const char *p = sc_exec_output(op, SC_STDOUT, &n);
    lua_pushlstring(L, p, n);
    lua_setfield(L, -2, "stdout");
    p = sc_exec_output(op, SC_STDERR, &n);
    lua_pushlstring(L, p, n);
    lua_setfield(L, -2, "stderr");
    int status = sc_exec_status(op);
    const char *sig = sc_exec_signal(op);
    if (status >= 0)
        lua_pushinteger(L, status);
    else
        lua_pushnil(L);
    lua_setfield(L, -2, "status");
    if (sig[0]) {
        lua_pushstring(L, sig);
        lua_setfield(L, -2, "signal");
    }
    lua_pushboolean(L, status == 0 && !sig[0]);
    lua_setfield(L, -2, "ok");
    return 1;
}

static sc_op *check_forward(lua_State *L)
{
    sc_op *op = check_op(L)->op;
    if (!op_is_forward(op))
        luaL_error(L, "not a forward");
    return op;
}

/* forward op: op:port() -> the bound local port */
static int op_port(lua_State *L)
{
    lua_pushinteger(L, sc_forward_port(check_forward(L)));
    return 1;
}

/* forward op: op:listening() -> a remote forward's listener is up */
static int op_listening(lua_State *L)
{
    lua_pushboolean(L, sc_forward_take_listening(check_forward(L)));
    return 1;
}

/* forward op: op:take_error() -> "CODE: message", CODE of the oldest connection error, or nil */
static int op_take_error(lua_State *L)
{
    const sc_err *e = sc_forward_take_error(check_forward(L));
    if (!e)
        return 0;
    lsc_push_error(L, e);
    lua_remove(L, -3);
    return 2;
}

/* forward op: op:counts() -> connections open now, accepted in all */
static int op_counts(lua_State *L)
{
    int active;
    long accepted;
    sc_forward_counts(check_forward(L), &active, &accepted);
    lua_pushinteger(L, active);
    lua_pushinteger(L, accepted);
    return 2;
}

/* op:cancel(): stops unfinished work; the op completes with ECANCELED. */
static int op_cancel(lua_State *L)
{
    sc_op *op = check_op(L)->op;
    if (!op->done && op->cancel)
        op->cancel(op);
    return 0;
}

static int op_gc(lua_State *L)
{
    lsc_op *box = luaL_checkudata(L, 1, LSC_OP_MT);
    if (box->op) {
        sc_op_abandon(box->op);
        box->op = NULL;
    }
    return 0;
}

static int op_tostring(lua_State *L)
{
    lsc_op *box = luaL_checkudata(L, 1, LSC_OP_MT);
    if (!box->op)
        lua_pushliteral(L, "sshchain.op (closed)");
    else
        lua_pushfstring(L, "sshchain.op %s (%s)", box->op->kind, box->op->done ? "done" : "running");
    return 1;
}

static const luaL_Reg op_methods[] = {
    {"ready", op_ready},   {"done", op_done},     {"kind", op_kind},     {"take", op_take},
    {"result", op_result}, {"cancel", op_cancel}, {"port", op_port},
    {"take_error", op_take_error}, {"counts", op_counts}, {"listening", op_listening},
    {NULL, NULL},
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
