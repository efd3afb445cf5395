/* l_core.c - the module "sshchain.core": opens every type, turns the loop, and small utilities
 * for the recipes. The Lua half (sshchain/ files) builds the public API on these primitives. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "lsc.h"

/* Ctrl-C during a wait, in any interpreter (lua5.4's own handler only sets a hook, which runs
 * when the wait is over): a wait that may block has this handler, which ends the turn at once;
 * the step then raises sshchain's interruption value. A second Ctrl-C in the same wait kills. */
static volatile sig_atomic_t got_sigint;

static void on_sigint(int sig)
{
    int e = errno;
    got_sigint = 1;
    signal(sig, SIG_DFL);
    sc_interrupt();
    errno = e;
}

/* The application's handler while ours is set (only while a turn's poll may wait: the loop
 * says when, see sc_loop_on_block; busy turns that do not wait set nothing, which saved two
 * rt_sigaction calls on 93-98 % of the turns of a transfer or of 1000 connects). */
static struct sigaction app_sigint;
static int sigint_armed;

static void arm_sigint(void *ud)
{
    (void)ud;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigint_armed = sigaction(SIGINT, &sa, &app_sigint) == 0;
    if (sigint_armed && app_sigint.sa_handler == SIG_IGN) { /* the application ignores it: we do */
        sigaction(SIGINT, &app_sigint, NULL);
        sigint_armed = 0;
        got_sigint = 0; /* one that came in between was theirs to ignore */
    }
}

static void disarm_sigint(void *ud)
{
    (void)ud;
    if (sigint_armed)
        sigaction(SIGINT, &app_sigint, NULL);
    sigint_armed = 0;
}

/* Turns the loop with SIGINT caught while it waits (unless the application ignores it);
 * whether it came. */
static int turn_interruptible(sc_loop *loop, int timeout)
{
    sc_loop_on_block(loop, arm_sigint, disarm_sigint, NULL);
    sc_loop_turn(loop, timeout);
    int got = got_sigint;
    got_sigint = 0;
    return got;
}

/* core.step(timeout_ms) -> list of ops that became ready (done, or news to take).
 * timeout_ms: 0 polls, negative waits for the next event. Ctrl-C during the wait raises
 * sshchain.interrupted (what core.set_interrupted gave; else "interrupted!"), the ready ops
 * staying queued for the next step. */
static int core_step(lua_State *L)
{
    sc_loop *loop = lsc_loop(L);
    int timeout = (int)luaL_optinteger(L, 1, -1);
    if (turn_interruptible(loop, timeout)) {
        if (lua_getfield(L, LUA_REGISTRYINDEX, "sshchain.interrupted") == LUA_TNIL)
            return luaL_error(L, "interrupted!");
        return lua_error(L);
    }
    lua_newtable(L);
    lsc_push_opmap(L);
    int n = 0;
    sc_op *op;
    while ((op = sc_loop_pop_ready(loop)) != NULL) {
        if (lsc_find_op(L, -1, op))
            lua_rawseti(L, -3, ++n);
        sc_op_release(op);
    }
    lua_pop(L, 1);
    return 1;
}

/* core.stats() -> {sessions=, channels=, ops=}: live core objects, for leak checks. */
static int core_stats(lua_State *L)
{
    sc_loop *loop = lsc_loop(L);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, loop->live_sessions);
    lua_setfield(L, -2, "sessions");
    lua_pushinteger(L, loop->live_channels);
    lua_setfield(L, -2, "channels");
    lua_pushinteger(L, loop->n_live_ops);
    lua_setfield(L, -2, "ops");
    return 1;
}

static int core_now(lua_State *L)
{
    lua_pushnumber(L, sc_loop_now());
    return 1;
}

/* core.mux_probe(path) -> "ok" | "absent" | "dead", or nil and why it is refused (another
 * user's socket, or one open to others) */
static int core_mux_probe(lua_State *L)
{
    char why[512] = "";
    int rc = sc_mux_probe(luaL_checkstring(L, 1), why, sizeof why);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    lua_pushstring(L, rc == 0 ? "ok" : rc == 1 ? "absent" : "dead");
    lua_pushstring(L, why);
    return 2;
}

/* core.wall() -> seconds since the epoch, to the microsecond (time stamps in files) */
static int core_wall(lua_State *L)
{
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return luaL_error(L, "gettimeofday failed");
    lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
    return 1;
}

/* core.isatty(fd) -> whether fd (0, 1, 2) is a terminal (recipes: progress bars, colours) */
static int core_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* core.read_fd(fd, n) -> up to n bytes as soon as some are there (one read(2), so a pipe's data
 * goes on as it arrives), "" when a non-blocking fd has nothing yet, or nil at the end; nil, msg
 * on an error */
static int core_read_fd(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n > 0 && n <= 1 << 24, 2, "a byte count up to 16 MiB");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    ssize_t r;
    do
        r = read(fd, p, (size_t)n);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        lua_pushliteral(L, ""); /* nothing yet (a poll made the fd non-blocking) */
        return 1;
    }
    if (r < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    if (r == 0)
        return 0;
    luaL_pushresultsize(&b, (size_t)r);
    return 1;
}

/* core.term_width(fd) -> columns of the terminal on fd, or nil */
static int core_term_width(lua_State *L)
{
    struct winsize ws;
    if (ioctl((int)luaL_checkinteger(L, 1), TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0)
        return 0;
    lua_pushinteger(L, ws.ws_col);
    return 1;
}

/* core.pollfd() -> an fd that becomes readable when the loop has work (libuv's backend fd),
 * for a host event loop to watch */
static int core_pollfd(lua_State *L)
{
    lua_pushinteger(L, uv_backend_fd(&lsc_loop(L)->uv));
    return 1;
}

/* core.set_hosted(bool): a host loop polls core.pollfd() from now on (or no longer) */
static int core_set_hosted(lua_State *L)
{
    sc_loop_set_hosted(lsc_loop(L), lua_toboolean(L, 1));
    return 0;
}

/* core.timeout() -> milliseconds until the loop's next timer (0: work is due now), or nil when
 * nothing is timed */
static int core_timeout(lua_State *L)
{
    sc_loop *loop = lsc_loop(L);
    uv_update_time(&loop->uv);
    int t = uv_backend_timeout(&loop->uv);
    if (loop->ready_head || sc_loop_has_unpolled(loop))
        t = 0;
    if (t < 0)
        return 0;
    lua_pushinteger(L, t);
    return 1;
}

/* core.set_interrupted(v): the value a Ctrl-C raises (sshlua's hook reads it from the registry,
 * so scripts see the same object whichever interpreter runs them). */
static int core_set_interrupted(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "sshchain.interrupted");
    return 0;
}

/* core.local_info() -> {user=, uid=, home=, hostname=}: what ssh_config's tokens %u %i %d %l
 * stand for (the account from the password database, as ssh takes it, not $USER) */
static int core_local_info(lua_State *L)
{
    struct passwd *pw = getpwuid(getuid());
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    lua_createtable(L, 0, 4);
    lua_pushstring(L, pw ? pw->pw_name : "");
    lua_setfield(L, -2, "user");
    lua_pushinteger(L, (lua_Integer)getuid());
    lua_setfield(L, -2, "uid");
    lua_pushstring(L, pw ? pw->pw_dir : "");
    lua_setfield(L, -2, "home");
    lua_pushstring(L, host);
    lua_setfield(L, -2, "hostname");
    return 1;
}

/* libssh's own log (global in libssh: one per process), kept for the Lua side to hand to
 * sshchain.log's handler after each turn; bounded, the oldest lines dropped. */
enum { LIBSSH_LOG_MAX = 512 };
static char *libssh_lines[LIBSSH_LOG_MAX];
static int libssh_head, libssh_count;

static void on_libssh_log(int priority, const char *function, const char *buffer, void *ud)
{
    (void)priority;
    (void)function;
    (void)ud;
    int at = (libssh_head + libssh_count) % LIBSSH_LOG_MAX;
    if (libssh_count == LIBSSH_LOG_MAX) { /* full: the oldest goes */
        free(libssh_lines[libssh_head]);
        libssh_lines[libssh_head] = NULL;
        libssh_head = (libssh_head + 1) % LIBSSH_LOG_MAX;
        libssh_count--;
        at = (libssh_head + libssh_count) % LIBSSH_LOG_MAX;
    }
    libssh_lines[at] = strdup(buffer ? buffer : "");
    if (libssh_lines[at])
        libssh_count++;
}

/* core.libssh_log(level): libssh logs at level (0 off, 1 warnings, 2 protocol, 3 packets) */
static int core_libssh_log(lua_State *L)
{
    int level = (int)luaL_checkinteger(L, 1);
    ssh_set_log_callback(level > 0 ? on_libssh_log : NULL);
    ssh_set_log_level(level);
    return 0;
}

/* core.libssh_log_drain() -> {line, ...}: what libssh logged since the last call */
static int core_libssh_log_drain(lua_State *L)
{
    lua_createtable(L, libssh_count, 0);
    for (int i = 0; libssh_count > 0; i++) {
        char line[700];
        sc_sanitize(line, sizeof line, libssh_lines[libssh_head]);
        free(libssh_lines[libssh_head]);
        libssh_lines[libssh_head] = NULL;
        libssh_head = (libssh_head + 1) % LIBSSH_LOG_MAX;
        libssh_count--;
        lua_pushstring(L, line);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

extern char **environ;

/* core.environ() -> {NAME = value, ...}: the process's environment (for SendEnv patterns) */
static int core_environ(lua_State *L)
{
    lua_newtable(L);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

/* core.user_home(name) -> the home directory of that account, or nil (for "~user") */
static int core_user_home(lua_State *L)
{
    struct passwd *pw = getpwnam(luaL_checkstring(L, 1));
    if (!pw)
        return 0;
    lua_pushstring(L, pw->pw_dir);
    return 1;
}

/* core.numeric_host(s) -> the canonical text of s when it is a numeric address (127.1 ->
 * 127.0.0.1, 0x7f.1 -> 127.0.0.1, fe80:0::1 -> fe80::1), else nil: how ssh prints a HostName
 * that is an address */
static int core_numeric_host(lua_State *L)
{
    const char *s = luaL_checkstring(L, 1);
    char out[INET6_ADDRSTRLEN];
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_aton(s, &a4) && inet_ntop(AF_INET, &a4, out, sizeof out))
        lua_pushstring(L, out);
    else if (inet_pton(AF_INET6, s, &a6) == 1 && inet_ntop(AF_INET6, &a6, out, sizeof out))
        lua_pushstring(L, out);
    else
        return 0;
    return 1;
}

/* core.service_port(name) -> the TCP port of a service name (/etc/services), or nil */
static int core_service_port(lua_State *L)
{
    struct servent *se = getservbyname(luaL_checkstring(L, 1), "tcp");
    if (!se)
        return 0;
    lua_pushinteger(L, ntohs((uint16_t)se->s_port));
    return 1;
}

/* core.sha1_hex(s) -> the SHA-1 of s in lowercase hex (ssh_config's %C) */
static int core_sha1_hex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(s, n, md, &len, EVP_sha1(), NULL))
        return luaL_error(L, "sha1: digest failed");
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned int i = 0; i < len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    lua_pushlstring(L, hex, 2 * len);
    return 1;
}

static const luaL_Reg core_functions[] = {
    {"local_info", core_local_info},
    {"environ", core_environ},
    {"numeric_host", core_numeric_host},
    {"service_port", core_service_port},
    {"libssh_log", core_libssh_log},
    {"libssh_log_drain", core_libssh_log_drain},
    {"user_home", core_user_home},
    {"sha1_hex", core_sha1_hex},
    {"set_interrupted", core_set_interrupted},
    {"set_hosted", core_set_hosted},
    {"pollfd", core_pollfd},
    {"timeout", core_timeout},
    {"step", core_step},
    {"stats", core_stats},
    {"now", core_now},
    {"wall", core_wall},
    {"mux_probe", core_mux_probe},
    {"isatty", core_isatty},
    {"read_fd", core_read_fd},
    {"term_width", core_term_width},
    {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_sshchain_core(lua_State *L);
__attribute__((visibility("default"))) int luaopen_sshchain_core(lua_State *L)
{
    if (!lsc_have_loop(L)) {
        lsc_create_loop(L);
        lsc_open_op(L);
        lsc_open_connect(L);
        lsc_open_exec(L);
        lsc_open_forward(L);
        lsc_open_transfer(L);
        lsc_open_sleep(L);
        lsc_open_session(L);
    }
    luaL_newlib(L, core_functions);
    luaL_setfuncs(L, lsc_session_functions, 0);
    luaL_setfuncs(L, lsc_transfer_functions, 0);
    luaL_setfuncs(L, lsc_sleep_functions, 0);
    luaL_setfuncs(L, lsc_forward_functions, 0);
    return 1;
}
