/* transfer.c - the transfer driver: moves entries from a source endpoint to a sink endpoint, one
 * record at a time, and the data of each file through one fixed buffer; hashes what passes,
 * reports progress, enforces the idle deadline. Runs on the service rounds of the sessions
 * involved (never blocks: an endpoint that must wait returns XF_AGAIN). */
#include "xfer.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XF_BUF SC_XFER_WINDOW /* the data channel's receive window too */
#define XF_QUANTUM (2 * 1024 * 1024) /* bytes moved per round before letting others run */

enum {
    XP_START, XP_NEXT, XP_BEGIN, XP_ACCEPT, XP_DATA, XP_DATA_END, XP_END_FILE, XP_FILE_DONE,
    XP_FINISH, XP_DONE,
};

typedef struct {
    char *path;
    uint64_t size;
    char sha256[65];
} xf_file;

struct sc_xfer {
    sc_op op;
    sc_xfer_opts o;
    char *src_path, *dst_path, *verb;
    xf_end *src, *dst;
    struct xf_user {
        sc_chanuser cu; /* first: the session's list holds &cu */
        sc_xfer *x;
    } users[2];        /* one per distinct session involved */
    int n_cu;
    char label[300];  /* the hop that names this transfer in messages */
    int phase;
    int started;      /* bit 0: source started, bit 1: sink started */
    int finished;     /* same bits for finish */
    xf_entry ent;
    int accepted, commit, file_ok;
    uint64_t remaining;
    char *buf;
    size_t buf_off, buf_len;
    char *rel;        /* relative path of the current entry */
    size_t rel_len, rel_cap;
    size_t *rel_marks; /* rel_len at each directory level */
    int depth, marks_cap;
    uint64_t done_bytes, total;
    long files_done;
    int news;
    double last_news, last_activity;
    uv_timer_t timer;
    EVP_MD_CTX *md;
    xf_file *files;
    size_t n_files, files_cap;
    sc_err err;       /* the hard error, once set */
    sc_err soft;      /* the first per-file failure */
    long n_soft;
    int running, rerun;
};

static void xfer_run(sc_xfer *x);
static void xfer_end(sc_xfer *x, const sc_err *err);

/* ---- helpers for endpoints ---- */

const sc_xfer_opts *xf_opts(sc_xfer *x) { return &x->o; }

void xf_add_total(sc_xfer *x, uint64_t bytes) { x->total += bytes; }

long xf_soft_count(sc_xfer *x) { return x->n_soft; }

const char *xf_soft_message(sc_xfer *x)
{
    /* the message carries the label and verb already: skip them, xf_fail adds its own */
    const char *m = x->soft.msg;
    const char *p = strstr(m, x->verb);
    if (p && p[strlen(x->verb)] == ':')
        return p + strlen(x->verb) + 2;
    return m;
}

void xf_activity(sc_xfer *x) { x->last_activity = sc_loop_now(); }

void xf_wake(sc_xfer *x)
{
    for (int i = 0; i < x->n_cu; i++)
        if (x->users[i].cu.attached)
            sc_session_kick(x->users[i].cu.session);
}

static const char *end_label(xf_end *e)
{
    if (e->session)
        return e->session->label;
    return e->x->label;
}

int xf_fail(xf_end *e, sc_code code, const char *fmt, ...)
{
    sc_xfer *x = e->x;
    if (x->err.code != SC_OK)
        return XF_ERR; /* the first error is the one reported */
    char detail[450];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    sc_err_set(&x->err, code, "%s: %s: %s", end_label(e), x->verb, detail);
    return XF_ERR;
}

int xf_soft(xf_end *e, const char *fmt, ...)
{
    sc_xfer *x = e->x;
    if (x->n_soft++ == 0) {
        char detail[450];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
        sc_err_set(&x->soft, SC_EIO, "%s: %s: %s", end_label(e), x->verb, detail);
    }
    return XF_SKIP;
}

int xf_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > XF_NAME_MAX || memchr(name, '\0', len) || memchr(name, '/', len))
        return 0;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return 0;
    return 1;
}

const char *xf_home_relative(const char *path)
{
    /* a remote shell and an SFTP server both start in the home directory: "~/x" is "x" there */
    if (strcmp(path, "~") == 0)
        return ".";
    if (strncmp(path, "~/", 2) != 0)
        return path;
    path += 2;
    while (*path == '/')
        path++;
    return *path ? path : ".";
}

char *xf_shell_path(const char *path)
{
    if (strchr(path, '\n') || strchr(path, '\r'))
        return NULL;
    const char *p = xf_home_relative(path);
    size_t n = 3;
    for (const char *q = p; *q; q++)
        n += *q == '\'' ? 4 : 1;
    char *out = malloc(n);
    if (!out)
        return NULL;
    char *o = out;
    *o++ = '\'';
    for (const char *q = p; *q; q++) {
        if (*q == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *q;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

/* ---- remote channels ---- */

enum { XC_NEW, XC_OPENING, XC_REQUEST, XC_OPEN, XC_CLOSED };

int xf_chan_open(xf_end *e, xf_chan *c, const char *what, int subsystem)
{
    sc_session *s = e->session;
    int rc;
    if (s->state != SS_READY)
        return xf_fail(e, SC_ECLOSED, "session is not connected");
    switch (c->phase) {
    case XC_NEW:
        c->ch = ssh_channel_new(s->ssh);
        if (!c->ch)
            return xf_fail(e, SC_EIO, "cannot create a channel");
        s->loop->live_channels++;
        sc_exit_watch(c->ch, &c->exit);
        c->phase = XC_OPENING;
        /* fallthrough */
    case XC_OPENING:
        rc = ssh_channel_open_session(c->ch);
        if (rc == SSH_AGAIN)
            return XF_AGAIN;
        if (rc != SSH_OK)
            return xf_fail(e, SC_ECHANNEL, "channel refused: %s", ssh_get_error(s->ssh));
        c->phase = XC_REQUEST;
        /* fallthrough */
    case XC_REQUEST:
        rc = subsystem ? ssh_channel_request_subsystem(c->ch, what)
                       : ssh_channel_request_exec(c->ch, what);
        if (rc == SSH_AGAIN)
            return XF_AGAIN;
        if (rc != SSH_OK)
            return xf_fail(e, SC_ECHANNEL, "%s %s refused: %s", subsystem ? "subsystem" : "command",
                           what, ssh_get_error(s->ssh));
        c->phase = XC_OPEN;
        xf_activity(e->x);
        return XF_OK;
    case XC_OPEN:
        return XF_OK;
    default:
        return xf_fail(e, SC_ECLOSED, "channel closed");
    }
}

static void chan_drain_stderr(xf_chan *c)
{
    /* all of it (only the tail is kept): unread stderr holds back libssh's EOF and close */
    char tmp[1024];
    for (;;) {
        int n = ssh_channel_read_nonblocking(c->ch, tmp, sizeof tmp, 1);
        if (n <= 0)
            return;
        size_t k = (size_t)n;
        if (k >= sizeof c->err_tail) {
            memcpy(c->err_tail, tmp + k - (sizeof c->err_tail - 1), sizeof c->err_tail - 1);
            c->err_len = sizeof c->err_tail - 1;
        } else {
            if (c->err_len + k >= sizeof c->err_tail) {
                size_t drop = c->err_len + k - (sizeof c->err_tail - 1);
                memmove(c->err_tail, c->err_tail + drop, c->err_len - drop);
                c->err_len -= drop;
            }
            memcpy(c->err_tail + c->err_len, tmp, k);
            c->err_len += k;
        }
        c->err_tail[c->err_len] = '\0';
    }
}

const char *xf_chan_stderr(xf_chan *c)
{
    static char clean[sizeof c->err_tail];
    /* trailing newlines off, the rest made printable */
    size_t n = c->err_len;
    while (n > 0 && (c->err_tail[n - 1] == '\n' || c->err_tail[n - 1] == '\r'))
        n--;
    char raw[sizeof c->err_tail];
    memcpy(raw, c->err_tail, n);
    raw[n] = '\0';
    sc_sanitize(clean, sizeof clean, raw);
    return clean;
}

int xf_chan_read(xf_end *e, xf_chan *c, char *buf, size_t len, size_t *got)
{
    *got = 0;
    if (c->phase != XC_OPEN)
        return xf_fail(e, SC_ECLOSED, "channel closed");
    chan_drain_stderr(c);
    if (len > 0x7fffffff)
        len = 0x7fffffff;
    int n = sc_channel_read(c->ch, buf, (uint32_t)len, 0);
    /* a read may queue a window adjust; this may be another session's round (a copy): have it
     * sent when that session's socket takes it */
    sc_session_wrote(e->session, 0);
    if (n > 0) {
        *got = (size_t)n;
        xf_activity(e->x);
        return XF_OK;
    }
    if (n == SSH_EOF) {
        chan_drain_stderr(c);
        return XF_DONE;
    }
    if (n < 0) {
        chan_drain_stderr(c);
        if (ssh_channel_is_closed(c->ch))
            return XF_DONE; /* closed without EOF: the caller says what was cut short */
        return xf_fail(e, SC_ECLOSED, "channel read: %s", ssh_get_error(e->session->ssh));
    }
    return XF_AGAIN;
}

int xf_chan_write(xf_end *e, xf_chan *c, const char *buf, size_t len, size_t *took)
{
    sc_session *s = e->session;
    *took = 0;
    if (c->phase != XC_OPEN || ssh_channel_is_closed(c->ch))
        return xf_fail(e, SC_ECLOSED, "channel closed by the remote side%s%s",
                       c->err_len ? ": " : "", xf_chan_stderr(c));
    size_t window = ssh_channel_window_size(c->ch);
    size_t budget = sc_session_write_budget(s);
    if (len > window)
        len = window;
    if (len > budget)
        len = budget;
    if (len > 65536)
        len = 65536;
    if (len == 0)
        return XF_AGAIN;
    int w = ssh_channel_write(c->ch, buf, (uint32_t)len);
    if (w < 0)
        return xf_fail(e, SC_ECLOSED, "channel write: %s", ssh_get_error(s->ssh));
    if (w == 0)
        return XF_AGAIN;
    sc_session_wrote(s, (size_t)w);
    *took = (size_t)w;
    xf_activity(e->x);
    return XF_OK;
}

int xf_chan_finish(xf_end *e, xf_chan *c)
{
    if (c->phase != XC_OPEN)
        return XF_OK;
    if (!c->eof_sent) {
        if (!ssh_channel_is_closed(c->ch))
            ssh_channel_send_eof(c->ch);
        c->eof_sent = 1;
        sc_session_wrote(e->session, 0);
    }
    /* read what is left (stdout is not expected any more) until the command has ended */
    char tmp[4096];
    for (int i = 0; i < 16; i++) {
        int n = ssh_channel_read_nonblocking(c->ch, tmp, sizeof tmp, 0);
        if (n <= 0)
            break;
    }
    chan_drain_stderr(c);
    if (c->exit.have || ssh_channel_is_closed(c->ch) ||
        (ssh_channel_is_eof(c->ch) && ssh_channel_get_exit_status(c->ch) >= 0)) {
        if (!c->exit.have && ssh_channel_get_exit_status(c->ch) >= 0) {
            c->exit.status = ssh_channel_get_exit_status(c->ch);
            c->exit.have = 1;
        }
        return XF_OK;
    }
    return XF_AGAIN;
}

void xf_chan_close(xf_end *e, xf_chan *c)
{
    if (c->ch) {
        /* libssh keeps a freed channel until the peer's close arrives, and may still call its
         * callbacks: they must not point into memory that goes with the endpoint */
        sc_exit_unwatch(c->ch, &c->exit);
        if (c->phase == XC_OPENING && e->session->state == SS_READY)
            sc_session_bury(e->session, c->ch, NULL, 0, NULL, 0);
        else if (e->session->ssh && ssh_channel_is_open(c->ch))
            ssh_channel_close(c->ch);
        if (c->phase != XC_OPENING || e->session->state != SS_READY)
            ssh_channel_free(c->ch);
        c->ch = NULL;
        e->session->loop->live_channels--;
        if (e->session->state == SS_READY)
            sc_session_kick(e->session);
    }
    c->phase = XC_CLOSED;
}

/* ---- the path of the current entry ---- */

static int rel_push(sc_xfer *x, const char *name)
{
    size_t n = strlen(name);
    if (x->depth + 1 >= x->marks_cap) {
        int cap = x->marks_cap ? x->marks_cap * 2 : 16;
        size_t *m = realloc(x->rel_marks, (size_t)cap * sizeof *m);
        if (!m)
            return -1;
        x->rel_marks = m;
        x->marks_cap = cap;
    }
    if (x->rel_len + n + 2 > x->rel_cap) {
        size_t cap = x->rel_cap ? x->rel_cap : 256;
        while (cap < x->rel_len + n + 2)
            cap *= 2;
        char *r = realloc(x->rel, cap);
        if (!r)
            return -1;
        x->rel = r;
        x->rel_cap = cap;
    }
    x->rel_marks[x->depth++] = x->rel_len;
    if (x->rel_len)
        x->rel[x->rel_len++] = '/';
    memcpy(x->rel + x->rel_len, name, n);
    x->rel_len += n;
    x->rel[x->rel_len] = '\0';
    return 0;
}

static void rel_pop(sc_xfer *x)
{
    if (x->depth == 0)
        return;
    x->rel_len = x->rel_marks[--x->depth];
    x->rel[x->rel_len] = '\0';
}

/* ---- hashing and the file list ---- */

static void hash_begin(sc_xfer *x)
{
    if (x->md)
        EVP_DigestInit_ex(x->md, EVP_sha256(), NULL);
}

static int record_file(sc_xfer *x)
{
    if (!x->md)
        return 0;
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(x->md, d, &dlen);
    if (x->n_files == x->files_cap) {
        size_t cap = x->files_cap ? x->files_cap * 2 : 16;
        xf_file *f = realloc(x->files, cap * sizeof *f);
        if (!f)
            return -1;
        x->files = f;
        x->files_cap = cap;
    }
    xf_file *f = &x->files[x->n_files];
    f->path = sc_strdup(x->rel ? x->rel : "");
    if (!f->path)
        return -1;
    f->size = x->ent.size;
    for (unsigned i = 0; i < dlen && i < 32; i++)
        snprintf(f->sha256 + 2 * i, 3, "%02x", d[i]);
    x->n_files++;
    return 0;
}

/* ---- the driver ---- */

static void maybe_news(sc_xfer *x)
{
    double now = sc_loop_now();
    if (now - x->last_news >= x->o.progress_every) {
        x->last_news = now;
        x->news = 1;
        sc_op_notify(&x->op);
    }
}

/* One step of both ends in turn; returns XF_OK when both are done. */
static int both(sc_xfer *x, int *flags, int (*step)(xf_end *))
{
    if (!(*flags & 1)) {
        int r = step(x->src);
        if (r != XF_OK)
            return r;
        *flags |= 1;
    }
    if (!(*flags & 2)) {
        int r = step(x->dst);
        if (r != XF_OK)
            return r;
        *flags |= 2;
    }
    return XF_OK;
}

static int step_start(xf_end *e) { return e->ops->start(e); }
static int step_finish(xf_end *e) { return e->ops->finish(e); }

/* Moves the current file's data; XF_OK when all of it has passed. */
static int move_data(sc_xfer *x, size_t *moved)
{
    while (*moved < XF_QUANTUM) {
        if (x->buf_off < x->buf_len) {
            size_t took = 0;
            int r = x->dst->ops->write(x->dst, x->buf + x->buf_off, x->buf_len - x->buf_off, &took);
            if (r != XF_OK)
                return r;
            x->buf_off += took;
            *moved += took;
            if (x->buf_off == x->buf_len)
                x->buf_off = x->buf_len = 0;
            continue;
        }
        if (x->remaining == 0)
            return XF_OK;
        size_t want = x->remaining < XF_BUF ? (size_t)x->remaining : XF_BUF;
        size_t got = 0;
        int r = x->src->ops->read(x->src, x->buf, want, &got);
        if (r != XF_OK)
            return r;
        if (got > want)
            got = want;
        if (x->md)
            EVP_DigestUpdate(x->md, x->buf, got);
        x->buf_off = 0;
        x->buf_len = got;
        x->remaining -= got;
        x->done_bytes += got;
        maybe_news(x);
    }
    xf_wake(x);
    return XF_AGAIN;
}

static void xfer_steps(sc_xfer *x)
{
    size_t moved = 0;
    int r;
    for (;;) {
        switch (x->phase) {
        case XP_START:
            r = both(x, &x->started, step_start);
            if (r != XF_OK)
                goto out;
            x->phase = XP_NEXT;
            break;
        case XP_NEXT:
            memset(&x->ent, 0, sizeof x->ent);
            r = x->src->ops->next(x->src, &x->ent);
            if (r == XF_DONE) {
                x->phase = XP_FINISH;
                break;
            }
            if (r != XF_OK)
                goto out;
            if (x->ent.type == XE_FILE || x->ent.type == XE_DIR) {
                if (rel_push(x, x->ent.name) < 0) {
                    r = xf_fail(x->src, SC_EIO, "out of memory");
                    goto out;
                }
            }
            x->phase = XP_BEGIN;
            break;
        case XP_BEGIN:
            r = x->dst->ops->begin(x->dst, &x->ent);
            if (r == XF_SKIP)
                x->accepted = 0;
            else if (r == XF_OK)
                x->accepted = 1;
            else
                goto out;
            x->phase = XP_ACCEPT;
            break;
        case XP_ACCEPT:
            r = x->src->ops->accept(x->src, &x->ent, x->accepted);
            if (r == XF_SKIP && x->ent.type == XE_FILE && x->accepted) {
                /* the source cannot give this file after all (recorded): the sink drops it */
                x->commit = 0;
                x->phase = XP_END_FILE;
                break;
            }
            if (r != XF_OK)
                goto out;
            if (x->ent.type == XE_FILE && x->accepted) {
                x->remaining = x->ent.size;
                x->buf_off = x->buf_len = 0;
                hash_begin(x);
                x->phase = XP_DATA;
                break;
            }
            if (x->ent.type == XE_FILE || (x->ent.type == XE_DIR && !x->accepted) ||
                x->ent.type == XE_END_DIR)
                rel_pop(x);
            x->phase = XP_NEXT;
            break;
        case XP_DATA:
            r = move_data(x, &moved);
            if (r != XF_OK)
                goto out;
            x->phase = XP_DATA_END;
            break;
        case XP_DATA_END:
            r = x->src->ops->data_end(x->src);
            if (r != XF_OK && r != XF_SKIP)
                goto out;
            x->commit = r == XF_OK;
            x->phase = XP_END_FILE;
            break;
        case XP_END_FILE:
            r = x->dst->ops->end_file(x->dst, x->commit);
            if (r != XF_OK && r != XF_SKIP)
                goto out;
            x->file_ok = x->commit && r == XF_OK;
            if (x->file_ok) {
                x->files_done++;
                if (record_file(x) < 0) {
                    r = xf_fail(x->dst, SC_EIO, "out of memory");
                    goto out;
                }
            }
            x->phase = XP_FILE_DONE;
            break;
        case XP_FILE_DONE:
            r = x->src->ops->file_done(x->src, x->file_ok);
            if (r != XF_OK)
                goto out;
            rel_pop(x);
            x->phase = XP_NEXT;
            break;
        case XP_FINISH:
            r = both(x, &x->finished, step_finish);
            if (r != XF_OK)
                goto out;
            xfer_end(x, NULL);
            return;
        default:
            return;
        }
    }
out:
    if (r == XF_AGAIN)
        return; /* a session's service round (or a wake) brings us back */
    if (r != XF_ERR && x->err.code == SC_OK) /* a status this phase cannot take: never stall */
        sc_err_set(&x->err, SC_EIO, "%s: %s: internal: status %d in phase %d", x->label, x->verb, r,
                   x->phase);
    if (x->err.code == SC_OK)
        sc_err_set(&x->err, SC_EIO, "%s: %s: failed", x->label, x->verb);
    xfer_end(x, &x->err);
}

static void xfer_run(sc_xfer *x)
{
    if (x->phase == XP_DONE)
        return;
    if (x->running) {
        x->rerun = 1;
        return;
    }
    sc_op_ref(&x->op);
    x->running = 1;
    do {
        x->rerun = 0;
        xfer_steps(x);
    } while (x->rerun && x->phase != XP_DONE);
    x->running = 0;
    sc_op_release(&x->op);
}

static sc_xfer *xfer_of_cu(sc_chanuser *u) { return ((struct xf_user *)u)->x; }

static void xfer_service(sc_chanuser *u) { xfer_run(xfer_of_cu(u)); }

static void xfer_session_lost(sc_chanuser *u, const sc_err *why)
{
    sc_xfer *x = xfer_of_cu(u);
    if (x->phase == XP_DONE)
        return;
    sc_err err;
    sc_err_set(&err, why->code, "%s: %s: %s", x->label, x->verb, why->msg);
    xfer_end(x, &err);
}

static void timer_closed(uv_handle_t *h)
{
    sc_xfer *x = h->data;
    sc_op_release(&x->op);
}

static void on_idle_check(uv_timer_t *t)
{
    sc_xfer *x = t->data;
    if (x->phase == XP_DONE || x->o.idle_timeout <= 0)
        return;
    if (sc_loop_now() - x->last_activity >= x->o.idle_timeout) {
        sc_err err;
        sc_err_set(&err, SC_ETIMEDOUT, "%s: %s: no progress for %gs", x->label, x->verb,
                   x->o.idle_timeout);
        xfer_end(x, &err);
    }
}

/* Ends the transfer (err NULL: success, unless some files failed); releases the core's ref. */
static void xfer_end(sc_xfer *x, const sc_err *err)
{
    if (x->phase == XP_DONE)
        return;
    x->phase = XP_DONE;
    for (int i = 0; i < x->n_cu; i++)
        sc_session_detach(&x->users[i].cu);
    sc_err final = {SC_OK, ""};
    if (err) {
        final = *err;
        x->src->ops->abort(x->src);
        x->dst->ops->abort(x->dst);
    } else if (x->n_soft > 0) {
        if (x->n_soft == 1)
            final = x->soft;
        else
            sc_err_set(&final, SC_EIO, "%ld files failed; the first: %s", x->n_soft, x->soft.msg);
        err = &final;
    }
    for (int i = 0; i < x->n_cu; i++)
        sc_session_unref(x->users[i].cu.session);
    uv_timer_stop(&x->timer);
    uv_close((uv_handle_t *)&x->timer, timer_closed);
    sc_op_finish(&x->op, err ? &final : NULL);
    sc_op_release(&x->op); /* last: may free x */
}

static void xfer_cancel(sc_op *op)
{
    sc_xfer *x = (sc_xfer *)op;
    sc_err err;
    sc_err_set(&err, SC_ECANCELED, "%s: %s: canceled", x->label, x->verb);
    xfer_end(x, &err);
}

static int xfer_has_news(sc_op *op) { return ((sc_xfer *)op)->news; }

static void xfer_destroy(sc_op *op)
{
    sc_xfer *x = (sc_xfer *)op;
    if (x->src)
        x->src->ops->destroy(x->src);
    if (x->dst)
        x->dst->ops->destroy(x->dst);
    for (size_t i = 0; i < x->n_files; i++)
        free(x->files[i].path);
    free(x->files);
    if (x->md)
        EVP_MD_CTX_free(x->md);
    sc_big_free(x->buf, XF_BUF);
    free(x->rel);
    free(x->rel_marks);
    free(x->src_path);
    free(x->dst_path);
    free(x->verb);
    free(x);
}

static xf_end *end_new(sc_xfer *x, const sc_xfer_end *end, int is_src)
{
    if (!end->session)
        return xf_local_new(x, end->path, is_src);
    if (x->o.protocol == SC_PROTO_SFTP)
        return xf_sftp_new(x, end->session, end->path, is_src);
    return xf_scp_new(x, end->session, end->path, is_src);
}

sc_op *sc_xfer_start(const sc_xfer_opts *o)
{
    sc_session *any = o->src.session ? o->src.session : o->dst.session;
    if (!any)
        return NULL;
    sc_xfer *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    sc_op_init(&x->op, any->loop, "transfer");
    x->op.cancel = xfer_cancel;
    x->op.destroy = xfer_destroy;
    x->op.has_news = xfer_has_news;
    x->op.refs += 2; /* the core's while running, the timer's until its handle closes */
    x->o = *o;
    x->src_path = sc_strdup(o->src.path);
    x->dst_path = sc_strdup(o->dst.path);
    x->verb = sc_strdup(o->verb ? o->verb : "transfer");
    x->o.src.path = x->src_path;
    x->o.dst.path = x->dst_path;
    x->o.verb = x->verb;
    if (x->o.progress_every <= 0)
        x->o.progress_every = 0.25;
    x->total = o->total_hint;
    snprintf(x->label, sizeof x->label, "%s", any->label);
    x->buf = sc_big_alloc(XF_BUF);
    if (o->hash)
        x->md = EVP_MD_CTX_new();
    uv_timer_init(&any->loop->uv, &x->timer);
    x->timer.data = x;
    x->last_activity = x->last_news = sc_loop_now();
    sc_session *sess[2] = {o->src.session, o->dst.session};
    for (int i = 0; i < 2; i++) {
        if (!sess[i] || (x->n_cu == 1 && x->users[0].cu.session == sess[i]))
            continue;
        x->users[x->n_cu].x = x;
        sc_chanuser *u = &x->users[x->n_cu++].cu;
        u->service = xfer_service;
        u->session_lost = xfer_session_lost;
        u->session = sess[i];
        sc_session_ref(sess[i]);
    }
    if (x->src_path && x->dst_path && x->buf && (!o->hash || x->md)) {
        x->src = end_new(x, &x->o.src, 1);
        x->dst = end_new(x, &x->o.dst, 0);
    }
    if (!x->src || !x->dst) {
        sc_err err;
        sc_err_set(&err, SC_EIO, "%s: %s: out of memory", x->label, x->verb);
        if (!x->src && x->dst) {
            x->dst->ops->destroy(x->dst);
            x->dst = NULL;
        }
        if (!x->dst && x->src) {
            x->src->ops->destroy(x->src);
            x->src = NULL;
        }
        x->phase = XP_DONE;
        for (int i = 0; i < x->n_cu; i++)
            sc_session_unref(x->users[i].cu.session);
        uv_close((uv_handle_t *)&x->timer, timer_closed);
        sc_op_finish(&x->op, &err);
        sc_op_release(&x->op);
        return &x->op;
    }
    for (int i = 0; i < x->n_cu; i++) {
        if (x->users[i].cu.session->state != SS_READY) {
            sc_err err;
            sc_err_set(&err, SC_ECLOSED, "%s: %s: session is not connected",
                       x->users[i].cu.session->label, x->verb);
            xfer_end(x, &err);
            return &x->op;
        }
    }
    for (int i = 0; i < x->n_cu; i++)
        sc_session_attach(x->users[i].cu.session, &x->users[i].cu);
    if (x->o.idle_timeout > 0) {
        uint64_t ms = (uint64_t)(x->o.idle_timeout * 250.0);
        if (ms < 10)
            ms = 10;
        sc_timer_start(&x->timer, on_idle_check, ms, ms);
    }
    xf_wake(x);
    return &x->op;
}

void sc_xfer_progress(sc_op *op, uint64_t *done, uint64_t *total, const char **name, long *files)
{
    sc_xfer *x = (sc_xfer *)op;
    *done = x->done_bytes;
    *total = x->total;
    *name = x->rel ? x->rel : "";
    *files = x->files_done;
}

int sc_xfer_take_news(sc_op *op)
{
    sc_xfer *x = (sc_xfer *)op;
    int n = x->news;
    x->news = 0;
    return n;
}

int sc_xfer_file(sc_op *op, size_t i, const char **path, uint64_t *size, const char **sha256)
{
    sc_xfer *x = (sc_xfer *)op;
    if (i >= x->n_files)
        return 0;
    *path = x->files[i].path;
    *size = x->files[i].size;
    *sha256 = x->files[i].sha256;
    return 1;
}

const char *sc_xfer_dest_root(sc_op *op)
{
    sc_xfer *x = (sc_xfer *)op;
    return x->dst ? x->dst->dest_root : NULL;
}
