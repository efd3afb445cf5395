/* sftp.c - SFTP version 3 as a transfer endpoint, spoken directly over the "sftp" subsystem
 * channel in the event loop (libssh 0.10's own SFTP client blocks). This file: the session —
 * requests in flight and their replies — and what both directions share; sftp_source.c reads
 * from the server, sftp_sink.c writes to it; sftp_wire.c is the codec.
 *
 * Reads and writes are pipelined: up to SF_PIPE requests of SF_CHUNK bytes are in flight, so
 * throughput does not collapse with the latency of a long chain. */
#include "sftp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- requests and replies ---- */

int sf_req_begin(xf_sftp *sf, uint8_t type, size_t *len_at)
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
    sftp_put_u32(&sf->out, 0); /* length, patched by sf_req_end */
    /* relative to the unread start: appends may compact the buffer, never consume it */
    *len_at = sf->out.len - sf->out.off - 4;
    sftp_put_u8(&sf->out, type);
    sftp_put_u32(&sf->out, q->id);
    return slot;
}

void sf_req_end(xf_sftp *sf, size_t len_at) { sf_req_end_with(sf, len_at, 0); }

void sf_req_end_with(xf_sftp *sf, size_t len_at, size_t more)
{
    uint32_t n = (uint32_t)(sf->out.len - sf->out.off - len_at - 4 + more);
    uint8_t *p = (uint8_t *)sf->out.data + sf->out.off + len_at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

void sf_req_free(xf_sftp *sf, int slot)
{
    sreq *q = &sf->req[slot];
    free(q->data);
    memset(q, 0, sizeof *q);
}

int sf_req_path(xf_sftp *sf, uint8_t type, const char *path, const sattrs *a)
{
    size_t at;
    int slot = sf_req_begin(sf, type, &at);
    if (slot < 0)
        return -1;
    sftp_put_str(&sf->out, path, strlen(path));
    if (a)
        sftp_put_attrs(&sf->out, a);
    sf_req_end(sf, at);
    return slot;
}

int sf_req_handle(xf_sftp *sf, uint8_t type, const char *h, size_t hlen, const sattrs *a)
{
    size_t at;
    int slot = sf_req_begin(sf, type, &at);
    if (slot < 0)
        return -1;
    sftp_put_str(&sf->out, h, hlen);
    if (a)
        sftp_put_attrs(&sf->out, a);
    sf_req_end(sf, at);
    return slot;
}

int sf_flush(xf_sftp *sf)
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
    uint8_t type = p[0];
    if (type == FXP_VERSION) {
        uint32_t version = 0;
        int exts = 0;
        if (sftp_parse_version(p + 1, n - 1, &version, &exts) < 0 || version < 3)
            return xf_fail(&sf->e, SC_EPROTO, "SFTP server speaks version %u, not 3", version);
        sf->posix_rename = (exts & SFTP_EXT_POSIX_RENAME) != 0;
        sf->limits = (exts & SFTP_EXT_LIMITS) != 0;
        sf->ready = 1;
        return XF_OK;
    }
    sftp_cursor c = {p + 1, n - 1, 0};
    uint32_t id = sftp_get_u32(&c);
    if (c.bad)
        return xf_fail(&sf->e, SC_EPROTO, "a short SFTP reply");
    for (int i = 0; i < SF_MAX_REQ; i++) {
        sreq *q = &sf->req[i];
        if ((q->state != RQ_SENT && q->state != RQ_DISCARD) || q->id != id)
            continue;
        if (q->state == RQ_DISCARD) {
            sf_req_free(sf, i);
            return XF_OK;
        }
        q->type = type;
        if (type == FXP_STATUS) {
            if (sftp_parse_status(c.p, c.left, &q->status, q->msg, sizeof q->msg) < 0)
                return xf_fail(&sf->e, SC_EPROTO, "a short SFTP status reply");
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

int sf_pump(xf_sftp *sf)
{
    int r = sf_flush(sf);
    if (r == XF_ERR)
        return r;
    for (int rounds = 0; rounds < 64; rounds++) {
        /* replies are read straight into the input buffer; its room is the channel's window */
        char *room = sc_buf_reserve(&sf->in, SC_SFTP_WINDOW);
        if (!room)
            return xf_fail(&sf->e, SC_EIO, "out of memory");
        size_t got = 0;
        r = xf_chan_read(&sf->e, &sf->c, room, SC_SFTP_WINDOW, &got);
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
        for (;;) {
            const uint8_t *p = (const uint8_t *)sf->in.data + sf->in.off;
            uint32_t n = 0;
            int k = sftp_packet_length(p, sc_buf_avail(&sf->in), &n);
            if (k < 0)
                return xf_fail(&sf->e, SC_EPROTO, "an SFTP packet of %u bytes", n);
            if (k == 0 || sc_buf_avail(&sf->in) < 4 + (size_t)n)
                break;
            r = on_packet(sf, p + 4, n);
            sc_buf_consume(&sf->in, 4 + (size_t)n);
            if (r != XF_OK)
                return r;
        }
    }
    return XF_OK;
}

int sf_wait_reply(xf_sftp *sf, int slot)
{
    if (sf->req[slot].state == RQ_DONE)
        return XF_OK;
    int r = sf_pump(sf);
    if (r != XF_OK)
        return r;
    return sf->req[slot].state == RQ_DONE ? XF_OK : XF_AGAIN;
}

void sf_call_done(xf_sftp *sf)
{
    if (sf->cur >= 0)
        sf_req_free(sf, sf->cur);
    sf->cur = -1;
}

int sf_expect(xf_sftp *sf, uint8_t type, const char *what, const char *path, int soft)
{
    sreq *q = sf_reply(sf);
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
    sf_call_done(sf);
    return r;
}

int sf_take_handle(xf_sftp *sf, char **h, size_t *hlen)
{
    sreq *q = sf_reply(sf);
    const uint8_t *s;
    size_t n;
    if (sftp_parse_handle(q->data, q->len, &s, &n) < 0)
        return xf_fail(&sf->e, SC_EPROTO, "a bad SFTP handle");
    *h = malloc(n);
    if (!*h)
        return xf_fail(&sf->e, SC_EIO, "out of memory");
    memcpy(*h, s, n);
    *hlen = n;
    return XF_OK;
}

int sf_take_attrs(xf_sftp *sf, sattrs *a)
{
    sreq *q = sf_reply(sf);
    sftp_cursor c = {q->data, q->len, 0};
    sftp_get_attrs(&c, a);
    if (c.bad)
        return xf_fail(&sf->e, SC_EPROTO, "bad SFTP attributes");
    return XF_OK;
}

int sf_stat_done(xf_sftp *sf, sattrs *a)
{
    memset(a, 0, sizeof *a);
    int r = sf_reply(sf)->type == FXP_ATTRS ? sf_take_attrs(sf, a) : XF_OK;
    sf_call_done(sf);
    return r;
}

/* ---- shared by both directions ---- */

char *sf_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return p;
}

int sf_attrs_is_dir(const sattrs *a) { return (a->flags & ATTR_PERMISSIONS) && S_ISDIR(a->perm); }

int sf_attrs_is_reg(const sattrs *a) { return (a->flags & ATTR_PERMISSIONS) && S_ISREG(a->perm); }

int sf_push_frame(xf_sftp *sf, sframe f)
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

void sf_close_frame(sframe *f)
{
    for (int i = 0; i < f->n_names; i++)
        free(f->names[i].name);
    free(f->names);
    free(f->path);
    free(f->handle);
    memset(f, 0, sizeof *f);
}

void sf_drop_file(xf_sftp *sf)
{
    free(sf->fpath);
    free(sf->tmp);
    free(sf->handle);
    sf->fpath = sf->tmp = sf->handle = NULL;
    sf->ring_n = sf->ring_head = 0;
}

int sf_ring_at(xf_sftp *sf, int i) { return sf->ring[(sf->ring_head + i) % SF_MAX_REQ]; }

void sf_ring_pop(xf_sftp *sf)
{
    sf->ring_head = (sf->ring_head + 1) % SF_MAX_REQ;
    sf->ring_n--;
}

/* limits@openssh.com, once the server offers it: the largest READ and WRITE it takes (up to
 * SF_BIG_MAX). A failed or odd answer leaves SF_CHUNK. */
static int ask_limits(xf_sftp *sf)
{
    if (sf->limits_rq < 0) {
        size_t at;
        sf->limits_rq = sf_req_begin(sf, FXP_EXTENDED, &at);
        if (sf->limits_rq < 0)
            return xf_fail(&sf->e, SC_EIO, "too many SFTP requests");
        sftp_put_str(&sf->out, "limits@openssh.com", 18);
        sf_req_end(sf, at);
    }
    int r = sf_wait_reply(sf, sf->limits_rq);
    if (r != XF_OK)
        return r;
    sreq *q = &sf->req[sf->limits_rq];
    uint64_t max_read = 0, max_write = 0;
    if (q->type == FXP_EXTENDED_REPLY &&
        sftp_parse_limits(q->data, q->len, &max_read, &max_write) == 0) {
        if (max_write > SF_CHUNK)
            sf->wchunk = max_write < SF_BIG_MAX ? (size_t)max_write : SF_BIG_MAX;
        if (max_read > SF_CHUNK) {
            sf->rchunk = max_read < SF_BIG_MAX ? (size_t)max_read : SF_BIG_MAX;
            sf->rpipe = (int)((size_t)SF_PIPE * SF_CHUNK / sf->rchunk);
        }
    }
    sf_req_free(sf, sf->limits_rq);
    sf->limits_rq = -1;
    sf->limits = 0;
    return XF_OK;
}

int sf_start(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    if (strchr(e->path, '\n') || strchr(e->path, '\r'))
        return xf_fail(e, SC_EIO, "remote path holds a newline");
    if (!sf->ready) {
        int r = xf_chan_open(e, &sf->c, "sftp", 1);
        if (r != XF_OK)
            return r;
        if (!sf->init_sent) {
            sc_buf *b = &sf->out;
            sftp_put_u32(b, 5);
            sftp_put_u8(b, FXP_INIT);
            sftp_put_u32(b, 3);
            sf->init_sent = 1;
        }
        r = sf_pump(sf);
        if (r != XF_OK)
            return r;
        if (!sf->ready)
            return XF_AGAIN;
    }
    return sf->limits ? ask_limits(sf) : XF_OK;
}

int sf_finish(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = sf_flush(sf);
    if (r != XF_OK)
        return r;
    r = xf_chan_finish(e, &sf->c);
    if (r != XF_OK)
        return r;
    xf_chan_close(e, &sf->c);
    return XF_OK;
}

void sf_abort(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    if (e->sink && sf->tmp && !e->x->o.resume && xf_chan_is_open(&sf->c) &&
        e->session->state == SS_READY) {
        /* best effort: ask the server to remove the temporary file (a resumable transfer's
         * partial stays for the next run); the channel closes next */
        size_t at;
        sf_write_pad(sf);
        int slot = sf_req_begin(sf, FXP_REMOVE, &at);
        if (slot >= 0) {
            sftp_put_str(&sf->out, sf->tmp, strlen(sf->tmp));
            sf_req_end(sf, at);
            sf_flush(sf);
        }
    }
    xf_chan_close(e, &sf->c);
}

void sf_write_pad(xf_sftp *sf)
{
    static const char zeros[4096];
    while (sf->wr_left > 0) {
        size_t n = sf->wr_left < sizeof zeros ? sf->wr_left : sizeof zeros;
        if (sc_buf_append(&sf->out, zeros, n) < 0)
            return;
        sf->wr_left -= n;
    }
}

void sf_destroy(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    sf_abort(e);
    for (int i = 0; i < SF_MAX_REQ; i++)
        free(sf->req[i].data);
    while (sf->depth > 0)
        sf_close_frame(&sf->stack[--sf->depth]);
    free(sf->stack);
    sf_drop_file(sf);
    free(sf->top_name);
    free(sf->root);
    free(sf->top_as);
    sc_buf_free(&sf->out);
    sc_buf_free(&sf->in);
    free(e->path);
    free(e->dest_root);
    free(sf);
}

xf_end *xf_sftp_new(xf_ctx *x, sc_session *s, const char *path, int is_src)
{
    xf_sftp *sf = calloc(1, sizeof *sf);
    if (!sf)
        return NULL;
    if (is_src)
        sf->e.src = &sftp_source;
    else
        sf->e.sink = &sftp_sink;
    sf->e.x = x;
    sf->e.session = s;
    sf->cur = -1;
    sf->limits_rq = -1;
    sf->wchunk = sf->rchunk = SF_CHUNK;
    sf->rpipe = SF_PIPE;
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
