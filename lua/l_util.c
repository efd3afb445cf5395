/* l_util.c - what every binding file uses: the state's loop (in the registry, no C globals),
 * op boxes and their weak map, the one helper that makes failure results, and option readers
 * that raise a misuse error naming the field. */
#include <math.h>
#include <string.h>

#include "lsc.h"

static const char LOOP_KEY = 'L';    /* registry: full userdata holding the sc_loop pointer */
static const char OPMAP_KEY = 'O';   /* registry: weak table lightuserdata(sc_op) -> op box */
static const char OPTYPES_KEY = 'T'; /* registry: set of the op kinds' metatables */

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

static int loop_gc(lua_State *L)
{
    lsc_loopbox *box = lua_touserdata(L, 1);
    if (box->loop) {
        sc_loop_free(box->loop);
        box->loop = NULL;
    }
    return 0;
}

int lsc_have_loop(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
    int have = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return have;
}

void lsc_push_opmap(lua_State *L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &OPMAP_KEY); }

int lsc_find_op(lua_State *L, int m, sc_op *op)
{
    if (lua_rawgetp(L, m, op) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    return 0;
}

void lsc_create_loop(lua_State *L)
{
    if (lsc_have_loop(L))
        return;
    ssh_init();
    lsc_loopbox *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->loop = sc_loop_new();
    if (!box->loop)
        luaL_error(L, "sshchain: cannot create the event loop");
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

    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OPTYPES_KEY);
}

/* ---- failures ---- */

void lsc_push_error_table(lua_State *L, const sc_err *err)
{
    lua_createtable(L, 0, 5);
    lua_pushstring(L, sc_code_name(err->code));
    lua_setfield(L, -2, "code");
    lua_pushfstring(L, "%s: %s", sc_code_name(err->code), err->msg);
    lua_setfield(L, -2, "message");
    if (err->stage) {
        lua_pushstring(L, err->stage);
        lua_setfield(L, -2, "stage");
    }
    if (err->reason) {
        lua_pushstring(L, err->reason);
        lua_setfield(L, -2, "reason");
    }
    if (err->hop > 0) {
        lua_pushinteger(L, err->hop);
        lua_setfield(L, -2, "hop");
    }
}

int lsc_push_error(lua_State *L, const sc_err *err)
{
    const char *code = sc_code_name(err->code);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", code, err->msg);
    lua_pushstring(L, code);
    lsc_push_error_table(L, err);
    return 4;
}

/* ---- op boxes ---- */

void lsc_push_op(lua_State *L, sc_op *op, const char *mt)
{
    lsc_op *box = lua_newuserdatauv(L, sizeof *box, 1);
    box->op = op;
    luaL_setmetatable(L, mt);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OPMAP_KEY);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, op);
    lua_pop(L, 1);
    sc_loop_poke(op->loop);
}

sc_session *lsc_check_session(lua_State *L, int i)
{
    lsc_session *box = luaL_checkudata(L, i, LSC_SESSION_MT);
    if (!box->s || box->s->state == SS_CLOSED)
        luaL_error(L, "sshchain: session is closed");
    return box->s;
}

/* The box at i when it is an op of any kind, else NULL. */
static lsc_op *test_op(lua_State *L, int i)
{
    if (!lua_getmetatable(L, i))
        return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OPTYPES_KEY);
    lua_pushvalue(L, -2);
    int known = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 3);
    return known ? lua_touserdata(L, i) : NULL;
}

sc_op *lsc_check_op(lua_State *L, int i)
{
    lsc_op *box = test_op(L, i);
    if (!box)
        luaL_typeerror(L, i, "sshchain operation");
    if (!box->op)
        luaL_argerror(L, i, "this operation handle is closed");
    return box->op;
}

sc_op *lsc_check_op_kind(lua_State *L, int i, const char *mt)
{
    lsc_op *box = luaL_testudata(L, i, mt);
    if (!box)
        luaL_typeerror(L, i, mt);
    if (!box->op)
        luaL_argerror(L, i, "this operation handle is closed");
    return box->op;
}

void lsc_new_op_type(lua_State *L, const char *mt, const luaL_Reg *methods)
{
    luaL_newmetatable(L, mt); /* mt */
    lua_newtable(L);          /* mt, methods */
    luaL_setfuncs(L, methods, 0);
    lua_createtable(L, 0, 1);        /* mt, methods, meta */
    luaL_getmetatable(L, LSC_OP_MT); /* mt, methods, meta, base */
    lua_getfield(L, -1, "__index");  /* the methods every op has, as a fallback */
    lua_setfield(L, -3, "__index");
    lua_getfield(L, -1, "__gc"); /* one idempotent way out, as the base has it */
    lua_setfield(L, -5, "__gc");
    lua_getfield(L, -1, "__tostring");
    lua_setfield(L, -5, "__tostring");
    lua_pop(L, 1);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "__index"); /* mt */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OPTYPES_KEY);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 2);
}

/* ---- option tables ---- */

static const char *opt_lstring(lua_State *L, int t, const char *k, size_t *len, int bytes)
{
    const char *v = NULL;
    size_t n = 0;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "option '%s' must be a string (got %s)", k, luaL_typename(L, -1));
        v = lua_tolstring(L, -1, &n);
        if (!bytes && memchr(v, '\0', n))
            luaL_error(L, "option '%s' holds a NUL byte", k);
    }
    if (len)
        *len = n;
    lua_pop(L, 1); /* the string stays alive in the table */
    return v;
}

const char *lsc_opt_string(lua_State *L, int t, const char *k, size_t *len)
{
    return opt_lstring(L, t, k, len, 0);
}

const char *lsc_opt_bytes(lua_State *L, int t, const char *k, size_t *len)
{
    return opt_lstring(L, t, k, len, 1);
}

double lsc_opt_number(lua_State *L, int t, const char *k, double dflt, double lo, double hi)
{
    double v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "option '%s' must be a number (got %s)", k, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
        if (!isfinite(v) || v < lo || v > hi)
            luaL_error(L, "option '%s' must be a number from %g to %g (got %s)", k, lo, hi,
                       lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

lua_Integer lsc_opt_integer(lua_State *L, int t, const char *k, lua_Integer dflt, lua_Integer lo,
                            lua_Integer hi)
{
    lua_Integer v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        int isint = 0;
        v = lua_tointegerx(L, -1, &isint);
        if (lua_type(L, -1) != LUA_TNUMBER || !isint || v < lo || v > hi)
            luaL_error(L, "option '%s' must be an integer from %I to %I (got %s)", k,
                       (LUAI_UACINT)lo, (LUAI_UACINT)hi, luaL_tolstring(L, -1, NULL));
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
