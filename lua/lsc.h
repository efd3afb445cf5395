/* lsc.h - what the binding's files share. One file per Lua type: l_session.c (sessions),
 * l_op.c (what every operation has), l_connect.c, l_exec.c, l_forward.c, l_transfer.c,
 * l_sleep.c (one operation kind each, its metatable inheriting l_op.c's methods); l_util.c
 * holds the per-state loop, op boxes, failure results and option readers; l_core.c opens the
 * module "sshchain.core". The Lua half (sshchain/ files) builds the public API on these. */
#ifndef LSC_H
#define LSC_H

#include <lauxlib.h>
#include <lua.h>

#include "../core/exec.h"
#include "../core/forward.h"
#include "../core/loop.h"
#include "../core/session.h"
#include "../core/transfer.h"

#define LSC_SESSION_MT  "sshchain.session"
#define LSC_OP_MT       "sshchain.op" /* the methods every operation has */
#define LSC_CONNECT_MT  "sshchain.connect_op"
#define LSC_EXEC_MT     "sshchain.exec_op"
#define LSC_FORWARD_MT  "sshchain.forward_op"
#define LSC_LISTENER_MT "sshchain.listener_op"
#define LSC_TRANSFER_MT "sshchain.transfer_op"
#define LSC_SLEEP_MT    "sshchain.sleep_op"

typedef struct {
    sc_session *s;
} lsc_session;

typedef struct {
    sc_op *op;
} lsc_op;

/* The loop of this Lua state (created by luaopen_sshchain_core). */
sc_loop *lsc_loop(lua_State *L);
/* Creates the state's loop and the weak map of op boxes (once per state). */
void lsc_create_loop(lua_State *L);
int lsc_have_loop(lua_State *L);
/* Pushes the weak map op -> box; lsc_find_op pushes the box of op from the map at index m (or
 * nothing, returning 0). */
void lsc_push_opmap(lua_State *L);
int lsc_find_op(lua_State *L, int m, sc_op *op);

/* Pushes the failure result nil, "CODE: message", "CODE", {code=, stage=, reason=, hop=};
 * returns 4. */
int lsc_push_error(lua_State *L, const sc_err *err);
/* Pushes err as a table {code=, message=, stage=, reason=, hop=}. */
void lsc_push_error_table(lua_State *L, const sc_err *err);

/* Pushes a new op box for op with metatable mt (taking over the caller's reference) and records
 * it in the state's weak map, so ready ops can be found again. */
void lsc_push_op(lua_State *L, sc_op *op, const char *mt);
/* The session at index i, open (misuse raises: not a session, or closed). */
sc_session *lsc_check_session(lua_State *L, int i);

/* The op at index i (any kind); raises if it is not one, or its handle is closed. */
sc_op *lsc_check_op(lua_State *L, int i);
/* The op at index i, of the kind of metatable mt; raises otherwise. */
sc_op *lsc_check_op_kind(lua_State *L, int i, const char *mt);
/* Makes a metatable for an op kind: methods, inheriting LSC_OP_MT's; leaves nothing on the
 * stack. */
void lsc_new_op_type(lua_State *L, const char *mt, const luaL_Reg *methods);

/* Field readers for option tables; a wrong type or value raises an error naming the field.
 * Strings may not hold NUL bytes (C would cut them short). */
const char *lsc_opt_string(lua_State *L, int t, const char *k, size_t *len);
/* Like lsc_opt_string, but NUL bytes are data (stdin). */
const char *lsc_opt_bytes(lua_State *L, int t, const char *k, size_t *len);
/* A finite number in [lo, hi] (dflt when absent). */
double lsc_opt_number(lua_State *L, int t, const char *k, double dflt, double lo, double hi);
/* An integer in [lo, hi] (dflt when absent). */
lua_Integer lsc_opt_integer(lua_State *L, int t, const char *k, lua_Integer dflt, lua_Integer lo,
                            lua_Integer hi);
int lsc_opt_bool(lua_State *L, int t, const char *k, int dflt);

void lsc_open_op(lua_State *L);
void lsc_open_session(lua_State *L);
void lsc_open_connect(lua_State *L);
void lsc_open_exec(lua_State *L);
void lsc_open_forward(lua_State *L);
void lsc_open_transfer(lua_State *L);
void lsc_open_sleep(lua_State *L);

/* What each file adds to the module table (core.session_start, core.transfer_start, ...),
 * and the session methods that start an op of its kind (s:exec_start, s:forward_start). */
extern const luaL_Reg lsc_session_functions[];
extern const luaL_Reg lsc_exec_session_methods[];
extern const luaL_Reg lsc_forward_session_methods[];
extern const luaL_Reg lsc_forward_functions[];
extern const luaL_Reg lsc_transfer_functions[];
extern const luaL_Reg lsc_sleep_functions[];

#endif
