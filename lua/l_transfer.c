/* l_transfer.c - transfers from Lua: core.transfer_start and the methods of transfer ops
 * (progress, the files moved with their digests, where the top entry landed). The policy
 * (paths, verification, progress callbacks) is in sshchain/transfer.lua. */
#include <string.h>

#include "lsc.h"

static sc_session *opt_session(lua_State *L, int t, const char *k)
{
    sc_session *s = NULL;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        lsc_session *box = luaL_testudata(L, -1, LSC_SESSION_MT);
        if (!box)
            luaL_error(L, "transfer: '%s' must be a session", k);
        if (!box->s || box->s->state == SS_CLOSED)
            luaL_error(L, "sshchain: session is closed");
        s = box->s;
    }
    lua_pop(L, 1);
    return s;
}

/* core.transfer_start{src=, src_path=, dst=, dst_path=, protocol=, recursive=, preserve=, hash=,
 * timeout=, total=, verb=} -> op. src/dst: sessions, or nil for this machine. */
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
    o.idle_timeout = lsc_opt_number(L, 1, "timeout", 0);
    o.progress_every = lsc_opt_number(L, 1, "progress_every", 0.25);
    double total = lsc_opt_number(L, 1, "total", 0);
    o.total_hint = total > 0 ? (uint64_t)total : 0;
    o.verb = lsc_opt_string(L, 1, "verb", NULL);
    sc_op *op = sc_xfer_start(&o);
    if (!op)
        return luaL_error(L, "out of memory");
    lsc_push_op(L, op);
    return 1;
}

static sc_op *check_transfer(lua_State *L)
{
    lsc_op *box = luaL_checkudata(L, 1, LSC_OP_MT);
    if (!box->op)
        luaL_error(L, "sshchain: this operation handle is closed");
    if (strcmp(box->op->kind, "transfer") != 0)
        luaL_error(L, "not a transfer");
    return box->op;
}

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

static const luaL_Reg transfer_methods[] = {
    {"progress", op_progress}, {"take_news", op_take_news}, {"files", op_files},
    {"dest_root", op_dest_root}, {NULL, NULL},
};

const luaL_Reg lsc_transfer_functions[] = {
    {"transfer_start", l_transfer_start},
    {NULL, NULL},
};

void lsc_open_transfer(lua_State *L)
{
    luaL_getmetatable(L, LSC_OP_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, transfer_methods, 0);
    lua_pop(L, 2);
}
