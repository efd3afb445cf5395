/* l_connect.c - the connect operation (core.session_start returns one with the session): it
 * completes when the session is ready or has failed; its methods are the base op's. */
#include "lsc.h"

static const luaL_Reg connect_methods[] = {{NULL, NULL}};

void lsc_open_connect(lua_State *L) { lsc_new_op_type(L, LSC_CONNECT_MT, connect_methods); }
