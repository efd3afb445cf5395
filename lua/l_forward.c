/* l_forward.c - the forward operation: a local forward, a SOCKS5 proxy or a remote forward,
 * started by session:forward_start{...}; it lives until closed (cancel) or its session goes. */
#include "lsc.h"

#include "../core/listener.h"

static sc_op *check_forward(lua_State *L) { return lsc_check_op_kind(L, 1, LSC_FORWARD_MT); }

/* session:forward_start{bind=, port=, path=, to_host=, to_port=, to_path=, socks=, remote=} ->
 * op | nil, msg, CODE, err */
static int l_forward_start(lua_State *L)
{
    sc_session *s = lsc_check_session(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    sc_forward_opts o = {0};
    o.bind = lsc_opt_string(L, 2, "bind", NULL);
    o.port = (int)lsc_opt_integer(L, 2, "port", 0, 0, 65535);
    o.to_host = lsc_opt_string(L, 2, "to_host", NULL);
    o.to_port = (int)lsc_opt_integer(L, 2, "to_port", 0, 0, 65535);
    o.path = lsc_opt_string(L, 2, "path", NULL);
    o.to_path = lsc_opt_string(L, 2, "to_path", NULL);
    o.socks = lsc_opt_bool(L, 2, "socks", 0);
    o.remote = lsc_opt_bool(L, 2, "remote", 0);
    lua_getfield(L, 2, "listener");
    if (!lua_isnil(L, -1))
        o.listener = lsc_check_op_kind(L, lua_gettop(L), LSC_LISTENER_MT);
    lua_pop(L, 1);
    sc_err err;
    sc_op *op = sc_forward_start(s, &o, &err);
    if (!op)
        return lsc_push_error(L, &err);
    lsc_push_op(L, op, LSC_FORWARD_MT);
    return 1;
}

/* op:port() -> the bound port (local), or the one the server bound (remote) */
static int op_port(lua_State *L)
{
    lua_pushinteger(L, sc_forward_port(check_forward(L)));
    return 1;
}

/* op:listening() -> a remote forward's listener is up */
static int op_listening(lua_State *L)
{
    lua_pushboolean(L, sc_forward_take_listening(check_forward(L)));
    return 1;
}

/* op:take_error() -> "CODE: message", CODE, err of the oldest connection failure, or nothing */
static int op_take_error(lua_State *L)
{
    const sc_err *e = sc_forward_take_error(check_forward(L));
    if (!e)
        return 0;
    lsc_push_error(L, e);
    lua_remove(L, -4);
    return 3;
}

/* op:counts() -> connections open now, accepted in all */
static int op_counts(lua_State *L)
{
    int active;
    long accepted;
    sc_forward_counts(check_forward(L), &active, &accepted);
    lua_pushinteger(L, active);
    lua_pushinteger(L, accepted);
    return 2;
}

static const luaL_Reg forward_methods[] = {
    {"port", op_port},
    {"listening", op_listening},
    {"take_error", op_take_error},
    {"counts", op_counts},
    {NULL, NULL},
};

/* core.listen{bind=, port=, path=} -> a listener op (kept across forwards) | nil, msg, CODE, err */
static int l_listen(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *bind = lsc_opt_string(L, 1, "bind", NULL);
    int port = (int)lsc_opt_integer(L, 1, "port", 0, 0, 65535);
    const char *path = lsc_opt_string(L, 1, "path", NULL);
    sc_err err;
    sc_op *op = sc_listener_open(lsc_loop(L), bind, port, path, &err);
    if (!op)
        return lsc_push_error(L, &err);
    lsc_push_op(L, op, LSC_LISTENER_MT);
    return 1;
}

static sc_op *check_listener(lua_State *L) { return lsc_check_op_kind(L, 1, LSC_LISTENER_MT); }

/* listener:port() -> the port bound (0: a Unix socket) */
static int listener_port(lua_State *L)
{
    lua_pushinteger(L, sc_listener_port(check_listener(L)));
    return 1;
}

/* listener:refuse(on): waiting and new clients are accepted and closed (on), or wait (off) */
static int listener_refuse(lua_State *L)
{
    sc_listener_refuse(check_listener(L), lua_toboolean(L, 2));
    return 0;
}

/* listener:refused() -> clients refused so far */
static int listener_refused(lua_State *L)
{
    lua_pushinteger(L, sc_listener_refused(check_listener(L)));
    return 1;
}

static const luaL_Reg listener_methods[] = {{"port", listener_port},
                                            {"refuse", listener_refuse},
                                            {"refused", listener_refused},
                                            {NULL, NULL}};

const luaL_Reg lsc_forward_functions[] = {{"listen", l_listen}, {NULL, NULL}};

const luaL_Reg lsc_forward_session_methods[] = {{"forward_start", l_forward_start}, {NULL, NULL}};

void lsc_open_forward(lua_State *L)
{
    lsc_new_op_type(L, LSC_FORWARD_MT, forward_methods);
    lsc_new_op_type(L, LSC_LISTENER_MT, listener_methods);
}
