/* lua_cov.h - coverage of Lua code for libFuzzer: the Lua interpreter is not instrumented, so a
 * target that runs Lua would get no guidance from it. A line hook counts each (chunk, line,
 * line before) in libFuzzer's extra counters, which it reads as coverage; new paths through the
 * Lua code then keep their inputs. Only in the libFuzzer build (SC_LIBFUZZER): the corpus replay
 * runs without the hook. */
#ifndef SC_LUA_COV_H
#define SC_LUA_COV_H

#include <lua.h>
#include <stdint.h>

#ifdef SC_LIBFUZZER
#define LUA_COV_SLOTS (1u << 16)
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[LUA_COV_SLOTS];
static uintptr_t lua_cov_prev;

static void lua_cov_hook(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar))
        return;
    uintptr_t here = ((uintptr_t)ar->source * 31u) ^ ((uintptr_t)ar->currentline * 2654435761u);
    uint32_t slot = (uint32_t)((here ^ (lua_cov_prev >> 1)) * 0x9E3779B1u) >> 16;
    if (lua_cov[slot] < 255)
        lua_cov[slot]++;
    lua_cov_prev = here;
}

static inline void lua_cov_start(lua_State *L)
{
    lua_cov_prev = 0;
    lua_sethook(L, lua_cov_hook, LUA_MASKLINE, 0);
}
#else
static inline void lua_cov_start(lua_State *L) { (void)L; }
#endif

#endif
