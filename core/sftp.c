/* sftp.c - SFTP version 3 as a transfer endpoint, spoken directly over the "sftp" subsystem
 * channel in the event loop (libssh 0.10's own SFTP client blocks).
 *
 * Reads and writes are pipelined: up to SF_PIPE requests of SF_CHUNK bytes are in flight, so
 * throughput does not collapse with the latency of a long chain. A sink writes each file to a
 * temporary name next to the final one and renames it into place only when complete (OpenSSH's
 * posix-rename@openssh.com when offered), so a failed upload never leaves half a file under the
 * final name. Names from a server's directory listings are checked like SCP records. */
#include "xfer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SF_CHUNK 65536
#define SF_PIPE 64
#define SF_MAX_REQ (SF_PIPE + 4)
#define SF_MAX_PACKET (256 * 1024 + 1024) /* OpenSSH's limit; larger replies are refused */

enum {
    FXP_INIT = 1, FXP_VERSION = 2, FXP_OPEN = 3, FXP_CLOSE = 4, FXP_READ = 5, FXP_WRITE = 6,
    FXP_LSTAT = 7, FXP_FSTAT = 8, FXP_SETSTAT = 9, FXP_FSETSTAT = 10, FXP_OPENDIR = 11,
    FXP_READDIR = 12, FXP_REMOVE = 13, FXP_MKDIR = 14, FXP_STAT = 17, FXP_RENAME = 18,
    FXP_STATUS = 101, FXP_HANDLE = 102, FXP_DATA = 103, FXP_NAME = 104, FXP_ATTRS = 105,
    FXP_EXTENDED = 200, FXP_EXTENDED_REPLY = 201,
};
enum { FX_OK = 0, FX_EOF = 1, FX_NO_SUCH_FILE = 2, FX_PERMISSION_DENIED = 3, FX_FAILURE = 4 };
enum { FXF_READ = 1, FXF_WRITE = 2, FXF_CREAT = 8, FXF_TRUNC = 0x10, FXF_EXCL = 0x20 };
enum { ATTR_SIZE = 1, ATTR_UIDGID = 2, ATTR_PERMISSIONS = 4, ATTR_ACMODTIME = 8,
       ATTR_EXTENDED = 0x80000000u };

enum { RQ_FREE = 0, RQ_SENT, RQ_DONE, RQ_DISCARD };

typedef struct {
    uint32_t id;
    int state;
    uint8_t type;    /* the reply's type */
    uint32_t status; /* FXP_STATUS code */
    char msg[160];
    uint8_t *data;   /* the reply after its id */
    size_t len;
    size_t used;     /* FXP_DATA: bytes already handed on */
    uint64_t offset; /* READ/WRITE: where */
    uint32_t want;   /* READ: bytes asked */
} sreq;

typedef struct {
    uint32_t flags;
    uint64_t size;
    uint32_t perm;
    uint32_t atime, mtime;
} sattrs;

typedef struct {
    char *name;
    sattrs a;
} sname;

typedef struct {
    char *path;
    char *handle;
    size_t hlen;
    sname *names; /* the last READDIR batch */
    int n_names, next_name;
    int eof;
    sattrs a;     /* sink: applied when the directory is left */
    int has_times;
} sframe;

typedef struct {
    xf_end e;
    xf_chan c;
    int ready;        /* INIT/VERSION done */
    int step;         /* where the current multi-call operation is */
    int cur;          /* the request the current single call waits for, -1 none */
    sc_buf out;
    sc_buf in;
    sreq req[SF_MAX_REQ];
    uint32_t next_id;
    int posix_rename;
    /* the current file */
    char *fpath;      /* its path */
    char *tmp;        /* sink: its temporary path */
    char *handle;
    size_t hlen;
    uint64_t size, next_off, delivered;
    int ring[SF_MAX_REQ]; /* in-flight READ/WRITE requests, in offset order */
    int ring_head, ring_n;
    xf_entry cur_ent;
    /* walking (source) / making (sink) directories */
    sframe *stack;
    int depth, cap;
    int top_seen;
    char *top_name;   /* source: the name of the top entry */
    sattrs top;
    char *root;       /* sink: the directory the top entry goes into, or NULL */
    char *top_as;     /* sink: the top entry's own path when the target is that entry */
    int sink_started;
    int old_removed;  /* sink: the rename step removed the file it replaces */
} xf_sftp;

/* ---- encoding ---- */

static void put_u8(sc_buf *b, uint8_t v) { sc_buf_append(b, &v, 1); }

static void put_u32(sc_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    sc_buf_append(b, p, 4);
}

static void put_u64(sc_buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)(v >> 32));
    put_u32(b, (uint32_t)v);
}

static void put_str(sc_buf *b, const void *s, size_t n)
{
    put_u32(b, (uint32_t)n);
    sc_buf_append(b, s, n);
}

static void put_attrs(sc_buf *b, const sattrs *a)
{
    put_u32(b, a->flags);
    if (a->flags & ATTR_SIZE)
        put_u64(b, a->size);
    if (a->flags & ATTR_PERMISSIONS)
        put_u32(b, a->perm);
    if (a->flags & ATTR_ACMODTIME) {
        put_u32(b, a->atime);
        put_u32(b, a->mtime);
    }
}

typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
} cursor;

static uint32_t get_u32(cursor *c)
{
    if (c->left < 4) {
        c->bad = 1;
        return 0;
    }
    uint32_t v = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 | c->p[3];
    c->p += 4;
    c->left -= 4;
    return v;
}

static uint64_t get_u64(cursor *c)
{
    uint64_t hi = get_u32(c);
    return hi << 32 | get_u32(c);
}

static const uint8_t *get_str(cursor *c, size_t *n)
{
    uint32_t len = get_u32(c);
    if (c->bad || len > c->left) {
        c->bad = 1;
        *n = 0;
        return (const uint8_t *)"";
    }
    const uint8_t *s = c->p;
    c->p += len;
    c->left -= len;
    *n = len;
    return s;
}

static void get_attrs(cursor *c, sattrs *a)
{
    memset(a, 0, sizeof *a);
    a->flags = get_u32(c);
    if (a->flags & ATTR_SIZE)
        a->size = get_u64(c);
    if (a->flags & ATTR_UIDGID) {
        get_u32(c);
        get_u32(c);
    }
    if (a->flags & ATTR_PERMISSIONS)
        a->perm = get_u32(c);
    if (a->flags & ATTR_ACMODTIME) {
        a->atime = get_u32(c);
        a->mtime = get_u32(c);
    }
    if (a->flags & ATTR_EXTENDED) {
        uint32_t n = get_u32(c);
        for (uint32_t i = 0; i < n && !c->bad; i++) {
            size_t l;
            get_str(c, &l);
            get_str(c, &l);
        }
    }
}

/* ---- requests and replies ---- */

static const char *status_text(uint32_t code)
{
    switch (code) {
    case FX_EOF: return "end of file";
    case FX_NO_SUCH_FILE: return "No such file or directory";
    case FX_PERMISSION_DENIED: return "Permission denied";
    case FX_FAILURE: return "failure";
    case 5: return "bad message";
    case 8: return "operation unsupported";
    default: return "error";
    }
}

/* Begins a request of type; returns its slot (the id is written), or -1 if none is free. */
static int req_begin(xf_sftp *sf, uint8_t type, size_t *len_at)
{
    int slot = -1;
    for (int i = 0; i < SF_MAX_REQ; i++) {
        if (sf->req[i].state == RQ_FREE) {
            slot = i;
            break;
        }
    }
    if (slot < 0)
        return -1;
    sreq *q = &sf->req[slot];
    memset(q, 0, sizeof *q);
    q->id = sf->next_id++;
    q->state = RQ_SENT;
    put_u32(&sf->out, 0); /* length, patched by req_end */
    /* relative to the unread start: appends may compact the buffer, never consume it */
    *len_at = sf->out.len - sf->out.off - 4;
    put_u8(&sf->out, type);
    put_u32(&sf->out, q->id);
    return slot;
}

static void req_end(xf_sftp *sf, size_t len_at)
{
    uint32_t n = (uint32_t)(sf->out.len - sf->out.off - len_at - 4);
    uint8_t *p = (uint8_t *)sf->out.data + sf->out.off + len_at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

static void req_free(xf_sftp *sf, int slot)
{
    sreq *q = &sf->req[slot];
    free(q->data);
    memset(q, 0, sizeof *q);
}

/* A request with one path (STAT, LSTAT, OPENDIR, REMOVE, MKDIR with attrs, ...). */
static int req_path(xf_sftp *sf, uint8_t type, const char *path, const sattrs *a)
{
    size_t at;
    int slot = req_begin(sf, type, &at);
    if (slot < 0)
        return -1;
    put_str(&sf->out, path, strlen(path));
    if (a)
        put_attrs(&sf->out, a);
    req_end(sf, at);
    return slot;
}

static int req_handle(xf_sftp *sf, uint8_t type, const char *h, size_t hlen, const sattrs *a)
{
    size_t at;
    int slot = req_begin(sf, type, &at);
    if (slot < 0)
        return -1;
    put_str(&sf->out, h, hlen);
    if (a)
        put_attrs(&sf->out, a);
    req_end(sf, at);
    return slot;
}

static int flush_out(xf_sftp *sf)
{
    while (sc_buf_avail(&sf->out) > 0) {
        size_t took = 0;
        int r = xf_chan_write(&sf->e, &sf->c, sf->out.data + sf->out.off, sc_buf_avail(&sf->out),
                              &took);
        if (r != XF_OK)
            return r;
        sc_buf_consume(&sf->out, took);
    }
    return XF_OK;
}

/* Handles one complete reply packet (type + body). */
static int on_packet(xf_sftp *sf, const uint8_t *p, size_t n)
{
    cursor c = {p + 1, n - 1, 0};
    uint8_t type = p[0];
    if (type == FXP_VERSION) {
        uint32_t version = get_u32(&c);
        while (!c.bad && c.left > 0) {
            size_t nl, dl;
            const uint8_t *name = get_str(&c, &nl);
            get_str(&c, &dl);
            if (nl == 24 && memcmp(name, "posix-rename@openssh.com", 24) == 0)
                sf->posix_rename = 1;
        }
        if (c.bad || version < 3)
            return xf_fail(&sf->e, SC_EPROTO, "SFTP server speaks version %u, not 3", version);
        sf->ready = 1;
        return XF_OK;
    }
    uint32_t id = get_u32(&c);
    if (c.bad)
        return xf_fail(&sf->e, SC_EPROTO, "a short SFTP reply");
    for (int i = 0; i < SF_MAX_REQ; i++) {
        sreq *q = &sf->req[i];
        if ((q->state != RQ_SENT && q->state != RQ_DISCARD) || q->id != id)
            continue;
        if (q->state == RQ_DISCARD) {
            req_free(sf, i);
            return XF_OK;
        }
        q->type = type;
        if (type == FXP_STATUS) {
            q->status = get_u32(&c);
            if (c.bad)
                return xf_fail(&sf->e, SC_EPROTO, "a short SFTP status reply");
            size_t ml;
            const uint8_t *m = get_str(&c, &ml);
            char raw[sizeof q->msg];
            snprintf(raw, sizeof raw, "%.*s", (int)(ml < sizeof raw ? ml : sizeof raw - 1), m);
            sc_sanitize(q->msg, sizeof q->msg, raw);
            if (!q->msg[0])
                snprintf(q->msg, sizeof q->msg, "%s", status_text(q->status));
        } else {
            q->data = malloc(c.left ? c.left : 1);
            if (!q->data)
                return xf_fail(&sf->e, SC_EIO, "out of memory");
            memcpy(q->data, c.p, c.left);
            q->len = c.left;
        }
        q->state = RQ_DONE;
        return XF_OK;
    }
    return xf_fail(&sf->e, SC_EPROTO, "an SFTP reply to no request (id %u)", id);
}

/* Sends what is queued and takes every reply that has arrived. */
static int pump(xf_sftp *sf)
{
    int r = flush_out(sf);
    if (r == XF_ERR)
        return r;
    for (int rounds = 0; rounds < 64; rounds++) {
        /* replies are read straight into the input buffer; its room is the channel's window */
        char *room = sc_buf_reserve(&sf->in, SC_XFER_WINDOW);
        if (!room)
            return xf_fail(&sf->e, SC_EIO, "out of memory");
        size_t got = 0;
        r = xf_chan_read(&sf->e, &sf->c, room, SC_XFER_WINDOW, &got);
        if (r == XF_DONE) {
            const char *err = xf_chan_stderr(&sf->c);
            return xf_fail(&sf->e, SC_EIO, "the SFTP server closed the channel%s%s",
                           *err ? ": " : "", err);
        }
        if (r == XF_ERR)
            return r;
        if (r == XF_AGAIN)
            break;
        sc_buf_commit(&sf->in, got);
        while (sc_buf_avail(&sf->in) >= 5) {
            const uint8_t *p = (const uint8_t *)sf->in.data + sf->in.off;
            uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            if (n == 0 || n > SF_MAX_PACKET)
                return xf_fail(&sf->e, SC_EPROTO, "an SFTP packet of %u bytes", n);
            if (sc_buf_avail(&sf->in) < 4 + (size_t)n)
                break;
            r = on_packet(sf, p + 4, n);
            sc_buf_consume(&sf->in, 4 + (size_t)n);
            if (r != XF_OK)
                return r;
        }
    }
    return XF_OK;
}

/* Waits for the reply to the request in slot; XF_OK once it is there. */
static int wait_reply(xf_sftp *sf, int slot)
{
    if (sf->req[slot].state == RQ_DONE)
        return XF_OK;
    int r = pump(sf);
    if (r != XF_OK)
        return r;
    return sf->req[slot].state == RQ_DONE ? XF_OK : XF_AGAIN;
}

/* For a single call: sends the request made by `make` once, then waits for its reply. The
 * reply stays in sf->req[sf->cur] until call_done. */
#define CALL(sf, make)                                                                             \
    do {                                                                                           \
        if ((sf)->cur < 0) {                                                                       \
            (sf)->cur = (make);                                                                    \
            if ((sf)->cur < 0)                                                                     \
                return xf_fail(&(sf)->e, SC_EIO, "too many SFTP requests");                        \
        }                                                                                          \
        int call_r_ = wait_reply((sf), (sf)->cur);                                                 \
        if (call_r_ != XF_OK)                                                                      \
            return call_r_;                                                                        \
    } while (0)

static sreq *reply(xf_sftp *sf) { return &sf->req[sf->cur]; }

static void call_done(xf_sftp *sf)
{
    if (sf->cur >= 0)
        req_free(sf, sf->cur);
    sf->cur = -1;
}

/* The reply must be `type` (or a STATUS, reported as failure): XF_OK, or the error. */
static int expect(xf_sftp *sf, uint8_t type, const char *what, const char *path, int soft)
{
    sreq *q = reply(sf);
    if (q->type == type && (type != FXP_STATUS || q->status == FX_OK))
        return XF_OK;
    char msg[200];
    if (q->type == FXP_STATUS)
        snprintf(msg, sizeof msg, "%s", q->msg);
    else
        snprintf(msg, sizeof msg, "unexpected reply type %u", q->type);
    int r = soft && q->type == FXP_STATUS
                ? xf_soft(&sf->e, "remote %s %s: %s", what, path, msg)
                : xf_fail(&sf->e, q->type == FXP_STATUS ? SC_EIO : SC_EPROTO, "remote %s %s: %s",
                          what, path, msg);
    call_done(sf);
    return r;
}

static int take_handle(xf_sftp *sf, char **h, size_t *hlen)
{
    sreq *q = reply(sf);
    cursor c = {q->data, q->len, 0};
    size_t n;
    const uint8_t *s = get_str(&c, &n);
    if (c.bad || n == 0 || n > 256)
        return xf_fail(&sf->e, SC_EPROTO, "a bad SFTP handle");
    *h = malloc(n);
    if (!*h)
        return xf_fail(&sf->e, SC_EIO, "out of memory");
    memcpy(*h, s, n);
    *hlen = n;
    return XF_OK;
}

static int take_attrs(xf_sftp *sf, sattrs *a)
{
    sreq *q = reply(sf);
    cursor c = {q->data, q->len, 0};
    get_attrs(&c, a);
    if (c.bad)
        return xf_fail(&sf->e, SC_EPROTO, "bad SFTP attributes");
    return XF_OK;
}

/* path + "/" + name, in a new string */
static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return p;
}

static const char *base_of(const char *p)
{
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

/* ---- both: start and finish ---- */

static int sf_start(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    if (strchr(e->path, '\n') || strchr(e->path, '\r'))
        return xf_fail(e, SC_EIO, "remote path holds a newline");
    if (!sf->ready) {
        int r = xf_chan_open(e, &sf->c, "sftp", 1);
        if (r != XF_OK)
            return r;
        if (sf->step == 0) {
            sc_buf *b = &sf->out;
            put_u32(b, 5);
            put_u8(b, FXP_INIT);
            put_u32(b, 3);
            sf->step = 1;
        }
        r = pump(sf);
        if (r != XF_OK)
            return r;
        if (!sf->ready)
            return XF_AGAIN;
        sf->step = 0;
    }
    return XF_OK;
}

static void close_frame(sframe *f)
{
    for (int i = 0; i < f->n_names; i++)
        free(f->names[i].name);
    free(f->names);
    free(f->path);
    free(f->handle);
    memset(f, 0, sizeof *f);
}

static void drop_file(xf_sftp *sf)
{
    free(sf->fpath);
    free(sf->tmp);
    free(sf->handle);
    sf->fpath = sf->tmp = sf->handle = NULL;
    sf->ring_n = sf->ring_head = 0;
}

static int sf_finish(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = flush_out(sf);
    if (r != XF_OK)
        return r;
    r = xf_chan_finish(e, &sf->c);
    if (r != XF_OK)
        return r;
    xf_chan_close(e, &sf->c);
    return XF_OK;
}

/* ---- source ---- */

static int attrs_is_dir(const sattrs *a) { return (a->flags & ATTR_PERMISSIONS) && S_ISDIR(a->perm); }
static int attrs_is_reg(const sattrs *a) { return (a->flags & ATTR_PERMISSIONS) && S_ISREG(a->perm); }

static void entry_from(xf_entry *ent, const char *name, const sattrs *a)
{
    ent->type = attrs_is_dir(a) ? XE_DIR : XE_FILE;
    snprintf(ent->name, sizeof ent->name, "%s", name);
    ent->mode = a->perm & 0777;
    ent->size = ent->type == XE_FILE ? a->size : 0;
    ent->has_times = (a->flags & ATTR_ACMODTIME) != 0;
    ent->mtime = a->mtime;
    ent->atime = a->atime;
}

static int src_start(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = sf_start(e);
    if (r != XF_OK || sf->top_name)
        return r;
    CALL(sf, req_path(sf, FXP_STAT, e->path, NULL));
    r = expect(sf, FXP_ATTRS, "stat", e->path, 0);
    if (r != XF_OK)
        return r;
    r = take_attrs(sf, &sf->top);
    call_done(sf);
    if (r != XF_OK)
        return r;
    if (attrs_is_dir(&sf->top) && !xf_opts(e->x)->recursive)
        return xf_fail(e, SC_EIO, "remote %s: is a directory (set recursive)", e->path);
    if (!attrs_is_dir(&sf->top) && !attrs_is_reg(&sf->top))
        return xf_fail(e, SC_EIO, "remote %s: not a regular file", e->path);
    if (attrs_is_reg(&sf->top) && !(sf->top.flags & ATTR_SIZE))
        return xf_fail(e, SC_EPROTO, "remote %s: the server gave no size", e->path);
    const char *b = base_of(e->path);
    if (!xf_name_ok(b, strlen(b)))
        return xf_fail(e, SC_EIO, "remote %s: cannot be sent as a whole (no name)", e->path);
    sf->top_name = sc_strdup(b);
    if (!sf->top_name)
        return xf_fail(e, SC_EIO, "out of memory");
    if (attrs_is_reg(&sf->top) && xf_opts(e->x)->total_hint == 0)
        xf_add_total(e->x, sf->top.size);
    return XF_OK;
}

/* Takes the entries of a NAME reply into the frame's batch, checking every name. */
static int take_names(xf_sftp *sf, sframe *f)
{
    sreq *q = reply(sf);
    cursor c = {q->data, q->len, 0};
    uint32_t count = get_u32(&c);
    if (c.bad || count > 100000)
        return xf_fail(&sf->e, SC_EPROTO, "a bad SFTP directory listing");
    for (int i = 0; i < f->n_names; i++)
        free(f->names[i].name);
    free(f->names);
    f->names = calloc(count ? count : 1, sizeof *f->names);
    f->n_names = 0;
    f->next_name = 0;
    if (!f->names)
        return xf_fail(&sf->e, SC_EIO, "out of memory");
    for (uint32_t i = 0; i < count; i++) {
        size_t nl, ll;
        const uint8_t *n = get_str(&c, &nl);
        get_str(&c, &ll);
        sattrs a;
        get_attrs(&c, &a);
        if (c.bad)
            return xf_fail(&sf->e, SC_EPROTO, "a bad SFTP directory listing");
        if ((nl == 1 && n[0] == '.') || (nl == 2 && n[0] == '.' && n[1] == '.'))
            continue;
        if (!xf_name_ok((const char *)n, nl)) {
            char raw[XF_NAME_MAX + 1], shown[XF_NAME_MAX + 1];
            snprintf(raw, sizeof raw, "%.*s", (int)(nl > XF_NAME_MAX ? XF_NAME_MAX : nl), n);
            sc_sanitize(shown, sizeof shown, raw);
            return xf_fail(&sf->e, SC_EPROTO, "refusing the name \"%s\" listed by the server",
                           shown);
        }
        sname *s = &f->names[f->n_names];
        s->name = malloc(nl + 1);
        if (!s->name)
            return xf_fail(&sf->e, SC_EIO, "out of memory");
        memcpy(s->name, n, nl);
        s->name[nl] = '\0';
        s->a = a;
        f->n_names++;
    }
    return XF_OK;
}

static int src_next(xf_end *e, xf_entry *ent)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r;
    if (!sf->top_seen) {
        sf->top_seen = 1;
        entry_from(ent, sf->top_name, &sf->top);
        sf->size = ent->size;
        return XF_OK;
    }
    while (sf->depth > 0) {
        sframe *f = &sf->stack[sf->depth - 1];
        if (f->next_name < f->n_names) {
            sname *s = &f->names[f->next_name];
            if ((s->a.flags & ATTR_PERMISSIONS) && S_ISLNK(s->a.perm)) {
                /* follow a symlink, as scp does */
                char *p = join(f->path, s->name);
                if (!p)
                    return xf_fail(e, SC_EIO, "out of memory");
                if (sf->cur < 0)
                    sf->cur = req_path(sf, FXP_STAT, p, NULL);
                free(p);
                if (sf->cur < 0)
                    return xf_fail(e, SC_EIO, "too many SFTP requests");
                r = wait_reply(sf, sf->cur);
                if (r != XF_OK)
                    return r;
                sreq *q = reply(sf);
                if (q->type == FXP_ATTRS) {
                    r = take_attrs(sf, &s->a);
                    call_done(sf);
                    if (r != XF_OK)
                        return r;
                } else {
                    call_done(sf);
                    f->next_name++;
                    xf_soft(e, "remote %s/%s: dangling symlink, skipped", f->path, s->name);
                    continue;
                }
                if (attrs_is_dir(&s->a)) {
                    /* as sftp get -r: without inode numbers a symlink loop cannot be seen */
                    f->next_name++;
                    xf_soft(e, "remote %s/%s: symlink to a directory, not followed", f->path, s->name);
                    continue;
                }
            }
            f->next_name++;
            if (attrs_is_reg(&s->a) && !(s->a.flags & ATTR_SIZE)) {
                xf_soft(e, "remote %s/%s: the server gave no size, skipped", f->path, s->name);
                continue;
            }
            if (!attrs_is_dir(&s->a) && !attrs_is_reg(&s->a)) {
                xf_soft(e, "remote %s/%s: not a regular file, skipped", f->path, s->name);
                continue;
            }
            if (attrs_is_dir(&s->a) && sf->depth >= 256) {
                xf_soft(e, "remote %s/%s: too deep, skipped", f->path, s->name);
                continue;
            }
            entry_from(ent, s->name, &s->a);
            sf->size = ent->size;
            return XF_OK;
        }
        if (!f->eof) {
            CALL(sf, req_handle(sf, FXP_READDIR, f->handle, f->hlen, NULL));
            sreq *q = reply(sf);
            if (q->type == FXP_STATUS && q->status == FX_EOF) {
                f->eof = 1;
                call_done(sf);
                continue;
            }
            r = expect(sf, FXP_NAME, "readdir", f->path, 0);
            if (r != XF_OK)
                return r;
            r = take_names(sf, f);
            call_done(sf);
            if (r != XF_OK)
                return r;
            continue;
        }
        CALL(sf, req_handle(sf, FXP_CLOSE, f->handle, f->hlen, NULL));
        call_done(sf);
        close_frame(f);
        sf->depth--;
        ent->type = XE_END_DIR;
        return XF_OK;
    }
    return XF_DONE;
}

static char *entry_path(xf_sftp *sf, const char *name)
{
    if (sf->depth == 0)
        return sc_strdup(sf->e.path);
    return join(sf->stack[sf->depth - 1].path, name);
}

static int push_frame(xf_sftp *sf, sframe f)
{
    if (sf->depth == sf->cap) {
        int cap = sf->cap ? sf->cap * 2 : 8;
        sframe *s = realloc(sf->stack, (size_t)cap * sizeof *s);
        if (!s)
            return -1;
        sf->stack = s;
        sf->cap = cap;
    }
    sf->stack[sf->depth++] = f;
    return 0;
}

static int src_accept(xf_end *e, const xf_entry *ent, int ok)
{
    xf_sftp *sf = (xf_sftp *)e;
    if (!ok || ent->type == XE_END_DIR)
        return XF_OK;
    if (!sf->fpath) {
        sf->fpath = entry_path(sf, ent->name);
        if (!sf->fpath)
            return xf_fail(e, SC_EIO, "out of memory");
    }
    int r;
    if (ent->type == XE_DIR) {
        CALL(sf, req_path(sf, FXP_OPENDIR, sf->fpath, NULL));
        r = expect(sf, FXP_HANDLE, "opendir", sf->fpath, 1);
        sframe f = {0};
        if (r == XF_OK) {
            r = take_handle(sf, &f.handle, &f.hlen);
            call_done(sf);
            if (r != XF_OK)
                return r;
        } else if (r == XF_SKIP) {
            f.eof = 1; /* unreadable: entered and left empty */
        } else {
            return r;
        }
        f.path = sf->fpath;
        sf->fpath = NULL;
        if (push_frame(sf, f) < 0) {
            close_frame(&f);
            return xf_fail(e, SC_EIO, "out of memory");
        }
        return XF_OK;
    }
    static const sattrs none;
    size_t at;
    if (sf->cur < 0) {
        sf->cur = req_begin(sf, FXP_OPEN, &at);
        if (sf->cur < 0)
            return xf_fail(e, SC_EIO, "too many SFTP requests");
        put_str(&sf->out, sf->fpath, strlen(sf->fpath));
        put_u32(&sf->out, FXF_READ);
        put_attrs(&sf->out, &none);
        req_end(sf, at);
    }
    r = wait_reply(sf, sf->cur);
    if (r != XF_OK)
        return r;
    r = expect(sf, FXP_HANDLE, "open", sf->fpath, 1);
    if (r == XF_SKIP) { /* this file cannot be read: the others still come */
        drop_file(sf);
        return r;
    }
    if (r != XF_OK)
        return r;
    r = take_handle(sf, &sf->handle, &sf->hlen);
    call_done(sf);
    sf->next_off = sf->delivered = 0;
    sf->ring_n = sf->ring_head = 0;
    return r;
}

static int ring_at(xf_sftp *sf, int i) { return sf->ring[(sf->ring_head + i) % SF_MAX_REQ]; }

static void ring_pop(xf_sftp *sf)
{
    sf->ring_head = (sf->ring_head + 1) % SF_MAX_REQ;
    sf->ring_n--;
}

/* Drops every read in flight after a short one; the next reads start where data ended. */
static void resync_reads(xf_sftp *sf)
{
    while (sf->ring_n > 0) {
        int slot = ring_at(sf, 0);
        if (sf->req[slot].state == RQ_DONE)
            req_free(sf, slot);
        else
            sf->req[slot].state = RQ_DISCARD;
        ring_pop(sf);
    }
    sf->next_off = sf->delivered;
}

static int src_read(xf_end *e, char *buf, size_t len, size_t *got)
{
    xf_sftp *sf = (xf_sftp *)e;
    for (;;) {
        /* keep the pipe full */
        while (sf->ring_n < SF_PIPE && sf->next_off < sf->size) {
            size_t at;
            int slot = req_begin(sf, FXP_READ, &at);
            if (slot < 0)
                break;
            uint64_t n = sf->size - sf->next_off;
            if (n > SF_CHUNK)
                n = SF_CHUNK;
            put_str(&sf->out, sf->handle, sf->hlen);
            put_u64(&sf->out, sf->next_off);
            put_u32(&sf->out, (uint32_t)n);
            req_end(sf, at);
            sf->req[slot].offset = sf->next_off;
            sf->req[slot].want = (uint32_t)n;
            sf->ring[(sf->ring_head + sf->ring_n) % SF_MAX_REQ] = slot;
            sf->ring_n++;
            sf->next_off += n;
        }
        if (sf->ring_n == 0) {
            if (sf->next_off < sf->size) { /* no request slot free: discarded reads still due */
                int r = pump(sf);
                if (r != XF_OK)
                    return r;
                int any_free = 0;
                for (int i = 0; i < SF_MAX_REQ && !any_free; i++)
                    any_free = sf->req[i].state == RQ_FREE;
                if (!any_free)
                    return XF_AGAIN; /* their replies come on the session: a round brings us back */
                continue;
            }
            return xf_fail(e, SC_EIO, "remote %s: file shrank while being read", sf->fpath);
        }
        int slot = ring_at(sf, 0);
        int r = wait_reply(sf, slot);
        if (r != XF_OK)
            return r;
        sreq *q = &sf->req[slot];
        if (q->type == FXP_STATUS) {
            if (q->status == FX_EOF)
                return xf_fail(e, SC_EIO, "remote %s: file shrank while being read", sf->fpath);
            return xf_fail(e, SC_EIO, "remote read %s: %s", sf->fpath, q->msg);
        }
        if (q->type != FXP_DATA)
            return xf_fail(e, SC_EPROTO, "unexpected reply type %u to a read", q->type);
        cursor c = {q->data, q->len, 0};
        size_t dl;
        const uint8_t *d = get_str(&c, &dl);
        if (c.bad || dl > q->want || dl == 0)
            return xf_fail(e, SC_EPROTO, "a bad SFTP data reply (%zu bytes for %u asked)", dl, q->want);
        size_t n = dl - q->used;
        if (n > len)
            n = len;
        memcpy(buf, d + q->used, n);
        q->used += n;
        sf->delivered += n;
        *got = n;
        if (q->used == dl) {
            int short_read = dl < q->want;
            req_free(sf, slot);
            ring_pop(sf);
            if (short_read)
                resync_reads(sf); /* the rest is asked for again from where the data ended */
        }
        if (n > 0)
            return XF_OK;
    }
}

static int src_data_end(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    resync_reads(sf);
    CALL(sf, req_handle(sf, FXP_CLOSE, sf->handle, sf->hlen, NULL));
    call_done(sf);
    drop_file(sf);
    return XF_OK;
}

static int src_file_done(xf_end *e, int ok)
{
    (void)e;
    (void)ok;
    return XF_OK;
}

/* ---- sink ---- */

static int sink_start(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = sf_start(e);
    if (r != XF_OK || sf->sink_started)
        return r;
    CALL(sf, req_path(sf, FXP_STAT, e->path, NULL));
    sreq *q = reply(sf);
    sattrs a = {0};
    if (q->type == FXP_ATTRS && (r = take_attrs(sf, &a)) != XF_OK) {
        call_done(sf);
        return r;
    }
    call_done(sf);
    if (attrs_is_dir(&a)) {
        sf->root = sc_strdup(e->path);
    } else {
        sf->top_as = sc_strdup(e->path);
        e->dest_root = sc_strdup(e->path);
    }
    sf->sink_started = 1;
    return XF_OK;
}

/* The path an entry gets on the sink. */
static char *sink_path(xf_sftp *sf, const char *name)
{
    if (sf->depth > 0)
        return join(sf->stack[sf->depth - 1].path, name);
    if (sf->top_as)
        return sc_strdup(sf->top_as);
    return join(sf->root, name);
}

static int sink_begin(xf_end *e, const xf_entry *ent)
{
    xf_sftp *sf = (xf_sftp *)e;
    const sc_xfer_opts *o = xf_opts(e->x);
    int r;
    if (ent->type == XE_END_DIR) {
        if (sf->depth == 0)
            return xf_fail(e, SC_EPROTO, "end of a directory that was never entered");
        sframe *f = &sf->stack[sf->depth - 1];
        if (o->preserve) {
            CALL(sf, req_path(sf, FXP_SETSTAT, f->path, &f->a));
            call_done(sf);
        }
        close_frame(f);
        sf->depth--;
        return XF_OK;
    }
    if (!sf->fpath) { /* the first call for this entry (a retried call has its path) */
        if (sf->depth == 0) {
            if (sf->top_seen)
                return xf_fail(e, SC_EPROTO, "more than one top-level entry");
            sf->top_seen = 1;
        }
        if (!xf_name_ok(ent->name, strlen(ent->name)))
            return xf_fail(e, SC_EPROTO, "refusing the name \"%s\"", ent->name);
        sf->fpath = sink_path(sf, ent->name);
        if (!sf->fpath)
            return xf_fail(e, SC_EIO, "out of memory");
        if (sf->depth == 0 && !e->dest_root)
            e->dest_root = sc_strdup(sf->fpath);
    }
    if (ent->type == XE_DIR) {
        sattrs a = {.flags = ATTR_PERMISSIONS, .perm = (ent->mode & 0777) | 0700};
        if (sf->step == 0) {
            CALL(sf, req_path(sf, FXP_MKDIR, sf->fpath, &a));
            sreq *q = reply(sf);
            int made = q->type == FXP_STATUS && q->status == FX_OK;
            call_done(sf);
            sf->step = made ? 2 : 1;
        }
        if (sf->step == 1) { /* it may exist already */
            CALL(sf, req_path(sf, FXP_LSTAT, sf->fpath, NULL));
            sreq *q = reply(sf);
            sattrs ea = {0};
            if (q->type == FXP_ATTRS && (r = take_attrs(sf, &ea)) != XF_OK) {
                call_done(sf);
                return r;
            }
            call_done(sf);
            if (!attrs_is_dir(&ea)) {
                sf->step = 0;
                r = xf_soft(e, "remote mkdir %s: %s", sf->fpath,
                            ea.flags ? "exists and is not a directory" : "failed");
                free(sf->fpath);
                sf->fpath = NULL;
                return r;
            }
        }
        sf->step = 0;
        sframe f = {.path = sf->fpath};
        f.a.flags = ATTR_PERMISSIONS;
        f.a.perm = ent->mode & 0777;
        if (ent->has_times) {
            f.a.flags |= ATTR_ACMODTIME;
            f.a.atime = (uint32_t)ent->atime;
            f.a.mtime = (uint32_t)ent->mtime;
        }
        sf->fpath = NULL;
        if (push_frame(sf, f) < 0) {
            close_frame(&f);
            return xf_fail(e, SC_EIO, "out of memory");
        }
        return XF_OK;
    }
    /* a file: written to a temporary name beside the final one */
    if (!sf->tmp) {
        const char *b = base_of(sf->fpath);
        size_t dn = (size_t)(b - sf->fpath);
        size_t n = dn + strlen(b) + 40;
        sf->tmp = malloc(n);
        if (!sf->tmp)
            return xf_fail(e, SC_EIO, "out of memory");
        unsigned rnd = (unsigned)(sc_loop_now() * 1e6) * 2654435761u;
        snprintf(sf->tmp, n, "%.*s.%.200s.%06x.part", (int)dn, sf->fpath, b, rnd & 0xffffff);
    }
    sf->cur_ent = *ent;
    size_t at;
    if (sf->cur < 0) {
        sattrs a = {.flags = ATTR_PERMISSIONS, .perm = (ent->mode & 0777) | 0600};
        sf->cur = req_begin(sf, FXP_OPEN, &at);
        if (sf->cur < 0)
            return xf_fail(e, SC_EIO, "too many SFTP requests");
        put_str(&sf->out, sf->tmp, strlen(sf->tmp));
        put_u32(&sf->out, FXF_WRITE | FXF_CREAT | FXF_EXCL);
        put_attrs(&sf->out, &a);
        req_end(sf, at);
    }
    r = wait_reply(sf, sf->cur);
    if (r != XF_OK)
        return r;
    r = expect(sf, FXP_HANDLE, "open", sf->fpath, 1);
    if (r != XF_OK) {
        free(sf->tmp);
        sf->tmp = NULL;
        free(sf->fpath);
        sf->fpath = NULL;
        return r;
    }
    r = take_handle(sf, &sf->handle, &sf->hlen);
    call_done(sf);
    sf->next_off = 0;
    sf->ring_n = sf->ring_head = 0;
    return r;
}

/* Frees the acknowledged writes at the front; XF_ERR if the server refused one. */
static int reap_writes(xf_sftp *sf)
{
    while (sf->ring_n > 0) {
        int slot = ring_at(sf, 0);
        sreq *q = &sf->req[slot];
        if (q->state != RQ_DONE)
            break;
        int bad = q->type != FXP_STATUS || q->status != FX_OK;
        char msg[sizeof q->msg];
        snprintf(msg, sizeof msg, "%s", q->type == FXP_STATUS ? q->msg : "unexpected reply");
        req_free(sf, slot);
        ring_pop(sf);
        if (bad)
            return xf_fail(&sf->e, SC_EIO, "remote write %s: %s", sf->fpath, msg);
    }
    return XF_OK;
}

static int sink_write(xf_end *e, const char *buf, size_t len, size_t *took)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = pump(sf);
    if (r == XF_ERR)
        return r;
    if ((r = reap_writes(sf)) != XF_OK)
        return r;
    *took = 0;
    if (sf->ring_n >= SF_PIPE || sc_buf_avail(&sf->out) >= 4 * SF_CHUNK)
        return XF_AGAIN;
    size_t n = len > SF_CHUNK ? SF_CHUNK : len;
    size_t at;
    int slot = req_begin(sf, FXP_WRITE, &at);
    if (slot < 0)
        return XF_AGAIN;
    put_str(&sf->out, sf->handle, sf->hlen);
    put_u64(&sf->out, sf->next_off);
    put_str(&sf->out, buf, n);
    req_end(sf, at);
    sf->req[slot].offset = sf->next_off;
    sf->ring[(sf->ring_head + sf->ring_n) % SF_MAX_REQ] = slot;
    sf->ring_n++;
    sf->next_off += n;
    *took = n;
    r = flush_out(sf);
    return r == XF_ERR ? r : XF_OK;
}

static int sink_end_file(xf_end *e, int commit)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r;
    if (sf->step == 0) { /* every write acknowledged */
        r = pump(sf);
        if (r == XF_ERR)
            return r;
        if ((r = reap_writes(sf)) != XF_OK)
            return r;
        if (sf->ring_n > 0)
            return XF_AGAIN;
        sf->step = commit ? 1 : 4;
    }
    if (sf->step == 1) { /* modes (and times) */
        /* Without preserve, the mode the server gave at OPEN (its umask applied) stays, unless
         * the owner bits had to be added to write the file: then the source's bits come back,
         * as scp -t does. With preserve: the source's mode and times. */
        int preserve = xf_opts(e->x)->preserve;
        sattrs a = {.flags = ATTR_PERMISSIONS, .perm = sf->cur_ent.mode & 0777};
        if (preserve && sf->cur_ent.has_times) {
            a.flags |= ATTR_ACMODTIME;
            a.atime = (uint32_t)sf->cur_ent.atime;
            a.mtime = (uint32_t)sf->cur_ent.mtime;
        }
        if (preserve || (sf->cur_ent.mode & 0600) != 0600) {
            CALL(sf, req_handle(sf, FXP_FSETSTAT, sf->handle, sf->hlen, &a));
            call_done(sf);
        }
        sf->step = 2;
    }
    if (sf->step == 2 || sf->step == 4) { /* close */
        CALL(sf, req_handle(sf, FXP_CLOSE, sf->handle, sf->hlen, NULL));
        r = expect(sf, FXP_STATUS, "close", sf->fpath, 0);
        if (r != XF_OK)
            return r;
        call_done(sf);
        sf->step = sf->step == 2 ? 3 : 5;
    }
    if (sf->step == 3) { /* into place */
        if (!sf->posix_rename && !sf->old_removed) {
            /* plain SFTP v3 RENAME does not replace: remove the old file first (its absence is
             * fine). Not atomic: without posix-rename@openssh.com, a connection lost between the
             * two leaves the new file under its temporary name only. */
            CALL(sf, req_path(sf, FXP_REMOVE, sf->fpath, NULL));
            call_done(sf);
            sf->old_removed = 1;
        }
        if (sf->cur < 0) {
            size_t at;
            sf->cur = req_begin(sf, sf->posix_rename ? FXP_EXTENDED : FXP_RENAME, &at);
            if (sf->cur < 0)
                return xf_fail(e, SC_EIO, "too many SFTP requests");
            if (sf->posix_rename)
                put_str(&sf->out, "posix-rename@openssh.com", 24);
            put_str(&sf->out, sf->tmp, strlen(sf->tmp));
            put_str(&sf->out, sf->fpath, strlen(sf->fpath));
            req_end(sf, at);
        }
        r = wait_reply(sf, sf->cur);
        if (r != XF_OK)
            return r;
        sf->old_removed = 0;
        r = expect(sf, FXP_STATUS, "rename", sf->fpath, 0);
        if (r != XF_OK)
            return r;
        call_done(sf);
        free(sf->tmp);
        sf->tmp = NULL;
        sf->step = 0;
        drop_file(sf);
        return XF_OK;
    }
    if (sf->step == 5) { /* not kept: remove the temporary file */
        CALL(sf, req_path(sf, FXP_REMOVE, sf->tmp, NULL));
        call_done(sf);
        sf->step = 0;
        drop_file(sf);
    }
    return XF_OK;
}

static int sink_finish(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    if (sf->depth != 0)
        return xf_fail(e, SC_EPROTO, "the stream ended inside a directory");
    return sf_finish(e);
}

/* ---- both ---- */

static void sf_abort(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    if (!e->is_src && sf->tmp && sf->c.ch && sf->c.phase != 0 && e->session->state == SS_READY) {
        /* best effort: ask the server to remove the temporary file; the channel closes next */
        size_t at;
        int slot = req_begin(sf, FXP_REMOVE, &at);
        if (slot >= 0) {
            put_str(&sf->out, sf->tmp, strlen(sf->tmp));
            req_end(sf, at);
            flush_out(sf);
        }
    }
    if (sf->c.ch)
        xf_chan_close(e, &sf->c);
}

static void sf_destroy(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    sf_abort(e);
    for (int i = 0; i < SF_MAX_REQ; i++)
        free(sf->req[i].data);
    while (sf->depth > 0)
        close_frame(&sf->stack[--sf->depth]);
    free(sf->stack);
    drop_file(sf);
    free(sf->top_name);
    free(sf->root);
    free(sf->top_as);
    sc_buf_free(&sf->out);
    sc_buf_free(&sf->in);
    free(e->path);
    free(e->dest_root);
    free(sf);
}

static const xf_ops sftp_src_ops = {
    .start = src_start, .next = src_next, .accept = src_accept, .read = src_read,
    .data_end = src_data_end, .file_done = src_file_done, .finish = sf_finish,
    .abort = sf_abort, .destroy = sf_destroy,
};

static const xf_ops sftp_sink_ops = {
    .start = sink_start, .begin = sink_begin, .write = sink_write, .end_file = sink_end_file,
    .finish = sink_finish, .abort = sf_abort, .destroy = sf_destroy,
};

xf_end *xf_sftp_new(sc_xfer *x, sc_session *s, const char *path, int is_src)
{
    xf_sftp *sf = calloc(1, sizeof *sf);
    if (!sf)
        return NULL;
    sf->e.ops = is_src ? &sftp_src_ops : &sftp_sink_ops;
    sf->e.x = x;
    sf->e.session = s;
    sf->e.is_src = is_src;
    sf->cur = -1;
    sf->next_id = 1;
    sf->e.path = sc_strdup(xf_home_relative(path));
    if (sf->e.path) {
        size_t n = strlen(sf->e.path);
        while (n > 1 && sf->e.path[n - 1] == '/')
            sf->e.path[--n] = '\0';
    }
    if (!sf->e.path) {
        free(sf);
        return NULL;
    }
    return &sf->e;
}
