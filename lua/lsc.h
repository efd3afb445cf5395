/* lsc.h - what the binding's files share: the per-state loop, op boxes, error results. */
#ifndef LSC_H
#define LSC_H

#include <lauxlib.h>
#include <lua.h>

#include "../core/exec.h"
#include "../core/forward.h"
#include "../core/loop.h"
#include "../core/session.h"
#include "../core/transfer.h"

#define LSC_SESSION_MT "sshchain.session"
#define LSC_OP_MT "sshchain.op"

typedef struct {
    sc_session *s;
} lsc_session;

typedef struct {
    sc_op *op;
} lsc_op;

/* The loop of this Lua state (created by luaopen_sshchain_core). */
sc_loop *lsc_loop(lua_State *L);

/* Pushes nil, "CODE: message", "CODE"; returns 3. */
int lsc_push_error(lua_State *L, const sc_err *err);

/* Pushes a new op box for op (taking over the caller's reference) and records it in the
 * state's weak map, so ready ops can be found again. */
void lsc_push_op(lua_State *L, sc_op *op);

/* Field readers for option tables; they raise on a wrong type. */
const char *lsc_opt_string(lua_State *L, int t, const char *k, size_t *len);
double lsc_opt_number(lua_State *L, int t, const char *k, double dflt);
int lsc_opt_bool(lua_State *L, int t, const char *k, int dflt);

void lsc_open_op(lua_State *L);
void lsc_open_session(lua_State *L);
void lsc_open_transfer(lua_State *L);
extern const luaL_Reg lsc_session_functions[];
extern const luaL_Reg lsc_transfer_functions[];

#endif
