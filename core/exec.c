/* exec.c - one command on an exec channel: open, optional pty, exec, then a pump that writes stdin
 * as the window allows and reads stdout/stderr until EOF and the exit status. */
#include "exec.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK 65536
#define STREAM_HIGH_WATER (4 * 1024 * 1024)
#define SUDO_MAX_ANSWERS 3

enum { X_OPEN, X_PTY, X_EXEC, X_RUN, X_DONE };

typedef struct {
    sc_op op;
    sc_chanuser cu;
    ssh_channel ch;
    int phase;
    int opening; /* ssh_channel_open_session has answered AGAIN and not yet answered */
    char *cmd;
    char *stdin_data;
    size_t stdin_len, stdin_off;
    int has_stdin;
    int eof_sent;
    int pty;
    char *sudo_password;
    int sudo_answers;
    int stream;
    sc_buf out[2];
    int drained[2];
    sc_exit exit;
    double timeout;
    uv_timer_t timer;
} sc_exec;

static void exec_finish(sc_exec *x, const sc_err *err);

static void timer_closed(uv_handle_t *h)
{
    sc_exec *x = h->data;
    sc_op_release(&x->op);
}

static void on_timeout(uv_timer_t *t)
{
    sc_exec *x = t->data;
    sc_err err;
    sc_err_set(&err, SC_ETIMEDOUT, "%s: exec: timed out after %gs", x->cu.session->label,
               x->timeout);
    exec_finish(x, &err);
}

/* Looks at the last line of stdout: a sudo password prompt there is answered and removed. */
static void answer_sudo(sc_exec *x)
{
    sc_buf *b = &x->out[SC_STDOUT];
    size_t avail = sc_buf_avail(b);
    if (!x->sudo_password || avail == 0 || x->sudo_answers >= SUDO_MAX_ANSWERS)
        return;
    const char *base = b->data + b->off;
    size_t end = avail;
    while (end > 0 && base[end - 1] == ' ')
        end--;
    if (end == 0 || base[end - 1] != ':')
        return;
    size_t start = end;
    while (start > 0 && base[start - 1] != '\n')
        start--;
    int found = 0;
    for (size_t i = start; i + 8 <= end && !found; i++)
        found = strncasecmp(base + i, "password", 8) == 0;
    if (!found)
        return;
    b->len = b->off + start; /* drop the prompt from the output */
    x->sudo_answers++;
    ssh_channel_write(x->ch, x->sudo_password, (uint32_t)strlen(x->sudo_password));
    ssh_channel_write(x->ch, "\n", 1);
    sc_session_wrote(x->cu.session, strlen(x->sudo_password) + 1);
}

static void exec_write_stdin(sc_exec *x)
{
    sc_session *s = x->cu.session;
    while (x->stdin_off < x->stdin_len) {
        size_t want = x->stdin_len - x->stdin_off;
        size_t window = ssh_channel_window_size(x->ch);
        size_t budget = sc_session_write_budget(s);
        if (want > window)
            want = window;
        if (want > budget)
            want = budget;
        if (want > READ_CHUNK)
            want = READ_CHUNK;
        if (want == 0)
            return;
        int w = ssh_channel_write(x->ch, x->stdin_data + x->stdin_off, (uint32_t)want);
        if (w <= 0)
            return;
        sc_session_wrote(s, (size_t)w);
        x->stdin_off += (size_t)w;
    }
    /* with a pty and no input, keep stdin open: closing it would end an interactive command */
    if (!x->eof_sent && (x->has_stdin || !x->pty)) {
        ssh_channel_send_eof(x->ch);
        x->eof_sent = 1;
    }
}

static void exec_read(sc_exec *x)
{
    char tmp[READ_CHUNK];
    for (int which = 0; which < 2; which++) {
        for (int i = 0; i < 16 && !x->drained[which]; i++) {
            if (x->stream && sc_buf_avail(&x->out[which]) >= STREAM_HIGH_WATER)
                break;
            int n = ssh_channel_read_nonblocking(x->ch, tmp, sizeof tmp, which);
            if (n > 0) {
                if (sc_buf_append(&x->out[which], tmp, (size_t)n) < 0) {
                    sc_err err;
                    sc_err_set(&err, SC_EIO, "%s: exec: out of memory for output",
                               x->cu.session->label);
                    exec_finish(x, &err);
                    return;
                }
                if (which == SC_STDOUT)
                    answer_sudo(x);
                if (x->stream)
                    sc_op_notify(&x->op);
                continue;
            }
            if (n == SSH_EOF || (n == 0 && ssh_channel_is_eof(x->ch)) || n == SSH_ERROR)
                x->drained[which] = 1;
            break;
        }
    }
}

static void exec_service(sc_chanuser *u)
{
    sc_exec *x = (sc_exec *)((char *)u - offsetof(sc_exec, cu));
    sc_session *s = u->session;
    sc_err err;
    int rc;
    switch (x->phase) {
    case X_OPEN:
        if (!x->ch) {
            x->ch = ssh_channel_new(s->ssh);
            if (!x->ch) {
                sc_err_set(&err, SC_EIO, "%s: exec: cannot create a channel", s->label);
                exec_finish(x, &err);
                return;
            }
            s->loop->live_channels++;
            sc_exit_watch(x->ch, &x->exit);
        }
        rc = ssh_channel_open_session(x->ch);
        x->opening = rc == SSH_AGAIN;
        if (rc == SSH_AGAIN)
            return;
        if (rc != SSH_OK) {
            sc_err_set(&err, SC_ECHANNEL, "%s: exec: channel refused: %s", s->label,
                       ssh_get_error(s->ssh));
            exec_finish(x, &err);
            return;
        }
        x->phase = x->pty ? X_PTY : X_EXEC;
        /* fallthrough */
    case X_PTY:
        if (x->phase == X_PTY) {
            rc = ssh_channel_request_pty_size(x->ch, "xterm", 80, 24);
            if (rc == SSH_AGAIN)
                return;
            if (rc != SSH_OK) {
                sc_err_set(&err, SC_ECHANNEL, "%s: exec: pty refused: %s", s->label,
                           ssh_get_error(s->ssh));
                exec_finish(x, &err);
                return;
            }
            x->phase = X_EXEC;
        }
        /* fallthrough */
    case X_EXEC:
        rc = ssh_channel_request_exec(x->ch, x->cmd);
        if (rc == SSH_AGAIN)
            return;
        if (rc != SSH_OK) {
            sc_err_set(&err, SC_ECHANNEL, "%s: exec: refused: %s", s->label,
                       ssh_get_error(s->ssh));
            exec_finish(x, &err);
            return;
        }
        x->phase = X_RUN;
        /* fallthrough */
    case X_RUN:
        exec_write_stdin(x);
        exec_read(x);
        if (x->phase != X_RUN)
            return;
        if (x->drained[0] && x->drained[1] && (x->exit.have || ssh_channel_is_closed(x->ch)))
            exec_finish(x, NULL);
        return;
    default:
        return;
    }
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
    if (x->ch) {
        /* libssh keeps a freed channel until the peer's close arrives and may still call its
         * callbacks: unhook them from x, which may be freed before that */
        sc_exit_unwatch(x->ch, &x->exit);
        if (x->opening && s->state == SS_READY) {
            sc_session_bury(s, x->ch, NULL, 0, NULL, 0); /* canceled while opening */
        } else {
            if (s->ssh && ssh_channel_is_open(x->ch))
                ssh_channel_close(x->ch);
            ssh_channel_free(x->ch);
        }
        x->ch = NULL;
        s->loop->live_channels--;
    }
    uv_timer_stop(&x->timer);
    uv_close((uv_handle_t *)&x->timer, timer_closed);
    sc_op_finish(&x->op, err);
    sc_session_unref(s);
    sc_op_release(&x->op); /* last: may free x */
}

static void exec_cancel(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    sc_err err;
    sc_err_set(&err, SC_ECANCELED, "%s: exec: canceled", x->cu.session->label);
    exec_finish(x, &err);
}

static int exec_has_news(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    return sc_buf_avail(&x->out[0]) > 0 || sc_buf_avail(&x->out[1]) > 0;
}

static void exec_destroy(sc_op *op)
{
    sc_exec *x = (sc_exec *)op;
    free(x->cmd);
    free(x->stdin_data);
    if (x->sudo_password) {
        memset(x->sudo_password, 0, strlen(x->sudo_password));
        free(x->sudo_password);
    }
    sc_buf_free(&x->out[0]);
    sc_buf_free(&x->out[1]);
    free(x);
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
    if (o->stdin_data) {
        x->stdin_data = malloc(o->stdin_len ? o->stdin_len : 1);
        if (x->stdin_data)
            memcpy(x->stdin_data, o->stdin_data, o->stdin_len);
        x->stdin_len = o->stdin_len;
        x->has_stdin = 1;
    }
    x->sudo_password = sc_strdup(o->sudo_password);
    x->pty = o->pty || o->sudo_password;
    x->stream = o->stream;
    x->timeout = o->timeout;
    x->exit.status = -1;
    uv_timer_init(&s->loop->uv, &x->timer);
    x->timer.data = x;
    x->cu.service = exec_service;
    x->cu.session_lost = exec_session_lost;
    x->cu.session = s;
    sc_session_ref(s);
    if (s->state != SS_READY) {
        sc_err err;
        sc_err_set(&err, SC_ECLOSED, "%s: exec: session is not connected", s->label);
        x->phase = X_OPEN;
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
    *len = sc_buf_avail(b);
    return b->data ? b->data + b->off : "";
}

void sc_exec_take(sc_op *op, int which)
{
    sc_exec *x = (sc_exec *)op;
    sc_buf *b = &x->out[which ? 1 : 0];
    int was_full = sc_buf_avail(b) >= STREAM_HIGH_WATER;
    sc_buf_reset(b);
    if (was_full && x->phase != X_DONE)
        sc_session_kick(x->cu.session);
}

int sc_exec_status(sc_op *op) { return ((sc_exec *)op)->exit.status; }

const char *sc_exec_signal(sc_op *op) { return ((sc_exec *)op)->exit.signal; }
