/* exec.c - one command on a session channel (channel.c opens it and asks for pty, env and the
 * command), then a loop that writes stdin as the window allows and reads stdout/stderr until
 * EOF and the exit status.
 *
 * Secrets stay out of the remote command line: environment variables go as env requests, and
 * the ones the server declines (sshd accepts only AcceptEnv's names, LANG LC_* by default) go on
 * stdin, as shell-quoted `export` lines read by a short wrapper before the command starts (on a
 * pty only after the wrapper has turned echo off and said so). sudo is given a prompt of our
 * own through SUDO_PROMPT, with a random nonce: only that prompt is answered, once, and it never
 * reaches the output. */
#include "exec.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_FIRST        65536 /* the first read asks for this much; a read that fills it doubles it */
#define STREAM_HIGH_WATER (4 * 1024 * 1024)
#define NONCE_HEX         16

typedef enum {
    X_OPEN,     /* the channel is opening: pty, env, the command */
    X_PREAMBLE, /* on a pty, waiting for the env wrapper to say echo is off */
    X_RUN,      /* stdin flows, output is read */
    X_DONE,
} x_phase;

typedef struct {
    sc_op op;
    sc_chanuser cu;
    sc_channel chan;
    x_phase phase;
    char *cmd;        /* as the user gave it (NULL: the shell) */
    sc_buf in;        /* stdin still to send (the preamble first) */
    int stdin_open;   /* more input may come */
    int stdin_closed; /* no more input: EOF once `in` is empty */
    int pty;
    sc_buf env_lines; /* the env wrapper's input, when env requests were refused */
    int env_lines_count;
    char nonce[NONCE_HEX + 1];
    char ready_marker[64]; /* pty + env wrapper: "echo is off" */
    char *sudo_password;
    char sudo_prompt[64]; /* our prompt for sudo */
    int sudo_answered;
    int strip_newline; /* drop the line end sudo prints after the password */
    size_t scan_from;  /* stdout bytes already searched for the markers */
    int stream;
    size_t max_output;
    size_t drain_below; /* notify when stdin's queue falls to this (0: nobody waits) */
    int drain_wanted;
    sc_buf out[2];
    size_t ask[2]; /* the next read's size (grows towards the channel's window) */
    int drained[2];
    double timeout;
    uv_timer_t timer;
} sc_exec;

static void exec_finish(sc_exec *x, const sc_err *err);

static void exec_failf(sc_exec *x, sc_code code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void exec_failf(sc_exec *x, sc_code code, const char *reason, const char *fmt, ...)
{
    sc_session *s = x->cu.session;
    sc_err err;
    va_list ap;
    va_start(ap, fmt);
    sc_err_vformat(&err, code, s->label, s->hop, "exec", reason, fmt, ap);
    va_end(ap);
    exec_finish(x, &err);
}

static void timer_closed(uv_handle_t *h)
{
    sc_exec *x = h->data;
    sc_op_release(&x->op);
}

static void on_timeout(uv_timer_t *t)
{
    sc_exec *x = t->data;
    exec_failf(x, SC_ETIMEDOUT, "timeout", "timed out after %gs", x->timeout);
}

/* ---- the command line: sudo's prompt, and the env wrapper ---- */

/* "NAME \ooo\ooo...\n" lines for the variables the server declined: each byte of the value in
 * octal, so that only digits, backslashes, letters and spaces cross a pty's line discipline
 * (which edits ^U, ^W, DEL, turns CR into NL and sends ^C as a signal). */
static int build_env_lines(sc_exec *x, const sc_channel *c)
{
    for (int i = 0; i < c->n_env; i++) {
        const char *v = c->env[i].value;
        int bad = sc_buf_append(&x->env_lines, c->env[i].name, strlen(c->env[i].name)) < 0 ||
                  sc_buf_append(&x->env_lines, " ", 1) < 0;
        for (const unsigned char *p = (const unsigned char *)v; *p && !bad; p++) {
            char oct[5];
            snprintf(oct, sizeof oct, "\\%03o", *p);
            bad = sc_buf_append(&x->env_lines, oct, 4) < 0;
        }
        if (bad || sc_buf_append(&x->env_lines, "\n", 1) < 0)
            return -1;
        x->env_lines_count++;
    }
    return 0;
}

/* Puts data in front of what stdin still has to send. */
static int in_prepend(sc_exec *x, const char *data, size_t len)
{
    sc_buf tail = x->in;
    memset(&x->in, 0, sizeof x->in);
    int bad = sc_buf_append(&x->in, data, len) < 0 ||
              sc_buf_append(&x->in, tail.data ? tail.data + tail.off : "", sc_buf_avail(&tail)) < 0;
    if (tail.data)
        memset(tail.data, 0, tail.cap);
    sc_buf_free(&tail);
    return bad ? -1 : 0;
}

/* The command as sent: sudo's prompt set first; where env requests were refused, a wrapper that
 * reads one "NAME octal" line per variable from stdin and exports it (the shell's `read` never
 * reads past a line on a pipe, so the command's own stdin follows intact; printf decodes the
 * octal, the x kept at the end keeps a value's trailing newlines from $(...)). */
static void before_request(sc_channel *c, void *ud)
{
    sc_exec *x = ud;
    sc_buf cmd = {0};
    char line[200];
    int bad = 0;
    if (x->sudo_password) {
        snprintf(line, sizeof line, "SUDO_PROMPT='%s'; export SUDO_PROMPT; ", x->sudo_prompt);
        bad |= sc_buf_append(&cmd, line, strlen(line));
    }
    if (c->env_refused > 0) {
        bad |= build_env_lines(x, c);
        if (x->pty)
            snprintf(line, sizeof line, "stty -echo; printf '%%s\\n' '%s'; ", x->ready_marker);
        else
            line[0] = '\0';
        bad |= sc_buf_append(&cmd, line, strlen(line));
        snprintf(line, sizeof line,
                 "__sc_n=%d; while [ \"$__sc_n\" -gt 0 ] && IFS=' ' read -r __sc_k __sc_v; do "
                 "__sc_v=$(printf \"${__sc_v}x\"); export \"$__sc_k=${__sc_v%%x}\"; "
                 "__sc_n=$((__sc_n - 1)); done; unset __sc_n __sc_k __sc_v; ",
                 x->env_lines_count);
        bad |= sc_buf_append(&cmd, line, strlen(line));
        if (x->pty)
            bad |= sc_buf_append(&cmd, "stty echo; ", 11);
    }
    if (cmd.len == 0)
        return;  /* as the user wrote it */
    if (!x->cmd) /* the login shell, in place of this one */
        bad |= sc_buf_append(&cmd, "exec \"${SHELL:-/bin/sh}\" -l", 27);
    else
        bad |= sc_buf_append(&cmd, x->cmd, strlen(x->cmd));
    bad |= sc_buf_append(&cmd, "", 1);
    if (!bad) {
        if (!x->cmd)
            c->request = SC_CHAN_EXEC;
        bad = sc_channel_set_command(c, cmd.data);
    }
    sc_buf_free(&cmd);
    if (!bad && c->env_refused > 0 && !x->pty) /* before any stdin */
        bad = in_prepend(x, x->env_lines.data, x->env_lines.len);
    if (bad)
        exec_failf(x, SC_EIO, NULL, "out of memory");
}

/* ---- output ---- */

/* Finds s (len n) in the unsearched part of b (from *from), returns its offset or -1, and moves
 * *from so that a marker split across reads is still found. */
static long find_marker(const sc_buf *b, size_t *from, const char *s, size_t n)
{
    size_t avail = sc_buf_avail(b);
    const char *base = b->data + b->off;
    size_t start = *from > n ? *from - n : 0;
    for (size_t i = start; i + n <= avail; i++)
        if (memcmp(base + i, s, n) == 0)
            return (long)i;
    return -1;
}

static void cut(sc_buf *b, size_t at, size_t n)
{
    char *base = b->data + b->off;
    memmove(base + at, base + at + n, sc_buf_avail(b) - at - n);
    b->len -= n;
}

/* Looks at new stdout: the env wrapper's "echo is off" (then the exports go), sudo's prompt
 * (answered once; a second one means the password was refused). Markers are cut out. */
static void watch_stdout(sc_exec *x)
{
    sc_buf *b = &x->out[SC_STDOUT];
    if (x->strip_newline) {
        size_t avail = sc_buf_avail(b);
        const char *base = b->data + b->off;
        size_t i = x->scan_from;
        if (i < avail && base[i] == '\r')
            cut(b, i, 1), avail--;
        if (i < avail && base[i] == '\n')
            cut(b, i, 1), avail--;
        if (i < avail)
            x->strip_newline = 0;
    }
    if (x->phase == X_PREAMBLE) {
        size_t n = strlen(x->ready_marker);
        long at = find_marker(b, &x->scan_from, x->ready_marker, n);
        if (at >= 0) {
            size_t drop = n;
            const char *base = b->data + b->off;
            while ((size_t)at + drop < sc_buf_avail(b) && drop < n + 2 &&
                   (base[at + drop] == '\r' || base[at + drop] == '\n'))
                drop++;
            cut(b, (size_t)at, drop);
            in_prepend(x, x->env_lines.data, x->env_lines.len); /* before anything else */
            x->phase = X_RUN;
        }
    }
    if (x->sudo_password) {
        size_t n = strlen(x->sudo_prompt);
        long at = find_marker(b, &x->scan_from, x->sudo_prompt, n);
        if (at >= 0) {
            cut(b, (size_t)at, n);
            if (x->sudo_answered) {
                exec_failf(x, SC_EAUTH, "denied", "sudo refused the password");
                return;
            }
            x->sudo_answered = 1;
            /* first: what was queued before the prompt has been flushed by sudo */
            in_prepend(x, "\n", 1);
            in_prepend(x, x->sudo_password, strlen(x->sudo_password));
            x->strip_newline = 1;
            x->scan_from = (size_t)at;
            return;
        }
    }
    x->scan_from = sc_buf_avail(b);
}

static int exec_read(sc_exec *x)
{
    /* a stream held at its high-water mark holds the other to what libssh has already: reading
     * it with window growth would let the server send more of both, into libssh's buffers */
    int held = x->stream && (sc_buf_avail(&x->out[0]) >= STREAM_HIGH_WATER ||
                             sc_buf_avail(&x->out[1]) >= STREAM_HIGH_WATER);
    for (int which = 0; which < 2; which++) {
        sc_buf *b = &x->out[which];
        for (int i = 0; i < 16 && !x->drained[which]; i++) {
            if (x->stream && sc_buf_avail(b) >= STREAM_HIGH_WATER)
                break;
            size_t ask = x->ask[which];
            char *room = sc_buf_reserve(b, ask);
            if (!room) {
                exec_failf(x, SC_EIO, NULL, "out of memory for output");
                return -1;
            }
            int n = held ? sc_channel_read_held(&x->chan, room, ask, which)
                         : sc_channel_read(&x->chan, room, ask, which);
            if (n > 0) {
                sc_buf_commit(b, (size_t)n);
                if ((size_t)n == ask && ask < SC_EXEC_WINDOW)
                    x->ask[which] = ask * 2; /* a big output: let the window grow */
                if (which == SC_STDOUT && (x->sudo_password || x->phase == X_PREAMBLE)) {
                    watch_stdout(x);
                    if (x->phase == X_DONE)
                        return -1;
                }
                if (!x->stream && x->max_output && sc_buf_avail(b) > x->max_output) {
                    exec_failf(x, SC_EIO, "limit",
                               "%s passed max_output (%zu bytes): stream it with on_%s",
                               which ? "stderr" : "stdout", x->max_output,
                               which ? "stderr" : "stdout");
                    return -1;
                }
                if (x->stream)
                    sc_op_notify(&x->op);
                continue;
            }
            if (n != SC_CHAN_AGAIN)
                x->drained[which] = 1;
            break;
        }
    }
    return 0;
}

/* ---- input ---- */

static void exec_write_stdin(sc_exec *x)
{
    while (sc_buf_avail(&x->in) > 0) {
        long w = sc_channel_write(&x->chan, x->in.data + x->in.off, sc_buf_avail(&x->in));
        if (w <= 0)
            break;
        sc_buf_consume(&x->in, (size_t)w);
    }
    if (x->drain_wanted && sc_buf_avail(&x->in) <= x->drain_below) {
        x->drain_wanted = 0;
        sc_op_notify(&x->op);
    }
    if (sc_buf_avail(&x->in) > 0)
        return;
    if (x->stdin_closed)
        sc_channel_send_eof(&x->chan);
}

/* ---- the service round ---- */

static void exec_service(sc_chanuser *u)
{
    sc_exec *x = (sc_exec *)((char *)u - offsetof(sc_exec, cu));
    if (x->phase == X_OPEN) {
        sc_err err;
        int r = sc_channel_step(&x->chan, "exec", &err);
        if (x->phase == X_DONE)
            return; /* before_request failed */
        if (r < 0) {
            exec_finish(x, &err);
            return;
        }
        if (r == 0)
            return;
        x->phase = x->chan.env_refused > 0 && x->pty ? X_PREAMBLE : X_RUN;
    }
    if (x->phase == X_RUN)
        exec_write_stdin(x);
    if (exec_read(x) < 0)
        return;
    if (x->phase == X_RUN)
        exec_write_stdin(x); /* what the reads queued (sudo's answer, the exports) */
    if (x->drained[0] && x->drained[1] && (x->chan.exit.have || sc_channel_is_closed(&x->chan)))
        exec_finish(x, NULL);
}

static void exec_session_lost(sc_chanuser *u, const sc_err *why)
{
    sc_exec *x = (sc_exec *)((char *)u - offsetof(sc_exec, cu));
    exec_finish(x, why);
}

/* Ends the command (err NULL: it completed); releases the channel and the core's reference. */
static void exec_finish(sc_exec *x, const sc_err *err)
{
    if (x->phase == X_DONE)
        return;
    x->phase = X_DONE;
    sc_session *s = x->cu.session;
    sc_session_detach(&x->cu);
    sc_channel_close(&x->chan);
    uv_timer_stop(&x->timer);
    uv_close((uv_handle_t *)&x->timer, timer_closed);
    sc_op_finish(&x->op, err);
    sc_session_unref(s);
    sc_op_release(&x->op); /* last: may free x */
}

static void exec_cancel(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    exec_failf(x, SC_ECANCELED, NULL, "canceled");
}

/* Bytes at the end of stdout that may be the start of a marker still watched for (sudo's
 * prompt, the env wrapper's "echo is off"): held back from the embedder until the next read
 * says, so that a marker split across reads is never handed over in part. */
static size_t held_back(sc_exec *x, int which)
{
    if (which != SC_STDOUT || x->phase == X_DONE)
        return 0;
    const char *marks[2] = {x->sudo_password ? x->sudo_prompt : NULL,
                            x->phase == X_PREAMBLE || x->phase == X_OPEN ? x->ready_marker : NULL};
    const sc_buf *b = &x->out[SC_STDOUT];
    size_t avail = sc_buf_avail(b), held = 0;
    const char *base = b->data + b->off;
    for (int m = 0; m < 2; m++) {
        if (!marks[m])
            continue;
        size_t n = strlen(marks[m]);
        for (size_t k = n - 1; k > held; k--)
            if (k <= avail && memcmp(base + avail - k, marks[m], k) == 0) {
                held = k;
                break;
            }
    }
    return held;
}

static int exec_has_news(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    return sc_buf_avail(&x->out[0]) > held_back(x, SC_STDOUT) || sc_buf_avail(&x->out[1]) > 0;
}

static void wipe(sc_buf *b)
{
    if (b->data)
        memset(b->data, 0, b->cap);
    sc_buf_free(b);
}

static void exec_destroy(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    sc_channel_free(&x->chan);
    free(x->cmd);
    wipe(&x->in);
    wipe(&x->env_lines);
    if (x->sudo_password) {
        memset(x->sudo_password, 0, strlen(x->sudo_password));
        free(x->sudo_password);
    }
    sc_buf_free(&x->out[0]);
    sc_buf_free(&x->out[1]);
    free(x);
}

static void make_nonce(char out[NONCE_HEX + 1])
{
    unsigned char r[NONCE_HEX / 2];
    if (RAND_bytes(r, sizeof r) != 1) {
        double t = sc_loop_now();
        memcpy(r, &t, sizeof r < sizeof t ? sizeof r : sizeof t);
    }
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

sc_op *sc_exec_start(sc_session *s, const sc_exec_opts *o)
{
    sc_exec *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    sc_op_init(&x->op, s->loop, "exec");
    x->op.cancel = exec_cancel;
    x->op.destroy = exec_destroy;
    x->op.has_news = exec_has_news;
    x->op.refs += 2; /* the core's while running, the timer's until its handle closes */
    x->cmd = sc_strdup(o->cmd);
    x->pty = o->pty || o->sudo_password;
    x->stream = o->stream;
    x->max_output = o->max_output;
    x->timeout = o->timeout;
    x->ask[0] = x->ask[1] = READ_FIRST;
    x->stdin_open = o->stdin_open;
    /* with a pty and no input, stdin stays open: closing it would end an interactive command */
    x->stdin_closed = !o->stdin_open && (o->stdin_data || !x->pty);
    make_nonce(x->nonce);
    snprintf(x->ready_marker, sizeof x->ready_marker, "[sshchain env %s]", x->nonce);
    if (o->sudo_password) {
        x->sudo_password = sc_strdup(o->sudo_password);
        snprintf(x->sudo_prompt, sizeof x->sudo_prompt, "[sshchain sudo %s]", x->nonce);
    }
    uv_timer_init(&s->loop->uv, &x->timer);
    x->timer.data = x;
    x->cu.service = exec_service;
    x->cu.session_lost = exec_session_lost;
    x->cu.session = s;
    sc_session_ref(s);
    sc_chan_opts co = {
        .request = o->cmd         ? SC_CHAN_EXEC
                   : o->subsystem ? SC_CHAN_SUBSYSTEM
                                  : SC_CHAN_SHELL,
        .what = o->cmd ? o->cmd : o->subsystem,
        .pty = x->pty,
        .term = o->term,
        .cols = o->cols,
        .rows = o->rows,
        .env = o->env,
        .n_env = o->n_env,
        .window = SC_EXEC_WINDOW,
        .before_request = before_request,
        .ud = x,
    };
    int bad = sc_channel_init(&x->chan, s, &co) < 0 || (o->cmd && !x->cmd) ||
              (o->sudo_password && !x->sudo_password) ||
              (o->stdin_data && sc_buf_append(&x->in, o->stdin_data, o->stdin_len) < 0);
    if (bad || s->state != SS_READY) {
        sc_err err;
        if (bad)
            sc_err_format(&err, SC_EIO, s->label, s->hop, "exec", NULL, "out of memory");
        else
            sc_err_format(&err, SC_ECLOSED, s->label, s->hop, "exec", "lost",
                          "session is not connected");
        exec_finish(x, &err);
        return &x->op;
    }
    if (o->timeout > 0)
        sc_timer_start(&x->timer, on_timeout, (uint64_t)(o->timeout * 1000.0), 0);
    sc_session_attach(s, &x->cu);
    sc_session_kick(s);
    return &x->op;
}

const char *sc_exec_output(sc_op *op, int which, size_t *len)
{
    sc_exec *x = (sc_exec *)op;
    sc_buf *b = &x->out[which ? 1 : 0];
    *len = sc_buf_avail(b) - held_back(x, which ? 1 : 0);
    return b->data ? b->data + b->off : "";
}

void sc_exec_take(sc_op *op, int which)
{
    sc_exec *x = (sc_exec *)op;
    which = which ? 1 : 0;
    sc_buf *b = &x->out[which];
    int was_full = sc_buf_avail(b) >= STREAM_HIGH_WATER;
    size_t n = sc_buf_avail(b) - held_back(x, which);
    sc_buf_consume(b, n);
    if (which == SC_STDOUT)
        x->scan_from = x->scan_from > n ? x->scan_from - n : 0;
    if (was_full && x->phase != X_DONE)
        sc_session_kick(x->cu.session);
}

void sc_exec_drop_output(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    sc_buf_free(&x->out[0]);
    sc_buf_free(&x->out[1]);
}

int sc_exec_status(sc_op *op) { return ((sc_exec *)op)->chan.exit.status; }

const char *sc_exec_signal(sc_op *op) { return ((sc_exec *)op)->chan.exit.signal; }

int sc_exec_write(sc_op *op, const char *data, size_t len)
{
    sc_exec *x = (sc_exec *)op;
    if (x->phase == X_DONE || x->stdin_closed || !x->stdin_open)
        return -1;
    if (sc_buf_append(&x->in, data, len) < 0)
        return -1;
    sc_session_kick(x->cu.session);
    return 0;
}

size_t sc_exec_pending_input(sc_op *op) { return sc_buf_avail(&((sc_exec *)op)->in); }

void sc_exec_notify_drain(sc_op *op, size_t below)
{
    sc_exec *x = (sc_exec *)op;
    x->drain_below = below;
    x->drain_wanted = 1;
    if (sc_buf_avail(&x->in) <= below || x->phase == X_DONE) {
        x->drain_wanted = 0;
        sc_op_notify(op);
    }
}

void sc_exec_close_stdin(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    if (x->phase == X_DONE || x->stdin_closed)
        return;
    x->stdin_closed = 1;
    sc_session_kick(x->cu.session);
}

void sc_exec_resize(sc_op *op, int cols, int rows)
{
    sc_exec *x = (sc_exec *)op;
    if (x->phase != X_DONE)
        sc_channel_resize(&x->chan, cols, rows);
}

void sc_exec_signal_send(sc_op *op, const char *name)
{
    sc_exec *x = (sc_exec *)op;
    if (x->phase != X_DONE)
        sc_channel_signal(&x->chan, name);
}
