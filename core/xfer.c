/* xfer.c - what the transfer endpoints share: failures in the transfer's words, names and
 * paths, temporary names, and the remote endpoints' channel (on the channel layer). */
#include "xfer.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- failures and progress ---- */

const char *xf_label(const xf_end *e) { return e->session ? e->session->label : e->x->label; }

static int end_hop(const xf_end *e) { return e->session ? e->session->hop : 0; }

int xf_fail(xf_end *e, sc_code code, const char *fmt, ...)
{
    xf_ctx *x = e->x;
    if (x->err.code != SC_OK)
        return XF_ERR; /* the first error is the one reported */
    va_list ap;
    va_start(ap, fmt);
    sc_err_vformat(&x->err, code, xf_label(e), end_hop(e), x->verb, NULL, fmt, ap);
    va_end(ap);
    return XF_ERR;
}

int xf_soft(xf_end *e, const char *fmt, ...)
{
    xf_ctx *x = e->x;
    if (x->n_soft++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        sc_err_vformat(&x->soft, SC_EIO, xf_label(e), end_hop(e), x->verb, NULL, fmt, ap);
        va_end(ap);
    }
    return XF_SKIP;
}

const char *xf_soft_detail(xf_ctx *x)
{
    /* the message is "LABEL: VERB: detail" */
    const char *m = x->soft.msg;
    const char *p = strstr(m, x->verb);
    if (p && p[strlen(x->verb)] == ':')
        return p + strlen(x->verb) + 2;
    return m;
}

void xf_activity(xf_ctx *x) { x->last_activity = sc_loop_now(); }

void xf_wake(xf_ctx *x) { x->wake(x); }

/* ---- names and paths ---- */

int xf_name_ok(const char *name, size_t len) { return sc_name_ok(name, len); }

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
    return sc_shell_quote(xf_home_relative(path));
}

const char *xf_base_name(const char *p)
{
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

void xf_temp_name(char *out, size_t cap, const char *name)
{
    unsigned char r[3];
    if (RAND_bytes(r, sizeof r) != 1) {
        static unsigned counter;
        counter++;
        memcpy(r, &counter, sizeof r);
    }
    snprintf(out, cap, ".%.200s.%02x%02x%02x.part", name, r[0], r[1], r[2]);
}

void xf_partial_name(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, ".%.200s.sshchain-partial", name);
}

void xf_sink_name(const xf_ctx *x, char *out, size_t cap, const char *name)
{
    if (x->o.resume)
        xf_partial_name(out, cap, name);
    else
        xf_temp_name(out, cap, name);
}

int xf_fd_prefix(xf_end *e, int fd, uint64_t n, void (*feed)(void *, const void *, size_t),
                 void *arg)
{
    char buf[65536];
    uint64_t off = 0;
    while (off < n) {
        size_t want = n - off < sizeof buf ? (size_t)(n - off) : sizeof buf;
        ssize_t got = pread(fd, buf, want, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return xf_fail(e, SC_EIO, "local read of the first %llu bytes: %s",
                           (unsigned long long)n, got < 0 ? strerror(errno) : "file too short");
        feed(arg, buf, (size_t)got);
        off += (uint64_t)got;
    }
    return XF_OK;
}

/* ---- the remote endpoints' channel ---- */

int xf_chan_open(xf_end *e, xf_chan *c, const char *what, int subsystem)
{
    if (c->closed)
        return xf_fail(e, SC_ECLOSED, "channel closed");
    if (!c->started) {
        sc_chan_opts o = {.request = subsystem ? SC_CHAN_SUBSYSTEM : SC_CHAN_EXEC,
                          .what = what,
                          .window = subsystem ? SC_SFTP_WINDOW : SC_XFER_WINDOW};
        if (sc_channel_init(&c->chan, e->session, &o) < 0)
            return xf_fail(e, SC_EIO, "out of memory");
        c->started = 1;
    }
    sc_err err;
    int r = sc_channel_step(&c->chan, NULL, &err);
    if (r == 0)
        return XF_AGAIN;
    if (r < 0) {
        if (e->x->err.code == SC_OK) {
            e->x->err = err; /* the channel layer's words, in the transfer's frame */
            sc_err_format(&e->x->err, err.code, xf_label(e), end_hop(e), e->x->verb, err.reason,
                          "%s", err.msg);
        }
        return XF_ERR;
    }
    xf_activity(e->x);
    return XF_OK;
}

int xf_chan_is_open(const xf_chan *c) { return c->started && c->chan.state == SC_CHAN_OPEN; }

static void chan_drain_stderr(xf_chan *c)
{
    /* all of it (only the tail is kept): unread stderr holds back libssh's EOF and close */
    char tmp[1024];
    for (;;) {
        int n = sc_channel_read(&c->chan, tmp, sizeof tmp, 1);
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
    /* trailing newlines off, the rest made printable */
    size_t n = c->err_len;
    while (n > 0 && (c->err_tail[n - 1] == '\n' || c->err_tail[n - 1] == '\r'))
        n--;
    char raw[sizeof c->err_tail];
    memcpy(raw, c->err_tail, n);
    raw[n] = '\0';
    sc_sanitize(c->err_clean, sizeof c->err_clean, raw);
    return c->err_clean;
}

int xf_chan_read(xf_end *e, xf_chan *c, char *buf, size_t len, size_t *got)
{
    *got = 0;
    if (!xf_chan_is_open(c))
        return xf_fail(e, SC_ECLOSED, "channel closed");
    chan_drain_stderr(c);
    int n = sc_channel_read(&c->chan, buf, len, 0);
    if (n > 0) {
        *got = (size_t)n;
        xf_activity(e->x);
        return XF_OK;
    }
    if (n == SC_CHAN_AGAIN)
        return XF_AGAIN;
    chan_drain_stderr(c);
    if (n == SC_CHAN_EOF || sc_channel_is_closed(&c->chan))
        return XF_DONE; /* closed without EOF: the caller says what was cut short */
    return xf_fail(e, SC_ECLOSED, "channel read: %s", ssh_get_error(e->session->ssh));
}

int xf_chan_write(xf_end *e, xf_chan *c, const char *buf, size_t len, size_t *took)
{
    *took = 0;
    if (!xf_chan_is_open(c) || sc_channel_is_closed(&c->chan))
        return xf_fail(e, SC_ECLOSED, "channel closed by the remote side%s%s",
                       c->err_len ? ": " : "", xf_chan_stderr(c));
    long w = sc_channel_write(&c->chan, buf, len);
    if (w < 0)
        return xf_fail(e, SC_ECLOSED, "channel write: %s", ssh_get_error(e->session->ssh));
    if (w == 0)
        return XF_AGAIN;
    *took = (size_t)w;
    xf_activity(e->x);
    return XF_OK;
}

int xf_chan_finish(xf_end *e, xf_chan *c)
{
    (void)e;
    if (!xf_chan_is_open(c))
        return XF_OK;
    sc_channel_send_eof(&c->chan);
    /* read what is left (stdout is not expected any more) until the command has ended */
    char tmp[4096];
    for (int i = 0; i < 16; i++)
        if (sc_channel_read(&c->chan, tmp, sizeof tmp, 0) <= 0)
            break;
    chan_drain_stderr(c);
    sc_exit *ex = &c->chan.exit;
    if (ex->have || sc_channel_is_closed(&c->chan) ||
        (sc_channel_is_eof(&c->chan) && ssh_channel_get_exit_status(c->chan.ch) >= 0)) {
        if (!ex->have && c->chan.ch && ssh_channel_get_exit_status(c->chan.ch) >= 0) {
            ex->status = ssh_channel_get_exit_status(c->chan.ch);
            ex->have = 1;
        }
        return XF_OK;
    }
    return XF_AGAIN;
}

void xf_chan_close(xf_end *e, xf_chan *c)
{
    (void)e;
    if (c->started) {
        sc_channel_close(&c->chan);
        sc_channel_free(&c->chan);
    }
    c->closed = 1;
}
