/* transfer.c - the transfer driver: moves entries from a source endpoint to a sink endpoint, one
 * record at a time, and the data of each file through one fixed buffer; hashes what passes,
 * reports progress, enforces the idle deadline. Runs on the service rounds of the sessions
 * involved (never blocks: an endpoint that must wait returns XF_AGAIN). */
#include "transfer.h"
#include "xfer.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XF_BUF     SC_XFER_WINDOW    /* the data channel's receive window too */
#define XF_QUANTUM (2 * 1024 * 1024) /* bytes moved per round before letting others run */
/* bytes a source read takes at most: what the sink then copies and encrypts is still in the
 * cache (against reads of the whole 2 MiB buffer: -2.5 % client CPU for an SCP upload), and
 * as much as an SFTP WRITE carries (SF_BIG_MAX) */
#define XF_READ (256 * 1024)

typedef enum {
    XP_START,
    XP_NEXT,
    XP_BEGIN,
    XP_ACCEPT,
    XP_DATA,
    XP_DATA_END,
    XP_VERIFY,
    XP_END_FILE,
    XP_FILE_DONE,
    XP_FINISH,
    XP_DISCARD, /* the source (or the verification) failed in a file: the sink throws it away */
    XP_DONE,
} xp_phase;

typedef struct {
    char *path;
    uint64_t size;
    char sha256[65];
} xf_file;

/* One remote digest the verify waits for. */
typedef enum { VQ_NONE, VQ_WANTED, VQ_ASKED, VQ_ANSWERED } vq_state;

typedef struct {
    vq_state state;
    char *path;
    char sha256[65];
    char why[200]; /* no digest: the reason */
} xf_vreq;

typedef struct sc_xfer {
    sc_op op;
    sc_xfer_opts o; /* as started (paths and verb are the copies below) */
    xf_ctx x;       /* what the endpoints see */
    char *src_path, *dst_path, *verb;
    xf_end *src, *dst;
    struct xf_user {
        sc_chanuser cu; /* first: the session's list holds &cu */
        struct sc_xfer *t;
    } users[2]; /* one per distinct session involved */
    int n_cu;
    xp_phase phase;
    int started;  /* bit 0: source started, bit 1: sink started */
    int finished; /* same bits for finish */
    xf_entry ent;
    int accepted, commit, file_ok;
    uint64_t remaining;
    int src_failed; /* the last XF_ERR of move_data was the source's */
    char *buf;
    const char *data; /* the bytes the sink takes next: buf, or where the source's peek put them */
    size_t buf_off, buf_len;
    char *rel; /* relative path of the current entry */
    size_t rel_len, rel_cap;
    size_t *rel_marks; /* rel_len at each directory level */
    int depth, marks_cap;
    uint64_t done_bytes;
    long files_done;
    int news;
    double last_news;
    uv_timer_t timer;
    EVP_MD_CTX *md;
    char digest[65];  /* the current file's, once its data is complete */
    int prefix_blind; /* resumed with no local end: the digest misses the kept prefix, so the
                         verify compares the two remote digests with each other */
    xf_vreq vreq[2];  /* the current file's remote digests: source, sink */
    xf_file *files;
    size_t n_files, files_cap;
    int running, rerun;
} sc_xfer;

static void xfer_run(sc_xfer *t);
static void xfer_end(sc_xfer *t, const sc_err *err);

static void wake_sessions(xf_ctx *x)
{
    sc_xfer *t = (sc_xfer *)((char *)x - offsetof(sc_xfer, x));
    for (int i = 0; i < t->n_cu; i++)
        if (t->users[i].cu.attached)
            sc_session_kick(t->users[i].cu.session);
}

/* A failure of the driver itself, named by the transfer's label. */
static int driver_fail(sc_xfer *t, sc_code code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int driver_fail(sc_xfer *t, sc_code code, const char *reason, const char *fmt, ...)
{
    if (t->x.err.code != SC_OK)
        return XF_ERR;
    sc_session *s = t->users[0].cu.session;
    va_list ap;
    va_start(ap, fmt);
    sc_err_vformat(&t->x.err, code, t->x.label, s ? s->hop : 0, t->verb, reason, fmt, ap);
    va_end(ap);
    return XF_ERR;
}

/* ---- the path of the current entry ---- */

static int rel_push(sc_xfer *t, const char *name)
{
    size_t n = strlen(name);
    if (t->depth + 1 >= t->marks_cap) {
        int cap = t->marks_cap ? t->marks_cap * 2 : 16;
        size_t *m = realloc(t->rel_marks, (size_t)cap * sizeof *m);
        if (!m)
            return -1;
        t->rel_marks = m;
        t->marks_cap = cap;
    }
    if (t->rel_len + n + 2 > t->rel_cap) {
        size_t cap = t->rel_cap ? t->rel_cap : 256;
        while (cap < t->rel_len + n + 2)
            cap *= 2;
        char *r = realloc(t->rel, cap);
        if (!r)
            return -1;
        t->rel = r;
        t->rel_cap = cap;
    }
    t->rel_marks[t->depth++] = t->rel_len;
    if (t->rel_len)
        t->rel[t->rel_len++] = '/';
    memcpy(t->rel + t->rel_len, name, n);
    t->rel_len += n;
    t->rel[t->rel_len] = '\0';
    return 0;
}

static void rel_pop(sc_xfer *t)
{
    if (t->depth == 0)
        return;
    t->rel_len = t->rel_marks[--t->depth];
    t->rel[t->rel_len] = '\0';
}

/* ---- hashing, verification and the file list ---- */

static void hash_begin(sc_xfer *t)
{
    if (t->md)
        EVP_DigestInit_ex(t->md, EVP_sha256(), NULL);
    t->digest[0] = '\0';
}

/* Ends md's digest as 64 hex digits into hex. */
static void digest_hex(EVP_MD_CTX *md, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(md, d, &dlen);
    for (unsigned i = 0; i < dlen && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static void hash_end(sc_xfer *t)
{
    if (!t->md || t->digest[0])
        return;
    digest_hex(t->md, t->digest);
}

static int record_file(sc_xfer *t)
{
    if (!t->md)
        return 0;
    hash_end(t);
    if (t->n_files == t->files_cap) {
        size_t cap = t->files_cap ? t->files_cap * 2 : 16;
        xf_file *f = realloc(t->files, cap * sizeof *f);
        if (!f)
            return -1;
        t->files = f;
        t->files_cap = cap;
    }
    xf_file *f = &t->files[t->n_files];
    f->path = sc_strdup(t->rel ? t->rel : "");
    if (!f->path)
        return -1;
    f->size = t->ent.size;
    memcpy(f->sha256, t->digest, sizeof f->sha256);
    t->n_files++;
    return 0;
}

static void vreq_clear(xf_vreq *q)
{
    free(q->path);
    memset(q, 0, sizeof *q);
}

/* Asks for the remote digests of the file just read (XF_OK when none can be had before the
 * commit), then compares them: XF_OK, XF_AGAIN while an answer is due, XF_ERR on a mismatch. */
static int verify_file(sc_xfer *t)
{
    if (!t->o.verify || !t->md)
        return XF_OK;
    hash_end(t);
    if (t->vreq[0].state == VQ_NONE && t->vreq[1].state == VQ_NONE) {
        const char *pending = NULL;
        if (t->dst->session && t->dst->sink->settle) {
            int r = t->dst->sink->settle(t->dst, &pending);
            if (r != XF_OK)
                return r;
        }
        if (t->src->session) {
            t->vreq[0].path = sc_strdup(t->rel ? t->rel : "");
            t->vreq[0].state = VQ_WANTED;
        }
        if (pending) {
            t->vreq[1].path = sc_strdup(pending);
            t->vreq[1].state = VQ_WANTED;
        }
        if ((t->vreq[0].state && !t->vreq[0].path) || (t->vreq[1].state && !t->vreq[1].path))
            return driver_fail(t, SC_EIO, NULL, "out of memory");
        if (t->vreq[0].state || t->vreq[1].state) {
            t->news = 1;
            sc_op_notify(&t->op);
        }
    }
    for (int side = 0; side < 2; side++) {
        xf_vreq *q = &t->vreq[side];
        if (q->state == VQ_WANTED || q->state == VQ_ASKED) {
            xf_activity(&t->x); /* the remote digest takes its time: not idle */
            return XF_AGAIN;
        }
    }
    if (t->prefix_blind) {
        xf_vreq *a = &t->vreq[0], *b = &t->vreq[1];
        if (a->state != VQ_ANSWERED || b->state != VQ_ANSWERED || !a->sha256[0] || !b->sha256[0])
            return driver_fail(t, SC_EIO, "verify", "verify: no SHA-256 of the resumed %s: %s",
                               t->rel ? t->rel : "",
                               a->state == VQ_ANSWERED && !a->sha256[0] ? a->why : b->why);
        if (strcmp(a->sha256, b->sha256) != 0)
            return driver_fail(t, SC_EIO, "verify",
                               "verify: SHA-256 of the resumed %s differs between the source and "
                               "the destination (nothing was kept)",
                               t->rel ? t->rel : "");
        memcpy(t->digest, a->sha256, sizeof t->digest);
    }
    for (int side = 0; side < 2 && !t->prefix_blind; side++) {
        xf_vreq *q = &t->vreq[side];
        if (q->state != VQ_ANSWERED)
            continue;
        const char *where = side == 0 ? "the source" : "the destination";
        if (!q->sha256[0])
            return driver_fail(t, SC_EIO, "verify", "verify: no SHA-256 of %s on %s: %s",
                               t->rel ? t->rel : "", where, q->why);
        if (strcmp(q->sha256, t->digest) != 0)
            return driver_fail(t, SC_EIO, "verify",
                               "verify: SHA-256 of %s differs on %s (nothing was kept)",
                               t->rel ? t->rel : "", where);
    }
    vreq_clear(&t->vreq[0]);
    vreq_clear(&t->vreq[1]);
    return XF_OK;
}

/* ---- the driver ---- */

static void feed_md(void *arg, const void *buf, size_t n) { EVP_DigestUpdate(arg, buf, n); }

/* A resumed file: its kept prefix counts as done, and is hashed from whichever end is this
 * machine's (else the verify compares the remote digests: prefix_blind). */
static int resume_prefix(sc_xfer *t)
{
    uint64_t n = t->x.start_at;
    t->done_bytes += n;
    if (!t->md)
        return XF_OK;
    if (!t->src->session && t->src->src->prefix)
        return t->src->src->prefix(t->src, n, feed_md, t->md);
    if (!t->dst->session && t->dst->sink->prefix)
        return t->dst->sink->prefix(t->dst, n, feed_md, t->md);
    t->prefix_blind = 1;
    return XF_OK;
}

static void maybe_news(sc_xfer *t)
{
    double now = sc_loop_now();
    if (now - t->last_news >= t->o.progress_every) {
        t->last_news = now;
        t->news = 1;
        sc_op_notify(&t->op);
    }
}

/* Moves the current file's data; XF_OK when all of it has passed. */
static int move_data(sc_xfer *t, size_t *moved)
{
    while (*moved < XF_QUANTUM) {
        if (t->buf_off < t->buf_len) {
            size_t took = 0;
            int r =
                t->dst->sink->write(t->dst, t->data + t->buf_off, t->buf_len - t->buf_off, &took);
            if (r != XF_OK)
                return r;
            t->buf_off += took;
            *moved += took;
            if (t->buf_off == t->buf_len)
                t->buf_off = t->buf_len = 0;
            continue;
        }
        if (t->remaining == 0)
            return XF_OK;
        size_t want = t->remaining < XF_READ ? (size_t)t->remaining : XF_READ;
        size_t got = 0;
        const xf_source_ops *src = t->src->src;
        int r;
        if (src->peek) {
            r = src->peek(t->src, &t->data, want, &got);
        } else {
            t->data = t->buf;
            r = src->read(t->src, t->buf, want, &got);
        }
        t->src_failed = r == XF_ERR;
        if (r != XF_OK)
            return r;
        if (got > want)
            got = want;
        if (t->md)
            EVP_DigestUpdate(t->md, t->data, got);
        t->buf_off = 0;
        t->buf_len = got;
        t->remaining -= got;
        t->done_bytes += got;
        maybe_news(t);
    }
    xf_wake(&t->x);
    return XF_AGAIN;
}

/* Starts (or finishes) both ends in turn; XF_OK when both are done. */
static int both(sc_xfer *t, int *flags, int finish)
{
    if (!(*flags & 1)) {
        const xf_source_ops *o = t->src->src;
        int r = finish ? (o->finish ? o->finish(t->src) : XF_OK) : o->start(t->src);
        if (r != XF_OK)
            return r;
        *flags |= 1;
    }
    if (!(*flags & 2)) {
        int r = finish ? t->dst->sink->finish(t->dst) : t->dst->sink->start(t->dst);
        if (r != XF_OK)
            return r;
        *flags |= 2;
    }
    return XF_OK;
}

/* A file the source (or the verification) failed in is thrown away by the sink before the
 * failure is told, where the sink can do that; a resumable transfer keeps it for the next run. */
static int discard_first(const sc_xfer *t) { return t->dst->sink->cut_discard && !t->o.resume; }

static void xfer_steps(sc_xfer *t)
{
    size_t moved = 0;
    int r;
    const xf_source_ops *src = t->src->src;
    const xf_sink_ops *sink = t->dst->sink;
    for (;;) {
        switch (t->phase) {
        case XP_START:
            r = both(t, &t->started, 0);
            if (r != XF_OK)
                goto out;
            t->phase = XP_NEXT;
            break;
        case XP_NEXT:
            memset(&t->ent, 0, sizeof t->ent);
            r = src->next(t->src, &t->ent);
            if (r == XF_DONE) {
                t->phase = XP_FINISH;
                break;
            }
            if (r != XF_OK)
                goto out;
            if (t->ent.type == XE_FILE || t->ent.type == XE_DIR) {
                if (rel_push(t, t->ent.name) < 0) {
                    r = driver_fail(t, SC_EIO, NULL, "out of memory");
                    goto out;
                }
            }
            /* resume: the top file starts where its partial ends */
            t->x.start_at = t->ent.type == XE_FILE && t->depth == 1 ? t->o.offset : 0;
            if (t->x.start_at > t->ent.size) {
                r = driver_fail(t, SC_EIO, "resume",
                                "resume: %s is %llu bytes now, shorter than the %llu kept",
                                t->rel ? t->rel : "", (unsigned long long)t->ent.size,
                                (unsigned long long)t->x.start_at);
                goto out;
            }
            t->phase = XP_BEGIN;
            break;
        case XP_BEGIN:
            r = sink->begin(t->dst, &t->ent);
            if (r == XF_SKIP)
                t->accepted = 0;
            else if (r == XF_OK)
                t->accepted = 1;
            else
                goto out;
            t->phase = XP_ACCEPT;
            break;
        case XP_ACCEPT:
            r = src->accept(t->src, &t->ent, t->accepted);
            if (r == XF_SKIP && t->ent.type == XE_FILE && t->accepted) {
                /* the source cannot give this file after all (recorded): the sink drops it */
                t->commit = 0;
                t->phase = XP_END_FILE;
                break;
            }
            if (r != XF_OK)
                goto out;
            if (t->ent.type == XE_FILE && t->accepted) {
                t->remaining = t->ent.size - t->x.start_at;
                t->buf_off = t->buf_len = 0;
                hash_begin(t);
                t->prefix_blind = 0;
                if (t->x.start_at > 0 && (r = resume_prefix(t)) != XF_OK)
                    goto out;
                t->phase = XP_DATA;
                break;
            }
            if (t->ent.type == XE_FILE || (t->ent.type == XE_DIR && !t->accepted) ||
                t->ent.type == XE_END_DIR)
                rel_pop(t);
            t->phase = XP_NEXT;
            break;
        case XP_DATA:
            r = move_data(t, &moved);
            if (r == XF_ERR && t->src_failed && discard_first(t)) {
                t->phase = XP_DISCARD;
                break;
            }
            if (r != XF_OK)
                goto out;
            t->phase = XP_DATA_END;
            break;
        case XP_DATA_END:
            r = src->data_end ? src->data_end(t->src) : XF_OK;
            if (r == XF_ERR && discard_first(t)) {
                t->phase = XP_DISCARD;
                break;
            }
            if (r != XF_OK && r != XF_SKIP)
                goto out;
            t->commit = r == XF_OK;
            t->phase = t->commit ? XP_VERIFY : XP_END_FILE;
            break;
        case XP_VERIFY:
            r = verify_file(t);
            if (r == XF_ERR && discard_first(t)) {
                t->phase = XP_DISCARD;
                break;
            }
            if (r != XF_OK)
                goto out;
            t->phase = XP_END_FILE;
            break;
        case XP_DISCARD:
            r = sink->end_file(t->dst, 0);
            if (r == XF_AGAIN)
                goto out;
            r = XF_ERR; /* the failure already recorded is the one told */
            goto out;
        case XP_END_FILE:
            r = sink->end_file(t->dst, t->commit);
            if (r != XF_OK && r != XF_SKIP)
                goto out;
            t->file_ok = t->commit && r == XF_OK;
            if (t->file_ok) {
                t->files_done++;
                if (record_file(t) < 0) {
                    r = driver_fail(t, SC_EIO, NULL, "out of memory");
                    goto out;
                }
            }
            t->phase = XP_FILE_DONE;
            break;
        case XP_FILE_DONE:
            r = src->file_done ? src->file_done(t->src, t->file_ok) : XF_OK;
            if (r != XF_OK)
                goto out;
            rel_pop(t);
            t->phase = XP_NEXT;
            break;
        case XP_FINISH:
            r = both(t, &t->finished, 1);
            if (r != XF_OK)
                goto out;
            xfer_end(t, NULL);
            return;
        default:
            return;
        }
    }
out:
    if (r == XF_AGAIN)
        return;      /* a session's service round (or a wake) brings us back */
    if (r != XF_ERR) /* a status this phase cannot take: never stall */
        driver_fail(t, SC_EIO, NULL, "internal: status %d in phase %d", r, (int)t->phase);
    if (t->x.err.code == SC_OK)
        driver_fail(t, SC_EIO, NULL, "failed");
    xfer_end(t, &t->x.err);
}

static void xfer_run(sc_xfer *t)
{
    if (t->phase == XP_DONE)
        return;
    if (t->running) {
        t->rerun = 1;
        return;
    }
    sc_op_ref(&t->op);
    t->running = 1;
    do {
        t->rerun = 0;
        xfer_steps(t);
    } while (t->rerun && t->phase != XP_DONE);
    t->running = 0;
    sc_op_release(&t->op);
}

static sc_xfer *xfer_of_cu(sc_chanuser *u) { return ((struct xf_user *)u)->t; }

static void xfer_service(sc_chanuser *u) { xfer_run(xfer_of_cu(u)); }

static void xfer_session_lost(sc_chanuser *u, const sc_err *why)
{
    sc_xfer *t = xfer_of_cu(u);
    if (t->phase == XP_DONE)
        return;
    /* the session's message names it already: it is not said twice */
    const char *msg = why->msg;
    size_t ln = strlen(t->x.label);
    if (ln > 0 && strncmp(msg, t->x.label, ln) == 0 && msg[ln] == ':' && msg[ln + 1] == ' ')
        msg += ln + 2;
    sc_err err;
    sc_err_format(&err, why->code, t->x.label, why->hop, t->verb, why->reason, "%s", msg);
    xfer_end(t, &err);
}

static void timer_closed(uv_handle_t *h)
{
    sc_xfer *t = h->data;
    sc_op_release(&t->op);
}

static void on_idle_check(uv_timer_t *timer)
{
    sc_xfer *t = timer->data;
    if (t->phase == XP_DONE || t->o.idle_timeout <= 0)
        return;
    if (sc_loop_now() - t->x.last_activity >= t->o.idle_timeout) {
        sc_err err;
        sc_session *s = t->users[0].cu.session;
        sc_err_format(&err, SC_ETIMEDOUT, t->x.label, s ? s->hop : 0, t->verb, "timeout",
                      "no progress for %gs", t->o.idle_timeout);
        xfer_end(t, &err);
    }
}

/* Ends the transfer (err NULL: success, unless some files failed); releases the core's ref. */
static void xfer_end(sc_xfer *t, const sc_err *err)
{
    if (t->phase == XP_DONE)
        return;
    t->phase = XP_DONE;
    for (int i = 0; i < t->n_cu; i++)
        sc_session_detach(&t->users[i].cu);
    sc_err final = {SC_OK, NULL, NULL, 0, ""};
    if (err) {
        final = *err;
        t->src->src->abort(t->src);
        t->dst->sink->abort(t->dst);
    } else if (t->x.n_soft > 0) {
        if (t->x.n_soft == 1) {
            final = t->x.soft;
        } else {
            final = t->x.soft;
            sc_err_format(&final, SC_EIO, NULL, t->x.soft.hop, t->verb, NULL,
                          "%ld files failed; the first: %s", t->x.n_soft, t->x.soft.msg);
        }
        err = &final;
    }
    for (int i = 0; i < t->n_cu; i++)
        sc_session_unref(t->users[i].cu.session);
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, timer_closed);
    sc_op_finish(&t->op, err ? &final : NULL);
    sc_op_release(&t->op); /* last: may free t */
}

static void xfer_cancel(sc_op *op)
{
    sc_xfer *t = (sc_xfer *)op;
    driver_fail(t, SC_ECANCELED, NULL, "canceled");
    xfer_end(t, &t->x.err);
}

static int xfer_has_news(sc_op *op) { return ((sc_xfer *)op)->news; }

static void end_destroy(xf_end *e)
{
    if (e)
        (e->src ? e->src->destroy : e->sink->destroy)(e);
}

static void xfer_destroy(sc_op *op)
{
    sc_xfer *t = (sc_xfer *)op;
    end_destroy(t->src);
    end_destroy(t->dst);
    for (size_t i = 0; i < t->n_files; i++)
        free(t->files[i].path);
    free(t->files);
    vreq_clear(&t->vreq[0]);
    vreq_clear(&t->vreq[1]);
    if (t->md)
        EVP_MD_CTX_free(t->md);
    sc_big_free(t->buf, XF_BUF);
    free(t->rel);
    free(t->rel_marks);
    free(t->src_path);
    free(t->dst_path);
    free(t->verb);
    free(t);
}

static xf_end *end_new(sc_xfer *t, const sc_xfer_end *end, int is_src)
{
    if (!end->session)
        return xf_local_new(&t->x, end->path, is_src);
    if (t->o.protocol == SC_PROTO_SFTP)
        return xf_sftp_new(&t->x, end->session, end->path, is_src);
    return xf_scp_new(&t->x, end->session, end->path, is_src);
}

/* Completes a transfer that never started (out of memory, a session not there). */
static sc_op *fail_at_start(sc_xfer *t, const sc_err *err)
{
    t->phase = XP_DONE;
    for (int i = 0; i < t->n_cu; i++)
        sc_session_unref(t->users[i].cu.session);
    uv_close((uv_handle_t *)&t->timer, timer_closed);
    sc_op_finish(&t->op, err);
    sc_op_release(&t->op);
    return &t->op;
}

sc_op *sc_xfer_start(const sc_xfer_opts *o)
{
    sc_session *any = o->src.session ? o->src.session : o->dst.session;
    if (!any)
        return NULL;
    sc_xfer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    sc_op_init(&t->op, any->loop, "transfer");
    t->op.cancel = xfer_cancel;
    t->op.destroy = xfer_destroy;
    t->op.has_news = xfer_has_news;
    t->op.refs += 2; /* the core's while running, the timer's until its handle closes */
    t->o = *o;
    t->src_path = sc_strdup(o->src.path);
    t->dst_path = sc_strdup(o->dst.path);
    t->verb = sc_strdup(o->verb ? o->verb : "transfer");
    t->o.src.path = t->src_path;
    t->o.dst.path = t->dst_path;
    t->o.verb = t->x.verb = t->verb ? t->verb : "transfer";
    t->x.o.recursive = o->recursive;
    t->x.o.preserve = o->preserve;
    t->x.o.total_hint = o->total_hint;
    t->x.o.resume = o->resume;
    if (!o->resume)
        t->o.offset = 0;
    t->x.wake = wake_sessions;
    if (t->o.progress_every <= 0)
        t->o.progress_every = 0.25;
    if (!t->o.hash)
        t->o.verify = 0;
    t->x.total = o->total_hint;
    snprintf(t->x.label, sizeof t->x.label, "%s", any->label);
    t->buf = sc_big_alloc(XF_BUF);
    if (o->hash)
        t->md = EVP_MD_CTX_new();
    uv_timer_init(&any->loop->uv, &t->timer);
    t->timer.data = t;
    t->x.last_activity = t->last_news = sc_loop_now();
    sc_session *sess[2] = {o->src.session, o->dst.session};
    for (int i = 0; i < 2; i++) {
        if (!sess[i] || (t->n_cu == 1 && t->users[0].cu.session == sess[i]))
            continue;
        t->users[t->n_cu].t = t;
        sc_chanuser *u = &t->users[t->n_cu++].cu;
        u->service = xfer_service;
        u->session_lost = xfer_session_lost;
        u->session = sess[i];
        sc_session_ref(sess[i]);
    }
    if (t->src_path && t->dst_path && t->verb && t->buf && (!o->hash || t->md)) {
        t->src = end_new(t, &t->o.src, 1);
        t->dst = end_new(t, &t->o.dst, 0);
    }
    if (!t->src || !t->dst) {
        sc_err err;
        sc_err_format(&err, SC_EIO, t->x.label, any->hop, t->x.verb, NULL, "out of memory");
        end_destroy(t->src);
        end_destroy(t->dst);
        t->src = t->dst = NULL;
        return fail_at_start(t, &err);
    }
    if (t->o.offset > 0 && t->o.protocol == SC_PROTO_SCP) {
        sc_err err;
        sc_err_format(&err, SC_EIO, t->x.label, any->hop, t->x.verb, "resume",
                      "resume needs SFTP: SCP cannot start a file at an offset");
        xfer_end(t, &err);
        return &t->op;
    }
    for (int i = 0; i < t->n_cu; i++) {
        sc_session *s = t->users[i].cu.session;
        if (s->state != SS_READY) {
            sc_err err;
            sc_err_format(&err, SC_ECLOSED, s->label, s->hop, t->verb, "lost",
                          "session is not connected");
            xfer_end(t, &err);
            return &t->op;
        }
    }
    for (int i = 0; i < t->n_cu; i++)
        sc_session_attach(t->users[i].cu.session, &t->users[i].cu);
    if (t->o.idle_timeout > 0) {
        uint64_t ms = (uint64_t)(t->o.idle_timeout * 250.0);
        if (ms < 10)
            ms = 10;
        sc_timer_start(&t->timer, on_idle_check, ms, ms);
    }
    xf_wake(&t->x);
    return &t->op;
}

void sc_xfer_progress(sc_op *op, uint64_t *done, uint64_t *total, const char **name, long *files)
{
    sc_xfer *t = (sc_xfer *)op;
    *done = t->done_bytes;
    *total = t->x.total;
    *name = t->rel ? t->rel : "";
    *files = t->files_done;
}

int sc_xfer_take_news(sc_op *op)
{
    sc_xfer *t = (sc_xfer *)op;
    int n = t->news;
    t->news = 0;
    return n;
}

int sc_xfer_file(sc_op *op, size_t i, const char **path, uint64_t *size, const char **sha256)
{
    sc_xfer *t = (sc_xfer *)op;
    if (i >= t->n_files)
        return 0;
    *path = t->files[i].path;
    *size = t->files[i].size;
    *sha256 = t->files[i].sha256;
    return 1;
}

int sc_xfer_verify_request(sc_op *op, int side, const char **path)
{
    sc_xfer *t = (sc_xfer *)op;
    xf_vreq *q = &t->vreq[side ? 1 : 0];
    if (t->phase != XP_VERIFY || q->state != VQ_WANTED)
        return 0;
    q->state = VQ_ASKED;
    *path = q->path;
    return 1;
}

void sc_xfer_verify_answer(sc_op *op, int side, const char *sha256, const char *why)
{
    sc_xfer *t = (sc_xfer *)op;
    xf_vreq *q = &t->vreq[side ? 1 : 0];
    if (t->phase != XP_VERIFY || q->state != VQ_ASKED)
        return;
    q->state = VQ_ANSWERED;
    q->sha256[0] = '\0';
    if (sha256 && strlen(sha256) == 64)
        memcpy(q->sha256, sha256, 65);
    else
        sc_sanitize(q->why, sizeof q->why, why ? why : "no digest");
    xf_wake(&t->x);
}

int sc_xfer_sink_verifies_first(sc_op *op)
{
    sc_xfer *t = (sc_xfer *)op;
    return t->dst && (!t->dst->session || t->dst->sink->settle != NULL);
}

int sc_sha256_file(const char *path, int64_t limit, char hex[65], char *why, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(why, cap, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) {
        close(fd);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint64_t n = limit < 0 ? (uint64_t)st.st_size : (uint64_t)limit;
    xf_ctx x = {.verb = "resume"};
    snprintf(x.label, sizeof x.label, "local %s", path);
    xf_end e = {.x = &x};
    int r = xf_fd_prefix(&e, fd, n, feed_md, md);
    close(fd);
    if (r == XF_OK)
        digest_hex(md, hex);
    else
        snprintf(why, cap, "%s", x.err.msg);
    EVP_MD_CTX_free(md);
    return r == XF_OK ? 0 : -1;
}

void sc_xfer_partial_name(char *out, size_t cap, const char *name)
{
    xf_partial_name(out, cap, name);
}

const char *sc_xfer_dest_root(sc_op *op)
{
    sc_xfer *t = (sc_xfer *)op;
    return t->dst ? t->dst->dest_root : NULL;
}
