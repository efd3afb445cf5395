/* lua_fuzz.h - what the fuzz targets that run Lua share: the call of their Lua probe on an
 * input, and coverage of the Lua code for libFuzzer. The Lua interpreter is not instrumented, so
 * a target that runs Lua would get no guidance from it: a line hook counts each (chunk, line,
 * line before) in libFuzzer's extra counters, which it reads as coverage; new paths through the
 * Lua code then keep their inputs. The hook is in the libFuzzer build only (SC_LIBFUZZER): the
 * corpus replay runs without it. */
#ifndef SC_LUA_FUZZ_H
#define SC_LUA_FUZZ_H

#include <lua.h>
#include <stdint.h>
#include <stdio.h>

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

/* Calls the global function `probe` with the input as a string; a raise traps, after printing
 * `broke` and the error. */
static inline void lua_fuzz_call(lua_State *L, const char *probe, const uint8_t *data, size_t size,
                                 const char *broke)
{
    lua_cov_start(L);
    lua_getglobal(L, probe);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "%s: %s\n", broke, lua_tostring(L, -1));
        __builtin_trap();
    }
    lua_gc(L, LUA_GCCOLLECT, 0);
}

#endif
