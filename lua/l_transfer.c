/* l_transfer.c - the transfer operation: core.transfer_start and its methods (progress, the
 * files moved with their digests, the remote digests a verify waits for, where the top entry
 * landed). The policy (paths, verification, progress callbacks) is in sshchain/transfer.lua. */
#include <string.h>

#include "lsc.h"

static sc_session *opt_session(lua_State *L, int t, const char *k)
{
    sc_session *s = NULL;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (!luaL_testudata(L, -1, LSC_SESSION_MT))
            luaL_error(L, "transfer: '%s' must be a session", k);
        s = lsc_check_session(L, lua_gettop(L));
    }
    lua_pop(L, 1);
    return s;
}

/* core.transfer_start{src=, src_path=, dst=, dst_path=, protocol=, recursive=, preserve=, hash=,
 * timeout=, total=, verb=, resume=, offset=} -> op. src/dst: sessions, or nil for this machine. */
static int l_transfer_start(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    sc_xfer_opts o = {0};
    o.src.session = opt_session(L, 1, "src");
    o.dst.session = opt_session(L, 1, "dst");
    if (!o.src.session && !o.dst.session)
        return luaL_error(L, "transfer: one end must be a session");
    o.src.path = lsc_opt_string(L, 1, "src_path", NULL);
    o.dst.path = lsc_opt_string(L, 1, "dst_path", NULL);
    if (!o.src.path || !o.dst.path)
        return luaL_error(L, "transfer: src_path and dst_path are required");
    const char *proto = lsc_opt_string(L, 1, "protocol", NULL);
    if (!proto || strcmp(proto, "scp") == 0)
        o.protocol = SC_PROTO_SCP;
    else if (strcmp(proto, "sftp") == 0)
        o.protocol = SC_PROTO_SFTP;
    else
        return luaL_error(L, "transfer: protocol must be \"scp\" or \"sftp\" (got \"%s\")", proto);
    o.recursive = lsc_opt_bool(L, 1, "recursive", 0);
    o.preserve = lsc_opt_bool(L, 1, "preserve", 0);
    o.hash = lsc_opt_bool(L, 1, "hash", 0);
    o.verify = lsc_opt_bool(L, 1, "verify", 0);
    o.idle_timeout = lsc_opt_number(L, 1, "timeout", 0, 0, 1e9);
    o.progress_every = lsc_opt_number(L, 1, "progress_every", 0.25, 0, 3600);
    o.total_hint = (uint64_t)lsc_opt_integer(L, 1, "total", 0, 0, (lua_Integer)1 << 62);
    o.verb = lsc_opt_string(L, 1, "verb", NULL);
    o.resume = lsc_opt_bool(L, 1, "resume", 0);
    o.offset = (uint64_t)lsc_opt_integer(L, 1, "offset", 0, 0, (lua_Integer)1 << 62);
    sc_op *op = sc_xfer_start(&o);
    if (!op)
        return luaL_error(L, "out of memory");
    lsc_push_op(L, op, LSC_TRANSFER_MT);
    return 1;
}

static sc_op *check_transfer(lua_State *L) { return lsc_check_op_kind(L, 1, LSC_TRANSFER_MT); }

/* op:progress() -> done bytes, total bytes (nil: unknown), current name, files done */
static int op_progress(lua_State *L)
{
    uint64_t done, total;
    const char *name;
    long files;
    sc_xfer_progress(check_transfer(L), &done, &total, &name, &files);
    lua_pushinteger(L, (lua_Integer)done);
    if (total > 0)
        lua_pushinteger(L, (lua_Integer)total);
    else
        lua_pushnil(L);
    lua_pushstring(L, name);
    lua_pushinteger(L, files);
    return 4;
}

/* op:take_news() -> whether progress moved since the last take */
static int op_take_news(lua_State *L)
{
    lua_pushboolean(L, sc_xfer_take_news(check_transfer(L)));
    return 1;
}

/* op:files() -> { {path=, size=, sha256=}, ... } (with hash on) */
static int op_files(lua_State *L)
{
    sc_op *op = check_transfer(L);
    lua_newtable(L);
    const char *path, *sha;
    uint64_t size;
    for (size_t i = 0; sc_xfer_file(op, i, &path, &size, &sha); i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, path);
        lua_setfield(L, -2, "path");
        lua_pushinteger(L, (lua_Integer)size);
        lua_setfield(L, -2, "size");
        lua_pushstring(L, sha);
        lua_setfield(L, -2, "sha256");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* op:dest_root() -> where the top entry landed (when the sink knows), or nil */
static int op_dest_root(lua_State *L)
{
    const char *r = sc_xfer_dest_root(check_transfer(L));
    if (!r)
        return 0;
    lua_pushstring(L, r);
    return 1;
}

/* op:verify_request(side) -> the path whose remote SHA-256 the transfer waits for (side 0: the
 * source, relative as in op:files(); 1: the sink's temporary file), once; or nothing */
static int op_verify_request(lua_State *L)
{
    sc_op *op = check_transfer(L);
    int side = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, side == 0 || side == 1, 2, "0 (source) or 1 (sink)");
    const char *path;
    if (!sc_xfer_verify_request(op, side, &path))
        return 0;
    lua_pushstring(L, path);
    return 1;
}

/* op:verify_answer(side, sha256 | nil, why) */
static int op_verify_answer(lua_State *L)
{
    sc_op *op = check_transfer(L);
    int side = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, side == 0 || side == 1, 2, "0 (source) or 1 (sink)");
    sc_xfer_verify_answer(op, side, luaL_optstring(L, 3, NULL), luaL_optstring(L, 4, NULL));
    return 0;
}

/* op:sink_verifies_first() -> whether nothing takes a final name before its verify */
static int op_sink_verifies_first(lua_State *L)
{
    lua_pushboolean(L, sc_xfer_sink_verifies_first(check_transfer(L)));
    return 1;
}

static const luaL_Reg transfer_methods[] = {
    {"progress", op_progress},
    {"take_news", op_take_news},
    {"files", op_files},
    {"dest_root", op_dest_root},
    {"verify_request", op_verify_request},
    {"verify_answer", op_verify_answer},
    {"sink_verifies_first", op_sink_verifies_first},
    {NULL, NULL},
};

/* core.partial_name(name) -> the name a resumable transfer writes name under, beside it */
static int l_partial_name(lua_State *L)
{
    char out[SC_NAME_MAX + 1];
    sc_xfer_partial_name(out, sizeof out, luaL_checkstring(L, 1));
    lua_pushstring(L, out);
    return 1;
}

/* core.sha256_file(path [, n]) -> hex SHA-256 of the file's first n bytes (all without n), or
 * nil, why. Reads in place (a local file; resume checks a kept prefix with it). */
static int l_sha256_file(lua_State *L)
{
    char hex[65], why[300];
    if (sc_sha256_file(luaL_checkstring(L, 1), luaL_optinteger(L, 2, -1), hex, why, sizeof why) !=
        0) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    lua_pushstring(L, hex);
    return 1;
}

const luaL_Reg lsc_transfer_functions[] = {
    {"transfer_start", l_transfer_start},
    {"partial_name", l_partial_name},
    {"sha256_file", l_sha256_file},
    {NULL, NULL},
};

void lsc_open_transfer(lua_State *L) { lsc_new_op_type(L, LSC_TRANSFER_MT, transfer_methods); }
