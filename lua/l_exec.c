/* l_exec.c - the exec operation: a command (or the login shell) started by
 * session:exec_start(cmd, opts), its output taken as it comes (stream mode) or whole at the end,
 * its stdin fed as it comes (stdin_open), its pty resized, signals sent. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "lsc.h"

#define MAX_ENV 64

static sc_op *check_exec(lua_State *L) { return lsc_check_op_kind(L, 1, LSC_EXEC_MT); }

/* opts.env: {NAME = value}; names are identifiers, values strings or numbers without NUL. The
 * pairs are read into vars; their strings are kept alive in a table left on the stack (the
 * caller's, until it returns). Returns how many. */
static int read_env(lua_State *L, int t, sc_env_var *vars)
{
    int n = 0;
    lua_newtable(L); /* the anchor */
    int anchor = lua_gettop(L);
    if (lua_getfield(L, t, "env") == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "option 'env' must be a table");
    int env = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, env)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int ok = k && (isalpha((unsigned char)k[0]) || k[0] == '_');
        for (const char *p = k; ok && *p; p++)
            ok = isalnum((unsigned char)*p) || *p == '_';
        if (!ok)
            luaL_error(L, "exec: env names must be identifiers (got %s)",
                       luaL_tolstring(L, -2, NULL));
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "exec: env value of %s must be a string or a number", k);
        if (n == MAX_ENV)
            luaL_error(L, "exec: at most %d env variables", MAX_ENV);
        lua_pushvalue(L, -1);
        size_t vl;
        const char *v = lua_tolstring(L, -1, &vl); /* the copy becomes a string, not the value */
        if (memchr(v, '\0', vl))
            luaL_error(L, "exec: env value of %s holds a NUL byte", k);
        lua_rawseti(L, anchor, n + 1);
        lua_rawgeti(L, anchor, n + 1);
        vars[n].name = k; /* keys stay alive in opts.env */
        vars[n].value = lua_tostring(L, -1);
        n++;
        lua_pop(L, 2); /* the anchored copy, the value */
    }
    lua_pop(L, 1);
    return n;
}

/* opts.pty: true, or {term=, cols=, rows=} */
static void read_pty(lua_State *L, int t, sc_exec_opts *o)
{
    int type = lua_getfield(L, t, "pty");
    if (type == LUA_TTABLE) {
        int p = lua_gettop(L);
        o->pty = 1;
        o->term = lsc_opt_string(L, p, "term", NULL);
        o->cols = (int)lsc_opt_integer(L, p, "cols", 80, 1, 10000);
        o->rows = (int)lsc_opt_integer(L, p, "rows", 24, 1, 10000);
    } else if (type != LUA_TNIL) {
        o->pty = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
}

/* session:exec_start(cmd | nil, opts) -> op */
static int l_exec_start(lua_State *L)
{
    sc_session *s = lsc_check_session(L, 1);
    sc_exec_opts o = {0};
    sc_env_var env[MAX_ENV];
    size_t cmdlen = 0;
    if (!lua_isnil(L, 2)) {
        o.cmd = luaL_checklstring(L, 2, &cmdlen);
        if (memchr(o.cmd, '\0', cmdlen))
            return luaL_argerror(L, 2, "the command holds a NUL byte");
    }
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        o.stdin_data = lsc_opt_bytes(L, 3, "stdin", &o.stdin_len);
        o.stdin_open = lsc_opt_bool(L, 3, "stdin_open", 0);
        o.subsystem = o.cmd ? NULL : lsc_opt_string(L, 3, "subsystem", NULL);
        read_pty(L, 3, &o);
        o.sudo_password = lsc_opt_string(L, 3, "sudo_password", NULL);
        o.timeout = lsc_opt_number(L, 3, "timeout", 0, 0, 1e9);
        o.stream = lsc_opt_bool(L, 3, "stream", 0);
        o.max_output = (size_t)lsc_opt_integer(L, 3, "max_output", 0, 0, (lua_Integer)1 << 50);
        o.n_env = read_env(L, 3, env);
        o.env = env;
    }
    sc_op *op = sc_exec_start(s, &o);
    if (!op)
        return luaL_error(L, "out of memory");
    lsc_push_op(L, op, LSC_EXEC_MT);
    return 1;
}

/* op:take() -> stdout chunk, stderr chunk (stream mode): output since the last take */
static int op_take(lua_State *L)
{
    sc_op *op = check_exec(L);
    for (int which = 0; which < 2; which++) {
        size_t n;
        const char *p = sc_exec_output(op, which, &n);
        lua_pushlstring(L, p, n);
        sc_exec_take(op, which);
    }
    return 2;
}

/* op:notify_drain(bytes): the op gets news once the queued input is down to that many bytes */
static int op_notify_drain(lua_State *L)
{
    sc_op *op = check_exec(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 2, "a byte count");
    sc_exec_notify_drain(op, (size_t)n);
    return 0;
}

/* op:result() -> {stdout=, stderr=, status=, signal=, ok=} | nil, msg, CODE, err. The kept
 * output is handed over once: the C copy goes as soon as the strings exist. */
static int op_result(lua_State *L)
{
    sc_op *op = check_exec(L);
    if (!op->done)
        return luaL_error(L, "result: the exec operation is still running");
    if (op->err.code != SC_OK)
        return lsc_push_error(L, &op->err);
    lua_createtable(L, 0, 5);
    size_t n;
    const char *p = sc_exec_output(op, SC_STDOUT, &n);
    lua_pushlstring(L, p, n);
    lua_setfield(L, -2, "stdout");
    p = sc_exec_output(op, SC_STDERR, &n);
    lua_pushlstring(L, p, n);
    lua_setfield(L, -2, "stderr");
    sc_exec_drop_output(op);
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

/* op:write(data) -> true, or false when stdin is closed (stdin_open commands) */
static int op_write(lua_State *L)
{
    sc_op *op = check_exec(L);
    size_t n;
    const char *d = luaL_checklstring(L, 2, &n);
    lua_pushboolean(L, sc_exec_write(op, d, n) == 0);
    return 1;
}

/* op:pending() -> input bytes queued and not yet sent */
static int op_pending(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sc_exec_pending_input(check_exec(L)));
    return 1;
}

static int op_close_stdin(lua_State *L)
{
    sc_exec_close_stdin(check_exec(L));
    return 0;
}

static int op_resize(lua_State *L)
{
    sc_op *op = check_exec(L);
    lua_Integer cols = luaL_checkinteger(L, 2), rows = luaL_checkinteger(L, 3);
    luaL_argcheck(L, cols > 0 && cols <= 10000, 2, "columns from 1 to 10000");
    luaL_argcheck(L, rows > 0 && rows <= 10000, 3, "rows from 1 to 10000");
    sc_exec_resize(op, (int)cols, (int)rows);
    return 0;
}

/* op:signal(name): "TERM", "INT", "KILL", "HUP", ... (without SIG) */
static int op_signal(lua_State *L)
{
    sc_op *op = check_exec(L);
    const char *name = luaL_checkstring(L, 2);
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    static const char *const known[] = {"ABRT", "ALRM", "FPE",  "HUP",  "ILL",  "INT",  "KILL",
                                        "PIPE", "QUIT", "SEGV", "TERM", "USR1", "USR2", NULL};
    int ok = 0;
    for (int i = 0; known[i] && !ok; i++)
        ok = strcmp(known[i], name) == 0;
    luaL_argcheck(L, ok, 2, "a signal name such as \"TERM\", \"INT\" or \"KILL\"");
    sc_exec_signal_send(op, name);
    return 0;
}

static const luaL_Reg exec_methods[] = {
    {"take", op_take},
    {"result", op_result},
    {"write", op_write},
    {"pending", op_pending},
    {"close_stdin", op_close_stdin},
    {"resize", op_resize},
    {"signal", op_signal},
    {"notify_drain", op_notify_drain},
    {NULL, NULL},
};

const luaL_Reg lsc_exec_session_methods[] = {{"exec_start", l_exec_start}, {NULL, NULL}};

void lsc_open_exec(lua_State *L) { lsc_new_op_type(L, LSC_EXEC_MT, exec_methods); }
