/* sftp_source.c - the SFTP endpoint as a source: STAT the path, walk directories with
 * OPENDIR/READDIR (names checked like SCP records; symlinks to files followed, to directories
 * not), and read each file with SF_PIPE reads in flight, in offset order. */
#include "sftp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void entry_from(xf_entry *ent, const char *name, const sattrs *a)
{
    ent->type = sf_attrs_is_dir(a) ? XE_DIR : XE_FILE;
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
    CALL(sf, sf_req_path(sf, FXP_STAT, e->path, NULL));
    r = sf_expect(sf, FXP_ATTRS, "stat", e->path, 0);
    if (r != XF_OK)
        return r;
    r = sf_take_attrs(sf, &sf->top);
    sf_call_done(sf);
    if (r != XF_OK)
        return r;
    if (sf_attrs_is_dir(&sf->top) && !e->x->o.recursive)
        return xf_fail(e, SC_EIO, "remote %s: is a directory (set recursive)", e->path);
    if (!sf_attrs_is_dir(&sf->top) && !sf_attrs_is_reg(&sf->top))
        return xf_fail(e, SC_EIO, "remote %s: not a regular file", e->path);
    if (sf_attrs_is_reg(&sf->top) && !(sf->top.flags & ATTR_SIZE))
        return xf_fail(e, SC_EPROTO, "remote %s: the server gave no size", e->path);
    const char *b = xf_base_name(e->path);
    if (!xf_name_ok(b, strlen(b)))
        return xf_fail(e, SC_EIO, "remote %s: cannot be sent as a whole (no name)", e->path);
    sf->top_name = sc_strdup(b);
    if (!sf->top_name)
        return xf_fail(e, SC_EIO, "out of memory");
    if (sf_attrs_is_reg(&sf->top) && e->x->o.total_hint == 0)
        e->x->total += sf->top.size;
    return XF_OK;
}

/* Takes the entries of a NAME reply into the frame's batch, checking every name. */
static int take_names(xf_sftp *sf, sframe *f)
{
    sreq *q = sf_reply(sf);
    sftp_cursor c = {q->data, q->len, 0};
    uint32_t count;
    if (sftp_parse_name_count(&c, &count) < 0)
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
        const uint8_t *n;
        size_t nl;
        sattrs a;
        if (sftp_parse_name(&c, &n, &nl, &a) < 0)
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
                char *p = sf_join(f->path, s->name);
                if (!p)
                    return xf_fail(e, SC_EIO, "out of memory");
                if (sf->cur < 0)
                    sf->cur = sf_req_path(sf, FXP_STAT, p, NULL);
                free(p);
                if (sf->cur < 0)
                    return xf_fail(e, SC_EIO, "too many SFTP requests");
                r = sf_wait_reply(sf, sf->cur);
                if (r != XF_OK)
                    return r;
                sreq *q = sf_reply(sf);
                if (q->type == FXP_ATTRS) {
                    r = sf_take_attrs(sf, &s->a);
                    sf_call_done(sf);
                    if (r != XF_OK)
                        return r;
                } else {
                    sf_call_done(sf);
                    f->next_name++;
                    xf_soft(e, "remote %s/%s: dangling symlink, skipped", f->path, s->name);
                    continue;
                }
                if (sf_attrs_is_dir(&s->a)) {
                    /* as sftp get -r: without inode numbers a symlink loop cannot be seen */
                    f->next_name++;
                    xf_soft(e, "remote %s/%s: symlink to a directory, not followed", f->path,
                            s->name);
                    continue;
                }
            }
            f->next_name++;
            if (sf_attrs_is_reg(&s->a) && !(s->a.flags & ATTR_SIZE)) {
                xf_soft(e, "remote %s/%s: the server gave no size, skipped", f->path, s->name);
                continue;
            }
            if (!sf_attrs_is_dir(&s->a) && !sf_attrs_is_reg(&s->a)) {
                xf_soft(e, "remote %s/%s: not a regular file, skipped", f->path, s->name);
                continue;
            }
            if (sf_attrs_is_dir(&s->a) && sf->depth >= 256) {
                xf_soft(e, "remote %s/%s: too deep, skipped", f->path, s->name);
                continue;
            }
            entry_from(ent, s->name, &s->a);
            sf->size = ent->size;
            return XF_OK;
        }
        if (!f->eof) {
            CALL(sf, sf_req_handle(sf, FXP_READDIR, f->handle, f->hlen, NULL));
            sreq *q = sf_reply(sf);
            if (q->type == FXP_STATUS && q->status == FX_EOF) {
                f->eof = 1;
                sf_call_done(sf);
                continue;
            }
            r = sf_expect(sf, FXP_NAME, "readdir", f->path, 0);
            if (r != XF_OK)
                return r;
            r = take_names(sf, f);
            sf_call_done(sf);
            if (r != XF_OK)
                return r;
            continue;
        }
        CALL(sf, sf_req_handle(sf, FXP_CLOSE, f->handle, f->hlen, NULL));
        sf_call_done(sf);
        sf_close_frame(f);
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
    return sf_join(sf->stack[sf->depth - 1].path, name);
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
        CALL(sf, sf_req_path(sf, FXP_OPENDIR, sf->fpath, NULL));
        r = sf_expect(sf, FXP_HANDLE, "opendir", sf->fpath, 1);
        sframe f = {0};
        if (r == XF_OK) {
            r = sf_take_handle(sf, &f.handle, &f.hlen);
            sf_call_done(sf);
            if (r != XF_OK)
                return r;
        } else if (r == XF_SKIP) {
            f.eof = 1; /* unreadable: entered and left empty */
        } else {
            return r;
        }
        f.path = sf->fpath;
        sf->fpath = NULL;
        if (sf_push_frame(sf, f) < 0) {
            sf_close_frame(&f);
            return xf_fail(e, SC_EIO, "out of memory");
        }
        return XF_OK;
    }
    static const sattrs none;
    size_t at;
    if (sf->cur < 0) {
        sf->cur = sf_req_begin(sf, FXP_OPEN, &at);
        if (sf->cur < 0)
            return xf_fail(e, SC_EIO, "too many SFTP requests");
        sftp_put_str(&sf->out, sf->fpath, strlen(sf->fpath));
        sftp_put_u32(&sf->out, FXF_READ);
        sftp_put_attrs(&sf->out, &none);
        sf_req_end(sf, at);
    }
    r = sf_wait_reply(sf, sf->cur);
    if (r != XF_OK)
        return r;
    r = sf_expect(sf, FXP_HANDLE, "open", sf->fpath, 1);
    if (r == XF_SKIP) { /* this file cannot be read: the others still come */
        sf_drop_file(sf);
        return r;
    }
    if (r != XF_OK)
        return r;
    r = sf_take_handle(sf, &sf->handle, &sf->hlen);
    sf_call_done(sf);
    sf->next_off = sf->delivered = e->x->start_at; /* resume: the rest only */
    sf->ring_n = sf->ring_head = 0;
    sf->head_spent = 0;
    return r;
}

/* Drops every read in flight after a short one; the next reads start where data ended. */
static void resync_reads(xf_sftp *sf)
{
    while (sf->ring_n > 0) {
        int slot = sf_ring_at(sf, 0);
        if (sf->req[slot].state == RQ_DONE)
            sf_req_free(sf, slot);
        else
            sf->req[slot].state = RQ_DISCARD;
        sf_ring_pop(sf);
    }
    sf->head_spent = 0;
    sf->next_off = sf->delivered;
}

/* The next bytes of the file (up to len) where they are: in the DATA reply at the ring's head,
 * which stays there until the next call. */
static int src_data(xf_sftp *sf, const char **p, size_t len, size_t *got)
{
    xf_end *e = &sf->e;
    for (;;) {
        if (sf->head_spent) {
            int short_read = sf->head_short;
            sf_req_free(sf, sf_ring_at(sf, 0));
            sf_ring_pop(sf);
            sf->head_spent = 0;
            if (short_read)
                resync_reads(sf); /* the rest is asked for again from where the data ended */
        }
        /* keep the pipe full */
        while (sf->ring_n < sf->rpipe && sf->next_off < sf->size) {
            size_t at;
            int slot = sf_req_begin(sf, FXP_READ, &at);
            if (slot < 0)
                break;
            uint64_t n = sf->size - sf->next_off;
            if (n > sf->rchunk)
                n = sf->rchunk;
            sftp_put_str(&sf->out, sf->handle, sf->hlen);
            sftp_put_u64(&sf->out, sf->next_off);
            sftp_put_u32(&sf->out, (uint32_t)n);
            sf_req_end(sf, at);
            sf->req[slot].offset = sf->next_off;
            sf->req[slot].want = (uint32_t)n;
            sf->ring[(sf->ring_head + sf->ring_n) % SF_MAX_REQ] = slot;
            sf->ring_n++;
            sf->next_off += n;
        }
        if (sf->ring_n == 0) {
            if (sf->next_off < sf->size) { /* no request slot free: discarded reads still due */
                int r = sf_pump(sf);
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
        int slot = sf_ring_at(sf, 0);
        int r = sf_wait_reply(sf, slot);
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
        const uint8_t *d;
        size_t dl;
        if (sftp_parse_data(q->data, q->len, q->want, &d, &dl) < 0)
            return xf_fail(e, SC_EPROTO, "a bad SFTP data reply (%zu bytes for %u asked)", dl,
                           q->want);
        size_t n = dl - q->used;
        if (n > len)
            n = len;
        *p = (const char *)d + q->used;
        q->used += n;
        sf->delivered += n;
        *got = n;
        if (q->used == dl) {
            sf->head_spent = 1;
            sf->head_short = dl < q->want;
        }
        if (n > 0)
            return XF_OK;
    }
}

static int src_read(xf_end *e, char *buf, size_t len, size_t *got)
{
    const char *p;
    int r = src_data((xf_sftp *)e, &p, len, got);
    if (r == XF_OK)
        memcpy(buf, p, *got);
    return r;
}

static int src_peek(xf_end *e, const char **p, size_t len, size_t *got)
{
    return src_data((xf_sftp *)e, p, len, got);
}

static int src_data_end(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    resync_reads(sf);
    CALL(sf, sf_req_handle(sf, FXP_CLOSE, sf->handle, sf->hlen, NULL));
    sf_call_done(sf);
    sf_drop_file(sf);
    return XF_OK;
}

const xf_source_ops sftp_source = {
    .start = src_start,
    .next = src_next,
    .accept = src_accept,
    .read = src_read,
    .peek = src_peek,
    .data_end = src_data_end,
    .finish = sf_finish,
    .abort = sf_abort,
    .destroy = sf_destroy,
};
