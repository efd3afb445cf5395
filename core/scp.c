/* scp.c - the legacy SCP protocol as a transfer endpoint, over an exec channel.
 *
 * Source: the remote side runs `scp -f [-r] [-p] -- 'PATH'` and sends records; every record is
 * checked before anything is made of it (the CVE-2019-6111 / CVE-2018-20685 class): names must be
 * plain (not empty, ".", "..", no "/"), the top entry must be the one asked for and come alone,
 * directories only when recursive, modes octal permission bits, sizes and times in range.
 * Sink: the remote side runs `scp -t [-r] [-p] -- 'PATH'` and acknowledges each record.
 * Replies: "\0" ok, "\1message\n" this entry failed, "\2message\n" fatal. */
#include "scp_wire.h"
#include "xfer.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IN_BUF       65536
#define LINE_MAX_LEN 2048

/* Where a sink call that sends a record and waits for its reply is (calls are retried). */
typedef enum {
    SCP_IDLE,        /* nothing sent yet for this call */
    SCP_TIMES_SENT,  /* the T record went out: its reply is due */
    SCP_RECORD,      /* the C, D or E record is to go out */
    SCP_RECORD_SENT, /* the record (or a file's end) went out: its reply is due */
} scp_step;

typedef struct {
    xf_end e;
    xf_chan c;
    int opened;
    char in[IN_BUF];
    size_t in_off, in_len;
    int in_eof;
    char line[LINE_MAX_LEN + 1];
    size_t line_len;
    char out[LINE_MAX_LEN + 64];
    size_t out_off, out_len;
    int queued;    /* the message of the pending call is queued (not queued again on retry) */
    scp_step step; /* sink: where begin() or end_file() is */
    /* source */
    int depth, top_count;
    char expected[XF_NAME_MAX + 1];
    int has_times;
    int64_t mtime, atime;
    int records; /* records received (a first line that is not one is shown) */
} xf_scp;

/* ---- bytes in and out ---- */

/* Makes input available in sc->in; XF_OK, XF_AGAIN, XF_DONE (EOF) or XF_ERR. */
static int fill(xf_scp *sc)
{
    if (sc->in_off < sc->in_len)
        return XF_OK;
    if (sc->in_eof)
        return XF_DONE;
    size_t got = 0;
    int r = xf_chan_read(&sc->e, &sc->c, sc->in, sizeof sc->in, &got);
    if (r == XF_DONE)
        sc->in_eof = 1;
    if (r != XF_OK)
        return r;
    sc->in_off = 0;
    sc->in_len = got;
    return XF_OK;
}

/* Reads a line (without its '\n') into sc->line; XF_DONE on EOF before any byte of it. */
static int read_line(xf_scp *sc)
{
    for (;;) {
        int r = fill(sc);
        if (r == XF_DONE) {
            if (sc->line_len == 0)
                return XF_DONE;
            return xf_fail(&sc->e, SC_EPROTO, "the remote scp ended in the middle of a line");
        }
        if (r != XF_OK)
            return r;
        char *start = sc->in + sc->in_off;
        size_t avail = sc->in_len - sc->in_off;
        char *nl = memchr(start, '\n', avail);
        size_t take = nl ? (size_t)(nl - start) : avail;
        if (sc->line_len + take > LINE_MAX_LEN)
            return xf_fail(&sc->e, SC_EPROTO, "a protocol line longer than %d bytes", LINE_MAX_LEN);
        memcpy(sc->line + sc->line_len, start, take);
        sc->line_len += take;
        sc->in_off += take + (nl ? 1 : 0);
        if (nl) {
            sc->line[sc->line_len] = '\0';
            return XF_OK;
        }
    }
}

/* Sends what is queued; XF_OK once all of it has gone. */
static int flush(xf_scp *sc)
{
    while (sc->out_off < sc->out_len) {
        size_t took = 0;
        int r =
            xf_chan_write(&sc->e, &sc->c, sc->out + sc->out_off, sc->out_len - sc->out_off, &took);
        if (r != XF_OK)
            return r;
        sc->out_off += took;
    }
    sc->out_off = sc->out_len = 0;
    return XF_OK;
}

/* Queues a message once per call (a retried call does not queue it again), then flushes. */
static int send_once(xf_scp *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_once(xf_scp *sc, const char *fmt, ...)
{
    if (!sc->queued) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sc->out + sc->out_len, sizeof sc->out - sc->out_len, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= sizeof sc->out - sc->out_len)
            return xf_fail(&sc->e, SC_EIO, "protocol message too long");
        sc->out_len += (size_t)n;
        sc->queued = 1;
    }
    int r = flush(sc);
    if (r == XF_OK)
        sc->queued = 0;
    return r;
}

static int send_byte(xf_scp *sc, char b)
{
    if (!sc->queued) {
        sc->out[sc->out_len++] = b;
        sc->queued = 1;
    }
    int r = flush(sc);
    if (r == XF_OK)
        sc->queued = 0;
    return r;
}

/* Reads a reply: XF_OK for "\0", XF_SKIP for "\1msg" (recorded), XF_ERR for "\2msg" or EOF. */
static int read_reply(xf_scp *sc, const char *what)
{
    if (sc->line_len == 0) {
        int r = fill(sc);
        if (r == XF_DONE) {
            const char *err = xf_chan_stderr(&sc->c);
            return xf_fail(&sc->e, SC_EIO, "the remote scp ended before acknowledging %s%s%s", what,
                           *err ? ": " : "", err);
        }
        if (r != XF_OK)
            return r;
        if (sc->in[sc->in_off] == '\0') {
            sc->in_off++;
            return XF_OK;
        }
    }
    int r = read_line(sc);
    if (r == XF_DONE)
        return xf_fail(&sc->e, SC_EIO, "the remote scp ended before acknowledging %s", what);
    if (r != XF_OK)
        return r;
    char kind = sc->line[0];
    char msg[LINE_MAX_LEN + 1];
    sc_sanitize(msg, sizeof msg, kind == 1 || kind == 2 ? sc->line + 1 : sc->line);
    sc->line_len = 0;
    if (kind == 1)
        return xf_soft(&sc->e, "remote: %s", msg);
    return xf_fail(&sc->e, SC_EIO, "remote: %s", msg);
}

static int open_channel(xf_scp *sc, const char *mode)
{
    if (sc->opened)
        return XF_OK;
    const xf_options *o = &sc->e.x->o;
    char *q = xf_shell_path(sc->e.path);
    if (!q)
        return xf_fail(&sc->e, SC_EIO, "remote path holds a newline");
    size_t n = strlen(q) + 40;
    char *cmd = malloc(n);
    if (!cmd) {
        free(q);
        return xf_fail(&sc->e, SC_EIO, "out of memory");
    }
    snprintf(cmd, n, "scp %s%s%s -- %s", mode, o->recursive ? " -r" : "", o->preserve ? " -p" : "",
             q);
    free(q);
    int r = xf_chan_open(&sc->e, &sc->c, cmd, 0);
    free(cmd);
    if (r == XF_OK)
        sc->opened = 1;
    return r;
}

static int finish_channel(xf_scp *sc)
{
    int r = flush(sc);
    if (r != XF_OK)
        return r;
    r = xf_chan_finish(&sc->e, &sc->c);
    if (r != XF_OK)
        return r;
    xf_chan *c = &sc->c;
    const sc_exit *ex = &c->chan.exit;
    const char *err = xf_chan_stderr(c);
    if (ex->signal[0])
        r = xf_fail(&sc->e, SC_EIO, "the remote scp was killed by SIG%s%s%s", ex->signal,
                    *err ? ": " : "", err);
    else if (ex->status > 0 && sc->e.x->n_soft == 0)
        r = xf_fail(&sc->e, SC_EIO, "the remote scp exited with status %d%s%s", ex->status,
                    *err ? ": " : "", err);
    else
        r = XF_OK;
    xf_chan_close(&sc->e, c);
    return r;
}

/* ---- source: the remote side runs scp -f ---- */

static int src_start(xf_end *e)
{
    xf_scp *sc = (xf_scp *)e;
    int r = open_channel(sc, "-f");
    if (r != XF_OK)
        return r;
    return send_byte(sc, '\0');
}

/* A C or D record from the server (scp_wire.c checks the record itself) into ent, checked
 * against what was asked: the top entry must be the one named, and come alone; directories only
 * when recursive. */
static int parse_record(xf_scp *sc, xf_entry *ent)
{
    xf_end *e = &sc->e;
    scp_record rec;
    const char *why = NULL;
    int bad = scp_parse_record(sc->line, sc->line_len, &rec, &why);
    const char *p = bad ? sc->line : rec.name;
    size_t nlen = bad ? 0 : rec.name_len;
    char shown[XF_NAME_MAX + 1];
    char raw[XF_NAME_MAX + 1];
    if (bad) {
        /* the name, for the message: what follows the second space */
        const char *sp = memchr(sc->line, ' ', sc->line_len);
        sp = sp ? memchr(sp + 1, ' ', sc->line_len - (size_t)(sp + 1 - sc->line)) : NULL;
        p = sp ? sp + 1 : "";
        nlen = sp ? sc->line_len - (size_t)(p - sc->line) : 0;
    }
    snprintf(raw, sizeof raw, "%.*s", (int)(nlen > XF_NAME_MAX ? XF_NAME_MAX : nlen), p);
    sc_sanitize(shown, sizeof shown, raw);
    if (bad && strcmp(why, "unsafe name") == 0)
        return xf_fail(e, SC_EPROTO, "refusing the name \"%s\" sent by the server", shown);
    if (bad)
        return xf_fail(e, SC_EPROTO, "%s in a record from the server", why);
    /* OpenSSH's scp -f sends a name holding a newline vis(3)-encoded ("new\^Jline"): taken as
     * it is, it would make a file of another name and call it a success */
    for (size_t i = 0; i + 2 < nlen; i++)
        if (p[i] == '\\' && p[i + 1] == '^' && p[i + 2] == 'J')
            return xf_fail(
                e, SC_EIO,
                "\"%s\" is a name with a newline, which SCP cannot carry (the remote scp "
                "encoded it): use protocol = \"sftp\"",
                shown);
    if (rec.is_dir && !e->x->o.recursive)
        return xf_fail(e, SC_EPROTO, "the server sent directory \"%s\", recursive was not asked",
                       shown);
    if (sc->depth == 0) {
        if (sc->top_count > 0)
            return xf_fail(e, SC_EPROTO, "the server sent \"%s\" after the one entry asked for",
                           shown);
        if (strlen(sc->expected) != nlen || memcmp(sc->expected, p, nlen) != 0)
            return xf_fail(e, SC_EPROTO, "the server sent \"%s\" where \"%s\" was asked for", shown,
                           sc->expected);
        sc->top_count++;
    }
    if (!rec.is_dir && !e->x->o.recursive && e->x->o.total_hint == 0)
        e->x->total += rec.size;
    ent->type = rec.is_dir ? XE_DIR : XE_FILE;
    memcpy(ent->name, p, nlen);
    ent->name[nlen] = '\0';
    ent->mode = rec.mode & 0777;
    ent->size = rec.is_dir ? 0 : rec.size;
    ent->has_times = sc->has_times;
    ent->mtime = sc->mtime;
    ent->atime = sc->atime;
    sc->has_times = 0;
    return XF_OK;
}

static int src_next(xf_end *e, xf_entry *ent)
{
    xf_scp *sc = (xf_scp *)e;
    for (;;) {
        int r = flush(sc); /* the acknowledgement of a T record */
        if (r != XF_OK)
            return r;
        sc->queued = 0;
        r = read_line(sc);
        if (r == XF_DONE) {
            if (sc->depth != 0)
                return xf_fail(e, SC_EPROTO, "the server's stream ended inside a directory");
            if (sc->top_count == 0 && e->x->n_soft == 0) {
                const char *err = xf_chan_stderr(&sc->c);
                return xf_fail(e, SC_EPROTO, "the remote scp sent nothing%s%s", *err ? ": " : "",
                               err);
            }
            return XF_DONE;
        }
        if (r != XF_OK)
            return r;
        size_t len = sc->line_len;
        sc->line_len = 0;
        char kind = len ? sc->line[0] : '\0';
        char msg[LINE_MAX_LEN + 1];
        switch (kind) {
        case 1:
            sc_sanitize(msg, sizeof msg, sc->line + 1);
            xf_soft(e, "remote: %s", msg);
            continue;
        case 2:
            sc_sanitize(msg, sizeof msg, sc->line + 1);
            return xf_fail(e, SC_EIO, "remote: %s", msg);
        case 'T':
            if (scp_parse_times(sc->line, len, &sc->mtime, &sc->atime) != 0)
                return xf_fail(e, SC_EPROTO, "bad time record from the server");
            sc->has_times = 1;
            sc->records++;
            sc->out[sc->out_len++] = '\0';
            continue;
        case 'C':
        case 'D':
            sc->line_len = len;
            r = parse_record(sc, ent);
            sc->line_len = 0;
            sc->records++;
            return r;
        case 'E':
            if (len != 1 || sc->depth == 0)
                return xf_fail(e, SC_EPROTO, "unexpected end-of-directory record from the server");
            sc->records++;
            ent->type = XE_END_DIR;
            return XF_OK;
        default:
            sc_sanitize(msg, sizeof msg, sc->line);
            if (sc->records == 0)
                return xf_fail(e, SC_EPROTO, "the server answered with text, not SCP: %s", msg);
            return xf_fail(e, SC_EPROTO, "unexpected record from the server");
        }
    }
}

static int src_accept(xf_end *e, const xf_entry *ent, int ok)
{
    xf_scp *sc = (xf_scp *)e;
    int r = ok ? send_byte(sc, '\0') : send_once(sc, "\001scp: not taken by the receiver\n");
    if (r != XF_OK)
        return r;
    if (ent->type == XE_DIR && ok)
        sc->depth++;
    else if (ent->type == XE_END_DIR)
        sc->depth--;
    return XF_OK;
}

static int src_read(xf_end *e, char *buf, size_t len, size_t *got)
{
    xf_scp *sc = (xf_scp *)e;
    if (sc->in_off < sc->in_len) {
        size_t n = sc->in_len - sc->in_off;
        if (n > len)
            n = len;
        memcpy(buf, sc->in + sc->in_off, n);
        sc->in_off += n;
        *got = n;
        return XF_OK;
    }
    int r = xf_chan_read(e, &sc->c, buf, len, got);
    if (r == XF_DONE) {
        sc->in_eof = 1;
        const char *err = xf_chan_stderr(&sc->c);
        return xf_fail(e, SC_EIO, "the remote scp ended in the middle of a file%s%s",
                       *err ? ": " : "", err);
    }
    return r;
}

static int src_data_end(xf_end *e)
{
    xf_scp *sc = (xf_scp *)e;
    return read_reply(sc, "the end of a file");
}

static int src_file_done(xf_end *e, int ok)
{
    xf_scp *sc = (xf_scp *)e;
    return ok ? send_byte(sc, '\0') : send_once(sc, "\001scp: not kept by the receiver\n");
}

static int src_finish(xf_end *e) { return finish_channel((xf_scp *)e); }

/* ---- sink: the remote side runs scp -t ---- */

static int sink_start(xf_end *e)
{
    xf_scp *sc = (xf_scp *)e;
    int r = open_channel(sc, "-t");
    if (r != XF_OK)
        return r;
    r = read_reply(sc, "the start");
    if (r == XF_SKIP) /* the target is unusable: nothing can go there */
        return xf_fail(e, SC_EIO, "%s", xf_soft_detail(e->x));
    return r;
}

static int sink_begin(xf_end *e, const xf_entry *ent)
{
    xf_scp *sc = (xf_scp *)e;
    int r;
    if (ent->type != XE_END_DIR && memchr(ent->name, '\n', strlen(ent->name)))
        return xf_soft(e, "local name with a newline cannot go over SCP, skipped");
    if (sc->step == SCP_IDLE) {
        if (e->x->o.preserve && ent->has_times && ent->type != XE_END_DIR) {
            r = send_once(sc, "T%" PRId64 " 0 %" PRId64 " 0\n", ent->mtime, ent->atime);
            if (r != XF_OK)
                return r;
            sc->step = SCP_TIMES_SENT;
        } else {
            sc->step = SCP_RECORD;
        }
    }
    if (sc->step == SCP_TIMES_SENT) {
        r = read_reply(sc, "the times");
        if (r == XF_AGAIN)
            return r;
        sc->step = r == XF_OK ? SCP_RECORD : SCP_IDLE;
        if (r != XF_OK)
            return r;
    }
    if (sc->step == SCP_RECORD) {
        if (ent->type == XE_FILE)
            r = send_once(sc, "C%04o %" PRIu64 " %s\n", ent->mode & 0777, ent->size, ent->name);
        else if (ent->type == XE_DIR)
            r = send_once(sc, "D%04o 0 %s\n", ent->mode & 0777, ent->name);
        else
            r = send_once(sc, "E\n");
        if (r != XF_OK)
            return r;
        sc->step = SCP_RECORD_SENT;
    }
    r = read_reply(sc, ent->type == XE_END_DIR ? "the end of a directory" : ent->name);
    if (r != XF_AGAIN)
        sc->step = SCP_IDLE;
    return r;
}

static int sink_write(xf_end *e, const char *buf, size_t len, size_t *took)
{
    xf_scp *sc = (xf_scp *)e;
    int r = flush(sc);
    if (r != XF_OK)
        return r;
    return xf_chan_write(e, &sc->c, buf, len, took);
}

static int sink_end_file(xf_end *e, int commit)
{
    xf_scp *sc = (xf_scp *)e;
    if (sc->step == SCP_IDLE) {
        int r = commit ? send_byte(sc, '\0') : send_once(sc, "\001scp: the source failed\n");
        if (r != XF_OK)
            return r;
        sc->step = SCP_RECORD_SENT;
    }
    int r = read_reply(sc, "a file's data");
    if (r != XF_AGAIN)
        sc->step = SCP_IDLE;
    return r;
}

static int sink_finish(xf_end *e) { return finish_channel((xf_scp *)e); }

/* ---- both ---- */

static void scp_abort(xf_end *e)
{
    xf_scp *sc = (xf_scp *)e;
    xf_chan_close(e, &sc->c);
}

static void scp_destroy(xf_end *e)
{
    scp_abort(e);
    free(e->path);
    free(e->dest_root);
    free(e);
}

static const xf_source_ops scp_source = {
    .start = src_start,
    .next = src_next,
    .accept = src_accept,
    .read = src_read,
    .data_end = src_data_end,
    .file_done = src_file_done,
    .finish = src_finish,
    .abort = scp_abort,
    .destroy = scp_destroy,
};

/* No pending_path: scp -t writes each file in place, as OpenSSH's scp does; a verify of the
 * destination can only come after. */
static const xf_sink_ops scp_sink = {
    .start = sink_start,
    .begin = sink_begin,
    .write = sink_write,
    .end_file = sink_end_file,
    .finish = sink_finish,
    .abort = scp_abort,
    .destroy = scp_destroy,
};

xf_end *xf_scp_new(xf_ctx *x, sc_session *s, const char *path, int is_src)
{
    xf_scp *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    if (is_src)
        sc->e.src = &scp_source;
    else
        sc->e.sink = &scp_sink;
    sc->e.x = x;
    sc->e.session = s;
    sc->e.path = sc_strdup(path);
    if (!sc->e.path) {
        free(sc);
        return NULL;
    }
    /* the name the remote scp will send for the path: its last component, as scp computes it */
    char *p = sc_strdup(path);
    if (p) {
        size_t n = strlen(p);
        while (n > 1 && p[n - 1] == '/')
            p[--n] = '\0';
        const char *b = strrchr(p, '/');
        b = b ? b + 1 : p;
        if (strcmp(p, "~") == 0)
            b = ".";
        snprintf(sc->expected, sizeof sc->expected, "%s", b);
        free(p);
    }
    return &sc->e;
}
