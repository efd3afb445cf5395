/* l_session.c - the session type: start one (directly or through a parent), its state and what
 * its connect learned, close it. Host specs arrive normalized by the Lua half (sshchain/spec.lua);
 * they are checked again here, since C would truncate at a NUL or wrap an out-of-range number. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsc.h"

static const char *const state_names[] = {
    [SS_RESOLVING] = "connecting", [SS_TCP] = "connecting",     [SS_HOP_OPEN] = "connecting",
    [SS_HANDSHAKE] = "connecting", [SS_HOSTKEY] = "connecting", [SS_AUTH] = "connecting",
    [SS_READY] = "ready",          [SS_FAILED] = "failed",      [SS_CLOSED] = "closed",
};

static lsc_session *to_session(lua_State *L, int i)
{
    return luaL_checkudata(L, i, LSC_SESSION_MT);
}

static char *dup_opt(lua_State *L, int t, const char *k)
{
    return sc_strdup(lsc_opt_string(L, t, k, NULL));
}

/* spec.identity: a list of paths (strings without NUL). Returns how many; raises otherwise. */
static int identity_count(lua_State *L, int t)
{
    int n = 0;
    int type = lua_getfield(L, t, "identity");
    if (type == LUA_TTABLE) {
        n = (int)luaL_len(L, -1);
        for (int i = 1; i <= n; i++) {
            size_t len;
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                luaL_error(L, "host spec field 'identity' must list paths (item %d is a %s)", i,
                           luaL_typename(L, -1));
            const char *p = lua_tolstring(L, -1, &len);
            if (memchr(p, '\0', len))
                luaL_error(L, "host spec field 'identity' item %d holds a NUL byte", i);
            lua_pop(L, 1);
        }
    } else if (type != LUA_TNIL) {
        luaL_error(L, "host spec field 'identity' must be a list of paths");
    }
    lua_pop(L, 1);
    return n;
}

/* Pushes spec[k] as a list of paths (a string is a list of one) onto files; raises otherwise.
 * files NULL: only checks (before anything is copied, so that a raise leaks nothing). */
static void add_paths(lua_State *L, int t, const char *k, char **files, int *n, int max)
{
    int type = lua_getfield(L, t, k);
    if (type == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    } else if (type != LUA_TTABLE && type != LUA_TNIL) {
        luaL_error(L, "host spec field '%s' must be a path or a list of paths", k);
    }
    int len = type == LUA_TNIL ? 0 : (int)luaL_len(L, -1);
    for (int i = 1; i <= len; i++) {
        size_t l;
        if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
            luaL_error(L, "host spec field '%s' must list paths (item %d is a %s)", k, i,
                       luaL_typename(L, -1));
        const char *p = lua_tolstring(L, -1, &l);
        if (memchr(p, '\0', l))
            luaL_error(L, "host spec field '%s' item %d holds a NUL byte", k, i);
        if (*n >= max)
            luaL_error(L, "host spec field '%s': at most %d files", k, max);
        if (files)
            files[*n] = sc_strdup(p);
        (*n)++;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* The known_hosts files to check: the user's (known_hosts), then the global ones
 * (global_known_hosts); where only one of the two is given, OpenSSH's defaults stand for the
 * other. Neither: the core's defaults. */
static void read_known_hosts(lua_State *L, int t, sc_hostspec *spec)
{
    enum { MAX = 32 };
    char *user[MAX], *global[MAX];
    int nu = 0, ng = 0;
    add_paths(L, t, "known_hosts", user, &nu, MAX);
    add_paths(L, t, "global_known_hosts", global, &ng, MAX);
    if (nu == 0 && ng == 0)
        return;
    if (nu > 0)
        spec->known_hosts = sc_strdup(user[0]);
    const char *home = getenv("HOME");
    char buf[512];
    if (nu == 0) {
        snprintf(buf, sizeof buf, "%s/.ssh/known_hosts", home ? home : "");
        user[nu++] = sc_strdup(buf);
        snprintf(buf, sizeof buf, "%s/.ssh/known_hosts2", home ? home : "");
        user[nu++] = sc_strdup(buf);
    }
    if (ng == 0) {
        global[ng++] = sc_strdup("/etc/ssh/ssh_known_hosts");
        global[ng++] = sc_strdup("/etc/ssh/ssh_known_hosts2");
    }
    spec->known_hosts_files = calloc((size_t)(nu + ng), sizeof(char *));
    for (int i = 0; i < nu; i++) {
        if (spec->known_hosts_files)
            spec->known_hosts_files[spec->n_known_hosts_files++] = user[i];
        else
            free(user[i]);
    }
    for (int i = 0; i < ng; i++) {
        if (spec->known_hosts_files)
            spec->known_hosts_files[spec->n_known_hosts_files++] = global[i];
        else
            free(global[i]);
    }
}

/* Reads a normalized spec table (see sshchain/spec.lua) into spec; misuse raises. */
static void read_spec(lua_State *L, int t, sc_hostspec *spec)
{
    memset(spec, 0, sizeof *spec);
    const char *host = lsc_opt_string(L, t, "host", NULL);
    if (!host || !*host)
        luaL_error(L, "host spec needs a host");
    const char *mode = lsc_opt_string(L, t, "host_key", NULL);
    int hostkey_mode = SC_HOSTKEY_STRICT;
    if (mode && strcmp(mode, "accept-new") == 0)
        hostkey_mode = SC_HOSTKEY_ACCEPT_NEW;
    else if (mode && strcmp(mode, "off") == 0)
        hostkey_mode = SC_HOSTKEY_OFF;
    else if (mode && strcmp(mode, "strict") != 0)
        luaL_error(L, "host_key must be \"strict\", \"accept-new\" or \"off\" (got \"%s\")", mode);
    int n = identity_count(L, t);
    int port = (int)lsc_opt_integer(L, t, "port", 22, 1, 65535);
    double timeout = lsc_opt_number(L, t, "timeout", 30, 0.001, 1e7);
    double keepalive = lsc_opt_number(L, t, "keepalive", 0, 0, 1e6);
    int keepalive_count = (int)lsc_opt_integer(L, t, "keepalive_count", 3, 1, 1000);
    const char *strs[] = {"user", "password", "passphrase", "proxy_command", "mux_path",
                          "kex",  "hostkeys", "ciphers",    "macs",          "pubkeys"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        lsc_opt_string(L, t, strs[i], NULL); /* type and NUL checks before anything is copied */
    const char *lists[] = {"known_hosts", "global_known_hosts", "certificate"};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        int count = 0;
        add_paths(L, t, lists[i], NULL, &count, 32);
    }

    spec->host = sc_strdup(host);
    spec->port = port;
    spec->user = dup_opt(L, t, "user");
    spec->password = dup_opt(L, t, "password");
    spec->passphrase = dup_opt(L, t, "passphrase");
    spec->hostkey_mode = hostkey_mode;
    spec->timeout = timeout;
    spec->keepalive = keepalive;
    spec->keepalive_count = keepalive_count;
    spec->proxy_command = dup_opt(L, t, "proxy_command");
    spec->mux_path = dup_opt(L, t, "mux_path");
    spec->kex = dup_opt(L, t, "kex");
    spec->hostkeys = dup_opt(L, t, "hostkeys");
    spec->ciphers = dup_opt(L, t, "ciphers");
    spec->macs = dup_opt(L, t, "macs");
    spec->pubkeys = dup_opt(L, t, "pubkeys");
    int agent_type = lua_getfield(L, t, "agent");
    if (agent_type == LUA_TNIL) {
        spec->agent = -1;
    } else if (agent_type == LUA_TSTRING) { /* a socket path (spec.lua checked it) */
        spec->agent = 1;
        spec->agent_sock = sc_strdup(lua_tostring(L, -1));
    } else {
        spec->agent = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "identities_only");
    spec->identities_only = lua_toboolean(L, -1);
    lua_getfield(L, t, "forward_agent");
    spec->forward_agent = lua_toboolean(L, -1);
    lua_getfield(L, t, "hash_known_hosts");
    spec->hash_known_hosts = lua_toboolean(L, -1);
    lua_pop(L, 3);
    {
        enum { MAXC = 32 };
        char *certs[MAXC];
        int nc = 0;
        add_paths(L, t, "certificate", certs, &nc, MAXC);
        if (nc > 0 && (spec->certificates = calloc((size_t)nc, sizeof(char *))) != NULL) {
            memcpy(spec->certificates, certs, (size_t)nc * sizeof(char *));
            spec->n_certificates = nc;
        } else {
            for (int i = 0; i < nc; i++)
                free(certs[i]);
        }
    }
    read_known_hosts(L, t, spec);
    if (n > 0) {
        spec->identities = calloc((size_t)n, sizeof(char *));
        lua_getfield(L, t, "identity");
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *p = lua_tostring(L, -1);
            if (p && spec->identities)
                spec->identities[spec->n_identities++] = sc_strdup(p);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
}

/* core.session_start(spec [, parent]) -> session, connect op */
static int l_session_start(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    sc_session *parent = NULL;
    if (!lua_isnoneornil(L, 2))
        parent = lsc_check_session(L, 2);
    sc_hostspec spec;
    read_spec(L, 1, &spec);
    lsc_session *box = lua_newuserdatauv(L, sizeof *box, 1);
    box->s = NULL;
    luaL_setmetatable(L, LSC_SESSION_MT);
    sc_op *op = NULL;
    box->s = sc_session_start(lsc_loop(L), parent, &spec, &op);
    if (!box->s) {
        sc_hostspec_free(&spec);
        return luaL_error(L, "out of memory");
    }
    lsc_push_op(L, op, LSC_CONNECT_MT);
    return 2;
}

/* session:close(): closes the children first; harmless when already closed */
static int l_close(lua_State *L)
{
    lsc_session *box = to_session(L, 1);
    if (box->s)
        sc_session_close(box->s);
    return 0;
}

static int l_gc(lua_State *L)
{
    lsc_session *box = to_session(L, 1);
    if (box->s) {
        sc_session_unref(box->s);
        box->s = NULL;
    }
    return 0;
}

/* session:state() -> "connecting" | "ready" | "closed", or "failed", msg, CODE, err */
static int l_state(lua_State *L)
{
    lsc_session *box = to_session(L, 1);
    if (!box->s) {
        lua_pushliteral(L, "closed");
        return 1;
    }
    lua_pushstring(L, state_names[box->s->state]);
    if (box->s->state == SS_FAILED) {
        lsc_push_error(L, &box->s->fail);
        lua_remove(L, -4); /* the nil */
        return 4;
    }
    return 1;
}

/* session:stage() -> where the connect is ("handshake", ...), or "connection" once ready */
static int l_stage(lua_State *L)
{
    lsc_session *box = to_session(L, 1);
    lua_pushstring(L, box->s ? sc_session_stage_name(box->s->state) : "closed");
    return 1;
}

static int l_label(lua_State *L)
{
    lsc_session *box = to_session(L, 1);
    lua_pushstring(L, box->s ? box->s->label : "closed session");
    return 1;
}

static int l_hop(lua_State *L)
{
    lsc_session *box = to_session(L, 1);
    lua_pushinteger(L, box->s ? box->s->hop : 0);
    return 1;
}

static void set_ms(lua_State *L, const char *k, double from, double to)
{
    if (from > 0 && to >= from) {
        lua_pushnumber(L, (to - from) * 1000.0);
        lua_setfield(L, -2, k);
    }
}

/* session:info() -> {host_key=, host_key_note=, auth=, auth_tried=, banner=, kex=, cipher=, mac=,
 * connect_ms=, handshake_ms=, auth_ms=, total_ms=}: what the connect learned (fields absent when
 * not reached) */
static int l_info(lua_State *L)
{
    sc_session *s = to_session(L, 1)->s;
    lua_createtable(L, 0, 8);
    if (!s)
        return 1;
    if (s->hostkey_fp[0]) {
        lua_pushstring(L, s->hostkey_fp);
        lua_setfield(L, -2, "host_key");
    }
    if (s->hostkey_note) {
        lua_pushstring(L, s->hostkey_note == SC_HOSTKEY_NOTE_LEARNED ? "learned" : "unchecked");
        lua_setfield(L, -2, "host_key_note");
    }
    if (s->auth.method) {
        lua_pushstring(L, s->auth.method);
        lua_setfield(L, -2, "auth");
    }
    if (s->banner[0]) {
        lua_pushstring(L, s->banner);
        lua_setfield(L, -2, "banner");
    }
    if (s->ssh && s->state == SS_READY) { /* what the key exchange chose */
        const char *kex = ssh_get_kex_algo(s->ssh), *cipher = ssh_get_cipher_out(s->ssh),
                   *mac = ssh_get_hmac_out(s->ssh);
        if (kex) {
            lua_pushstring(L, kex);
            lua_setfield(L, -2, "kex");
        }
        if (cipher) {
            lua_pushstring(L, cipher);
            lua_setfield(L, -2, "cipher");
        }
        if (mac) {
            lua_pushstring(L, mac);
            lua_setfield(L, -2, "mac");
        }
    }
    if (s->auth.offered[0]) {
        lua_pushstring(L, s->auth.offered);
        lua_setfield(L, -2, "auth_offered");
    }
    if (s->auth.tried[0]) {
        lua_pushstring(L, s->auth.tried);
        lua_setfield(L, -2, "auth_tried");
    }
    set_ms(L, "connect_ms", s->t_start, s->t_connected);
    set_ms(L, "handshake_ms", s->t_connected, s->t_handshake);
    set_ms(L, "auth_ms", s->t_handshake, s->t_ready);
    set_ms(L, "total_ms", s->t_start, s->t_ready);
    return 1;
}

static int l_tostring(lua_State *L)
{
    lsc_session *box = to_session(L, 1);
    if (!box->s)
        lua_pushliteral(L, "sshchain.session (closed)");
    else
        lua_pushfstring(L, "sshchain.session %s (%s)", box->s->label, state_names[box->s->state]);
    return 1;
}

static const luaL_Reg session_methods[] = {
    {"close", l_close}, {"state", l_state}, {"stage", l_stage}, {"label", l_label},
    {"hop", l_hop},     {"info", l_info},   {NULL, NULL},
};

static int note_asked(const char *prompt, char *buf, size_t len, int echo, int verify, void *ud)
{
    (void)prompt;
    (void)buf;
    (void)len;
    (void)echo;
    (void)verify;
    *(int *)ud = 1;
    return -1;
}

/* core.key_needs_passphrase(path) -> whether the private key file is encrypted (libssh asks for
 * a passphrase to read it); false for a key that reads without one, or cannot be read at all */
static int l_key_needs_passphrase(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int asked = 0;
    ssh_key key = NULL;
    if (ssh_pki_import_privkey_file(path, NULL, note_asked, &asked, &key) == SSH_OK)
        ssh_key_free(key);
    lua_pushboolean(L, asked);
    return 1;
}

const luaL_Reg lsc_session_functions[] = {
    {"key_needs_passphrase", l_key_needs_passphrase},
    {"session_start", l_session_start},
    {NULL, NULL},
};

void lsc_open_session(lua_State *L)
{
    luaL_newmetatable(L, LSC_SESSION_MT);
    luaL_newlib(L, session_methods);
    luaL_setfuncs(L, lsc_exec_session_methods, 0);
    luaL_setfuncs(L, lsc_forward_session_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
