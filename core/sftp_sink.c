/* sftp_sink.c - the SFTP endpoint as a sink: each file is written to a temporary name beside the
 * final one (SF_PIPE writes in flight) and renamed into place only when complete (OpenSSH's
 * posix-rename@openssh.com when offered), so a failed upload never leaves half a file under the
 * final name; directories are made as they come, their modes and times set when left. */
#include "sftp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sink_start(xf_end *e)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = sf_start(e);
    if (r != XF_OK || sf->sink_started)
        return r;
    CALL(sf, sf_req_path(sf, FXP_STAT, e->path, NULL));
    sattrs a;
    if ((r = sf_stat_done(sf, &a)) != XF_OK)
        return r;
    if (sf_attrs_is_dir(&a)) {
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
        return sf_join(sf->stack[sf->depth - 1].path, name);
    if (sf->top_as)
        return sc_strdup(sf->top_as);
    return sf_join(sf->root, name);
}

static int sink_begin(xf_end *e, const xf_entry *ent)
{
    xf_sftp *sf = (xf_sftp *)e;
    const xf_options *o = &e->x->o;
    int r;
    if (ent->type == XE_END_DIR) {
        if (sf->depth == 0)
            return xf_fail(e, SC_EPROTO, "end of a directory that was never entered");
        sframe *f = &sf->stack[sf->depth - 1];
        if (o->preserve) {
            CALL(sf, sf_req_path(sf, FXP_SETSTAT, f->path, &f->a));
            sf_call_done(sf);
        }
        sf_close_frame(f);
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
        if (sf->step == SF_IDLE) {
            CALL(sf, sf_req_path(sf, FXP_MKDIR, sf->fpath, &a));
            sreq *q = sf_reply(sf);
            int made = q->type == FXP_STATUS && q->status == FX_OK;
            sf_call_done(sf);
            sf->step = made ? SF_DIR_MADE : SF_DIR_CHECK;
        }
        if (sf->step == SF_DIR_CHECK) { /* it may exist already */
            CALL(sf, sf_req_path(sf, FXP_LSTAT, sf->fpath, NULL));
            sattrs ea;
            if ((r = sf_stat_done(sf, &ea)) != XF_OK)
                return r;
            if (!sf_attrs_is_dir(&ea)) {
                sf->step = SF_IDLE;
                r = xf_soft(e, "remote mkdir %s: %s", sf->fpath,
                            ea.flags ? "exists and is not a directory" : "failed");
                free(sf->fpath);
                sf->fpath = NULL;
                return r;
            }
        }
        sf->step = SF_IDLE;
        sframe f = {.path = sf->fpath};
        f.a.flags = ATTR_PERMISSIONS;
        f.a.perm = ent->mode & 0777;
        if (ent->has_times) {
            f.a.flags |= ATTR_ACMODTIME;
            f.a.atime = (uint32_t)ent->atime;
            f.a.mtime = (uint32_t)ent->mtime;
        }
        sf->fpath = NULL;
        if (sf_push_frame(sf, f) < 0) {
            sf_close_frame(&f);
            return xf_fail(e, SC_EIO, "out of memory");
        }
        return XF_OK;
    }
    /* a file: written to a temporary name beside the final one */
    if (!sf->tmp) {
        const char *b = xf_base_name(sf->fpath);
        size_t dn = (size_t)(b - sf->fpath);
        char name[XF_NAME_MAX + 1];
        xf_sink_name(e->x, name, sizeof name, b);
        size_t n = dn + strlen(name) + 1;
        sf->tmp = malloc(n);
        if (!sf->tmp)
            return xf_fail(e, SC_EIO, "out of memory");
        snprintf(sf->tmp, n, "%.*s%s", (int)dn, sf->fpath, name);
    }
    sf->cur_ent = *ent;
    size_t at;
    if (sf->cur < 0) {
        /* resume: the partial is made new (0600 until complete; the caller removed a stale
         * one), or, with a kept prefix the caller checked, appended to */
        int resume = o->resume;
        sattrs a = {.flags = ATTR_PERMISSIONS, .perm = resume ? 0600 : (ent->mode & 0777) | 0600};
        uint32_t flags = FXF_WRITE | FXF_CREAT | FXF_EXCL;
        if (resume && e->x->start_at)
            flags = FXF_WRITE;
        sf->cur = sf_req_begin(sf, FXP_OPEN, &at);
        if (sf->cur < 0)
            return xf_fail(e, SC_EIO, "too many SFTP requests");
        sftp_put_str(&sf->out, sf->tmp, strlen(sf->tmp));
        sftp_put_u32(&sf->out, flags);
        sftp_put_attrs(&sf->out, &a);
        sf_req_end(sf, at);
    }
    r = sf_wait_reply(sf, sf->cur);
    if (r != XF_OK)
        return r;
    r = sf_expect(sf, FXP_HANDLE, "open", sf->fpath, 1);
    if (r != XF_OK) {
        free(sf->tmp);
        sf->tmp = NULL;
        free(sf->fpath);
        sf->fpath = NULL;
        return r;
    }
    r = sf_take_handle(sf, &sf->handle, &sf->hlen);
    sf_call_done(sf);
    sf->next_off = e->x->start_at;
    sf->ring_n = sf->ring_head = 0;
    return r;
}

/* Frees the acknowledged writes at the front; XF_ERR if the server refused one. */
static int reap_writes(xf_sftp *sf)
{
    while (sf->ring_n > 0) {
        int slot = sf_ring_at(sf, 0);
        sreq *q = &sf->req[slot];
        if (q->state != RQ_DONE)
            break;
        int bad = q->type != FXP_STATUS || q->status != FX_OK;
        char msg[sizeof q->msg];
        snprintf(msg, sizeof msg, "%s", q->type == FXP_STATUS ? q->msg : "unexpected reply");
        sf_req_free(sf, slot);
        sf_ring_pop(sf);
        if (bad)
            return xf_fail(&sf->e, SC_EIO, "remote write %s: %s", sf->fpath, msg);
    }
    return XF_OK;
}

/* Takes the replies that came; the acknowledged writes go. */
static int pump_and_reap(xf_sftp *sf)
{
    int r = sf_pump(sf);
    return r == XF_ERR ? r : reap_writes(sf);
}

/* A WRITE request: its header is queued, its data goes from buf straight to the channel once
 * the header is out (one copy fewer a byte), over as many calls as the window needs. */
static int sink_write(xf_end *e, const char *buf, size_t len, size_t *took)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = pump_and_reap(sf);
    *took = 0;
    if (r != XF_OK)
        return r;
    if (sf->wr_left == 0) {
        if (sf->ring_n >= SF_PIPE)
            return XF_AGAIN;
        size_t n = len > sf->wchunk ? sf->wchunk : len;
        size_t at;
        int slot = sf_req_begin(sf, FXP_WRITE, &at);
        if (slot < 0)
            return XF_AGAIN;
        sftp_put_str(&sf->out, sf->handle, sf->hlen);
        sftp_put_u64(&sf->out, sf->next_off);
        sftp_put_u32(&sf->out, (uint32_t)n);
        sf_req_end_with(sf, at, n);
        sf->req[slot].offset = sf->next_off;
        sf->ring[(sf->ring_head + sf->ring_n) % SF_MAX_REQ] = slot;
        sf->ring_n++;
        sf->next_off += n;
        sf->wr_left = n;
    }
    r = sf_flush(sf);
    if (r != XF_OK)
        return r;
    size_t w = 0;
    r = xf_chan_write(e, &sf->c, buf, len < sf->wr_left ? len : sf->wr_left, &w);
    if (r != XF_OK)
        return r;
    sf->wr_left -= w;
    *took = w;
    return XF_OK;
}

/* Waits until every write of the current file is acknowledged; then *path is the temporary file
 * holding it, for a digest before it is renamed into place. */
static int sink_settle(xf_end *e, const char **path)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r = pump_and_reap(sf);
    if (r != XF_OK)
        return r;
    if (sf->ring_n > 0)
        return XF_AGAIN;
    *path = sf->tmp;
    return XF_OK;
}

static int sink_end_file(xf_end *e, int commit)
{
    xf_sftp *sf = (xf_sftp *)e;
    int r;
    if (sf->wr_left > 0) { /* the data ended inside a WRITE: the file was cut short */
        sf->wr_cut = 1;
        sf_write_pad(sf);
    }
    if (sf->step == SF_IDLE) { /* every write acknowledged */
        const char *path;
        if ((r = sink_settle(e, &path)) != XF_OK)
            return r;
        sf->step = commit && !sf->wr_cut ? SF_END_SETSTAT : SF_END_DISCARD;
        sf->wr_cut = 0;
    }
    if (sf->step == SF_END_SETSTAT) { /* modes (and times) */
        /* Without preserve, the mode the server gave at OPEN (its umask applied) stays, unless
         * the owner bits had to be added to write the file: then the source's bits come back,
         * as scp -t does. With preserve: the source's mode and times. A resumed partial was
         * 0600 until now: it gets the source's bits (the server's umask cannot be known). */
        int preserve = e->x->o.preserve;
        sattrs a = {.flags = ATTR_PERMISSIONS, .perm = sf->cur_ent.mode & 0777};
        if (preserve && sf->cur_ent.has_times) {
            a.flags |= ATTR_ACMODTIME;
            a.atime = (uint32_t)sf->cur_ent.atime;
            a.mtime = (uint32_t)sf->cur_ent.mtime;
        }
        if (preserve || (sf->cur_ent.mode & 0600) != 0600 || e->x->o.resume) {
            CALL(sf, sf_req_handle(sf, FXP_FSETSTAT, sf->handle, sf->hlen, &a));
            sf_call_done(sf);
        }
        sf->step = SF_END_CLOSE;
    }
    if (sf->step == SF_END_CLOSE || sf->step == SF_END_DISCARD) {
        CALL(sf, sf_req_handle(sf, FXP_CLOSE, sf->handle, sf->hlen, NULL));
        r = sf_expect(sf, FXP_STATUS, "close", sf->fpath, 0);
        if (r != XF_OK)
            return r;
        sf_call_done(sf);
        sf->step = sf->step == SF_END_CLOSE ? SF_END_RENAME : SF_END_REMOVE;
    }
    if (sf->step == SF_END_RENAME) { /* into place */
        if (!sf->posix_rename && !sf->old_removed) {
            /* plain SFTP v3 RENAME does not replace: remove the old file first (its absence is
             * fine). Not atomic: without posix-rename@openssh.com, a connection lost between the
             * two leaves the new file under its temporary name only. */
            CALL(sf, sf_req_path(sf, FXP_REMOVE, sf->fpath, NULL));
            sf_call_done(sf);
            sf->old_removed = 1;
        }
        if (sf->cur < 0) {
            size_t at;
            sf->cur = sf_req_begin(sf, sf->posix_rename ? FXP_EXTENDED : FXP_RENAME, &at);
            if (sf->cur < 0)
                return xf_fail(e, SC_EIO, "too many SFTP requests");
            if (sf->posix_rename)
                sftp_put_str(&sf->out, "posix-rename@openssh.com", 24);
            sftp_put_str(&sf->out, sf->tmp, strlen(sf->tmp));
            sftp_put_str(&sf->out, sf->fpath, strlen(sf->fpath));
            sf_req_end(sf, at);
        }
        r = sf_wait_reply(sf, sf->cur);
        if (r != XF_OK)
            return r;
        sf->old_removed = 0;
        r = sf_expect(sf, FXP_STATUS, "rename", sf->fpath, 0);
        if (r != XF_OK)
            return r;
        sf_call_done(sf);
        free(sf->tmp);
        sf->tmp = NULL;
        sf->step = SF_IDLE;
        sf_drop_file(sf);
        return XF_OK;
    }
    if (sf->step == SF_END_REMOVE) { /* not kept: remove the temporary file */
        CALL(sf, sf_req_path(sf, FXP_REMOVE, sf->tmp, NULL));
        sf_call_done(sf);
        sf->step = SF_IDLE;
        sf_drop_file(sf);
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

const xf_sink_ops sftp_sink = {
    .start = sink_start,
    .begin = sink_begin,
    .write = sink_write,
    .settle = sink_settle,
    .end_file = sink_end_file,
    .cut_discard = 1,
    .finish = sink_finish,
    .abort = sf_abort,
    .destroy = sf_destroy,
};
