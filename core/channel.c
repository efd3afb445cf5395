/* channel.c - the channel layer (see channel.h): open, requests, reads that grow the window,
 * clamped writes, the watch (data, EOF, exit), and the one close. */
#include "channel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITE_CAP 65536 /* bytes per write: what one round hands libssh for one channel */

/* ---- the watch: libssh's callbacks only record facts (data buffered, EOF, how it ended) ---- */

static void on_exit_status(ssh_session session, ssh_channel channel, int status, void *ud)
{
    (void)session;
    (void)channel;
    sc_exit *ex = &((sc_channel *)ud)->exit;
    ex->status = status;
    ex->have = 1;
}

static void on_eof(ssh_session session, ssh_channel channel, void *ud)
{
    (void)session;
    (void)channel;
    ((sc_channel *)ud)->remote_eof = 1;
}

static void on_close(ssh_session session, ssh_channel channel, void *ud)
{
    (void)session;
    (void)channel;
    ((sc_channel *)ud)->remote_closed = 1;
}

static int on_data(ssh_session session, ssh_channel channel, void *data, uint32_t len,
                   int is_stderr, void *ud)
{
    (void)session;
    (void)channel;
    sc_channel *c = ud;
    size_t took = 0;
    if (!is_stderr && c->take && c->state == SC_CHAN_OPEN) {
        took = c->take(c, data, len, c->take_ud);
        c->taken += took;
    }
    if (took < len)
        c->rx_maybe[is_stderr ? 1 : 0] = 1; /* the rest stays in libssh's buffer for the reads */
    return (int)took;
}

static void on_exit_signal(ssh_session session, ssh_channel channel, const char *signal, int core,
                           const char *errmsg, const char *lang, void *ud)
{
    (void)session;
    (void)channel;
    (void)core;
    (void)errmsg;
    (void)lang;
    sc_exit *ex = &((sc_channel *)ud)->exit;
    sc_sanitize(ex->signal, sizeof ex->signal, signal);
    ex->have = 1;
}

static void watch(sc_channel *c)
{
    ssh_callbacks_init(&c->cb);
    c->cb.userdata = c;
    c->cb.channel_data_function = on_data;
    c->cb.channel_eof_function = on_eof;
    c->cb.channel_close_function = on_close;
    c->cb.channel_exit_status_function = on_exit_status;
    c->cb.channel_exit_signal_function = on_exit_signal;
    ssh_set_channel_callbacks(c->ch, &c->cb);
    c->watched = 1;
    c->rx_maybe[0] = c->rx_maybe[1] = 1;
}

/* ---- channels given up while their open was pending ---- */

/* Each one is a user of its session until the server has answered the open; then it is closed
 * and freed. A session that goes away frees them with itself. */
typedef struct {
    sc_chanuser cu;
    ssh_channel ch;
    char *to_host, *orig_host;
    int to_port, orig_port, to_unix;
} sc_burial;

static void burial_free(sc_burial *b)
{
    sc_session_detach(&b->cu);
    ssh_channel_free(b->ch);
    free(b->to_host);
    free(b->orig_host);
    free(b);
}

/* The open of a channel: a session, direct-tcpip, or direct-streamlocal (to a socket path). */
static int open_call(ssh_channel ch, const char *to_host, int to_port, int to_unix,
                     const char *orig_host, int orig_port)
{
    if (!to_host)
        return ssh_channel_open_session(ch);
    if (to_unix)
        return ssh_channel_open_forward_unix(ch, to_host, orig_host, orig_port);
    return ssh_channel_open_forward(ch, to_host, to_port, orig_host, orig_port);
}

static void burial_service(sc_chanuser *u)
{
    sc_burial *b = (sc_burial *)u;
    int rc = open_call(b->ch, b->to_host, b->to_port, b->to_unix, b->orig_host, b->orig_port);
    if (rc == SSH_AGAIN)
        return;
    if (rc == SSH_OK)
        ssh_channel_close(b->ch);
    burial_free(b);
}

static void burial_session_lost(sc_chanuser *u, const sc_err *why)
{
    (void)why;
    burial_free((sc_burial *)u);
}

static void bury(sc_channel *c)
{
    sc_session *s = c->session;
    sc_burial *b = calloc(1, sizeof *b);
    if (!b || s->state != SS_READY) {
        free(b);
        ssh_channel_free(c->ch);
        return;
    }
    b->ch = c->ch;
    b->to_host = c->to_host; /* taken over */
    b->orig_host = c->orig_host;
    b->to_port = c->to_port;
    b->orig_port = c->orig_port;
    b->to_unix = c->to_unix;
    c->to_host = c->orig_host = NULL;
    b->cu.service = burial_service;
    b->cu.session_lost = burial_session_lost;
    sc_session_attach(s, &b->cu);
    sc_session_kick(s);
}

/* ---- set up ---- */

int sc_channel_init(sc_channel *c, sc_session *s, const sc_chan_opts *o)
{
    memset(c, 0, sizeof *c);
    c->session = s;
    c->exit.status = -1;
    c->to_port = o->to_port;
    c->orig_port = o->orig_port;
    c->request = o->request;
    c->pty = o->pty;
    snprintf(c->term, sizeof c->term, "%s", o->term && *o->term ? o->term : "xterm");
    c->cols = o->cols > 0 ? o->cols : 80;
    c->rows = o->rows > 0 ? o->rows : 24;
    c->window = o->window;
    c->before_request = o->before_request;
    c->ud = o->ud;
    if (o->to_host) {
        c->to_unix = o->to_unix;
        c->to_host = sc_strdup(o->to_host);
        c->orig_host = sc_strdup(o->orig_host ? o->orig_host : "127.0.0.1");
        if (!c->to_host || !c->orig_host)
            return -1;
    }
    if (o->what && !(c->what = sc_strdup(o->what)))
        return -1;
    if (o->n_env > 0) {
        c->env = calloc((size_t)o->n_env, sizeof *c->env);
        if (!c->env)
            return -1;
        for (int i = 0; i < o->n_env; i++) {
            c->env[i].name = sc_strdup(o->env[i].name);
            c->env[i].value = sc_strdup(o->env[i].value);
            c->n_env++;
            if (!c->env[i].name || !c->env[i].value)
                return -1;
        }
    }
    return 0;
}

int sc_channel_set_command(sc_channel *c, const char *what)
{
    char *w = sc_strdup(what);
    if (!w)
        return -1;
    free(c->what);
    c->what = w;
    return 0;
}

void sc_channel_adopt(sc_channel *c, sc_session *s, ssh_channel ch, uint32_t window)
{
    memset(c, 0, sizeof *c);
    c->session = s;
    c->ch = ch;
    c->exit.status = -1;
    c->window = window;
    c->state = SC_CHAN_OPEN;
    c->counted = 1;
    s->loop->live_channels++;
    watch(c);
}

/* The failures of sc_channel_step: "LABEL: STAGE: detail", or the detail alone when the user
 * gives no stage (a pump: its owner says where it was). */
static const char *label_for(sc_channel *c, const char *stage)
{
    return stage ? c->session->label : NULL;
}

/* what: "channel" (the open: reason "channel refused", as MaxSessions refuses), else the
 * request that was refused ("pty", "env", "command", "subsystem sftp": "request refused"). */
/* libssh's "Channel opening failure: channel N error (CODE) TEXT" with the RFC 4254 reason code
 * said in words, into buf. */
static const char *decode_open_failure(const char *e, char *buf, size_t cap)
{
    static const char *const reasons[] = {NULL, "administratively prohibited", "connect failed",
                                          "unknown channel type", "resource shortage"};
    unsigned code = 0;
    if (!e || sscanf(e, "Channel opening failure: channel %*u error (%u)", &code) != 1 ||
        code < 1 || code > 4)
        return e;
    snprintf(buf, cap, "%s [%s]", e, reasons[code]);
    return buf;
}

static int refused(sc_channel *c, const char *stage, sc_err *err, const char *what)
{
    sc_session *s = c->session;
    char decoded[1100];
    const char *e = decode_open_failure(ssh_get_error(s->ssh), decoded, sizeof decoded);
    if (c->to_host && c->to_unix)
        sc_err_format(err, SC_ECHANNEL, label_for(c, stage), s->hop, stage, "channel refused",
                      "channel to socket %s refused by hop %d: %s", c->to_host, s->hop,
                      e && *e ? e : "open failed");
    else if (c->to_host)
        sc_err_format(err, SC_ECHANNEL, label_for(c, stage), s->hop, stage, "channel refused",
                      "channel to %s:%d refused by hop %d: %s", c->to_host, c->to_port, s->hop,
                      e && *e ? e : "open failed");
    else
        sc_err_format(err, SC_ECHANNEL, label_for(c, stage), s->hop, stage,
                      strcmp(what, "channel") == 0 ? "channel refused" : "request refused",
                      "%s refused: %s", what, e && *e ? e : "request failed");
    return -1;
}

int sc_channel_step(sc_channel *c, const char *stage, sc_err *err)
{
    sc_session *s = c->session;
    int rc;
    if (c->state == SC_CHAN_OPEN)
        return 1;
    if (c->state == SC_CHAN_CLOSED || s->state != SS_READY || !s->ssh) {
        sc_err_format(err, SC_ECLOSED, label_for(c, stage), s->hop, stage, "lost",
                      "%s is not connected", s->label);
        return -1;
    }
    switch (c->state) {
    case SC_CHAN_IDLE:
        c->ch = ssh_channel_new(s->ssh);
        if (!c->ch) {
            sc_err_format(err, SC_EIO, label_for(c, stage), s->hop, stage, NULL,
                          "cannot create a channel on %s", s->label);
            return -1;
        }
        c->counted = 1;
        s->loop->live_channels++;
        watch(c);
        c->state = SC_CHAN_OPENING;
        /* fallthrough */
    case SC_CHAN_OPENING:
        rc = open_call(c->ch, c->to_host, c->to_port, c->to_unix, c->orig_host, c->orig_port);
        c->pending = rc == SSH_AGAIN;
        if (rc == SSH_AGAIN)
            return 0;
        if (rc != SSH_OK)
            return refused(c, stage, err, "channel");
        /* ForwardAgent: asked for on every command channel (no reply is wanted) */
        if (!c->to_host && (c->request == SC_CHAN_EXEC || c->request == SC_CHAN_SHELL) &&
            s->spec.forward_agent && s->spec.agent != 0 &&
            (s->spec.agent_sock || getenv("SSH_AUTH_SOCK")))
            ssh_channel_request_auth_agent(c->ch); /* not for sftp/scp subsystems, as ssh */
        c->state = c->pty ? SC_CHAN_PTY : SC_CHAN_ENV;
        /* fallthrough */
    case SC_CHAN_PTY:
        if (c->state == SC_CHAN_PTY) {
            rc = ssh_channel_request_pty_size(c->ch, c->term, c->cols, c->rows);
            if (rc == SSH_AGAIN)
                return 0;
            if (rc != SSH_OK)
                return refused(c, stage, err, "pty");
            c->state = SC_CHAN_ENV;
        }
        /* fallthrough */
    case SC_CHAN_ENV:
        while (c->env_next < c->n_env) {
            struct sc_chan_env *v = &c->env[c->env_next];
            rc = ssh_channel_request_env(c->ch, v->name, v->value);
            if (rc == SSH_AGAIN)
                return 0;
            if (rc != SSH_OK) {
                if (ssh_channel_is_closed(c->ch) || !ssh_is_connected(s->ssh))
                    return refused(c, stage, err, "env");
                c->env_refused++; /* AcceptEnv said no: the user decides what then */
            }
            c->env_next++;
        }
        c->state = SC_CHAN_REQUEST;
        if (c->before_request) {
            c->before_request(c, c->ud);
            if (c->state == SC_CHAN_CLOSED) /* the user gave up (and said why) */
                return -1;
        }
        /* fallthrough */
    case SC_CHAN_REQUEST:
        switch (c->request) {
        case SC_CHAN_EXEC:
            rc = ssh_channel_request_exec(c->ch, c->what);
            break;
        case SC_CHAN_SHELL:
            rc = ssh_channel_request_shell(c->ch);
            break;
        case SC_CHAN_SUBSYSTEM:
            rc = ssh_channel_request_subsystem(c->ch, c->what);
            break;
        default:
            rc = SSH_OK;
            break;
        }
        if (rc == SSH_AGAIN)
            return 0;
        if (rc != SSH_OK) {
            char what[80];
            if (c->request == SC_CHAN_SUBSYSTEM)
                snprintf(what, sizeof what, "subsystem %s", c->what);
            else
                snprintf(what, sizeof what, "%s",
                         c->request == SC_CHAN_SHELL ? "shell" : "command");
            return refused(c, stage, err, what);
        }
        c->state = SC_CHAN_OPEN;
        return 1;
    default:
        return 1;
    }
}

/* ---- data ---- */

/* libssh calls every channel closed once the session's socket has ended, which a channel may see
 * first, reading in the middle of a round: that is the session's loss, not the peer's close
 * (unless the peer's close came first: then the channel ended as it should). The session's next
 * round says so, for all its channels and its children first, naming the hop; until then its
 * channels wait. */
static int session_gone(const sc_channel *c)
{
    ssh_session ss = c->session->ssh;
    if (!ss || c->remote_closed ||
        (ssh_is_connected(ss) && !(ssh_get_status(ss) & (SSH_CLOSED | SSH_CLOSED_ERROR))))
        return 0;
    sc_session_kick(c->session);
    return 1;
}

static int chan_read(sc_channel *c, void *buf, size_t len, int is_stderr, int grow)
{
    if (!c->ch || c->state != SC_CHAN_OPEN)
        return SC_CHAN_ERROR;
    uint32_t ask = len > 0x7fffffff ? 0x7fffffff : (uint32_t)len;
    if (c->window && ask > c->window)
        ask = c->window;
    int *maybe = &c->rx_maybe[is_stderr ? 1 : 0];
    int regrow = grow && !is_stderr && c->taken > 0;
    if (!c->watched || *maybe || regrow) {
        if (regrow)
            c->taken = 0;
        /* ssh_channel_read_nonblocking reads at most what is buffered, which never grows the
         * window; a zero-timeout read asking for `ask` grows it to `ask` when less than that is
         * granted */
        int n = grow ? ssh_channel_read_timeout(c->ch, buf, ask, is_stderr, 0)
                     : ssh_channel_read_nonblocking(c->ch, buf, ask, is_stderr);
        /* a read may queue a window adjust, perhaps on another session's round (a copy): have
         * it sent when this session's socket takes it */
        sc_session_wrote(c->session, 0);
        if (n < 0)
            return session_gone(c) ? SC_CHAN_AGAIN : SC_CHAN_ERROR;
        if ((uint32_t)n < ask)
            *maybe = 0; /* drained: until the callback hears of more */
        if (n > 0)
            return n;
    }
    /* nothing was buffered for this stream: it has ended once the peer sent EOF (the callback
     * says so; ssh_channel_is_eof also waits for the other stream to be read) */
    if (c->remote_eof || ssh_channel_is_eof(c->ch))
        return SC_CHAN_EOF;
    if (ssh_channel_is_closed(c->ch))
        return session_gone(c) ? SC_CHAN_AGAIN : SC_CHAN_ERROR;
    return SC_CHAN_AGAIN;
}

int sc_channel_read(sc_channel *c, void *buf, size_t len, int is_stderr)
{
    return chan_read(c, buf, len, is_stderr, 1);
}

int sc_channel_read_held(sc_channel *c, void *buf, size_t len, int is_stderr)
{
    return chan_read(c, buf, len, is_stderr, 0);
}

size_t sc_channel_writable(sc_channel *c)
{
    if (!c->ch || c->state != SC_CHAN_OPEN || ssh_channel_is_closed(c->ch))
        return 0;
    size_t n = ssh_channel_window_size(c->ch);
    size_t budget = sc_session_write_budget(c->session);
    if (n > budget)
        n = budget;
    return n > WRITE_CAP ? WRITE_CAP : n;
}

long sc_channel_write(sc_channel *c, const void *buf, size_t len)
{
    if (!c->ch || c->state != SC_CHAN_OPEN)
        return -1;
    if (ssh_channel_is_closed(c->ch))
        return session_gone(c) ? 0 : -1;
    size_t n = sc_channel_writable(c);
    if (len < n)
        n = len;
    if (n == 0)
        return 0;
    int w = ssh_channel_write(c->ch, buf, (uint32_t)n);
    if (w < 0)
        return session_gone(c) ? 0 : -1;
    sc_session_wrote(c->session, (size_t)w);
    return w;
}

void sc_channel_send_eof(sc_channel *c)
{
    if (c->eof_sent || !c->ch || c->state != SC_CHAN_OPEN)
        return;
    c->eof_sent = 1;
    if (!ssh_channel_is_closed(c->ch)) {
        ssh_channel_send_eof(c->ch);
        sc_session_wrote(c->session, 0);
    }
}

int sc_channel_is_eof(const sc_channel *c) { return !c->ch || ssh_channel_is_eof(c->ch); }

int sc_channel_is_closed(const sc_channel *c)
{
    return !c->ch || c->state == SC_CHAN_CLOSED ||
           (ssh_channel_is_closed(c->ch) && !session_gone(c));
}

void sc_channel_resize(sc_channel *c, int cols, int rows)
{
    c->cols = cols;
    c->rows = rows;
    if (c->ch && c->state == SC_CHAN_OPEN && c->pty && !ssh_channel_is_closed(c->ch)) {
        ssh_channel_change_pty_size(c->ch, cols, rows);
        sc_session_wrote(c->session, 0);
    }
}

void sc_channel_signal(sc_channel *c, const char *name)
{
    if (c->ch && c->state == SC_CHAN_OPEN && !ssh_channel_is_closed(c->ch)) {
        ssh_channel_request_send_signal(c->ch, name);
        sc_session_wrote(c->session, 0);
    }
}

/* ---- the way out ---- */

void sc_channel_close(sc_channel *c)
{
    if (c->state == SC_CHAN_CLOSED)
        return;
    sc_session *s = c->session;
    int was_pending = c->state == SC_CHAN_OPENING && c->pending;
    c->state = SC_CHAN_CLOSED;
    if (!c->ch)
        return;
    /* libssh keeps a freed channel until the peer's close arrives and may still call its
     * callbacks: unhook them from memory that goes with the user */
    if (c->watched)
        ssh_remove_channel_callbacks(c->ch, &c->cb);
    if (was_pending && s->state == SS_READY) {
        bury(c);
    } else {
        if (s->ssh && ssh_channel_is_open(c->ch))
            ssh_channel_close(c->ch);
        ssh_channel_free(c->ch);
    }
    c->ch = NULL;
    if (c->counted) {
        c->counted = 0;
        s->loop->live_channels--;
    }
    if (s->state == SS_READY)
        sc_session_wrote(s, 0); /* the close goes out when the socket takes it */
}

void sc_channel_free(sc_channel *c)
{
    free(c->to_host);
    free(c->orig_host);
    free(c->what);
    for (int i = 0; i < c->n_env; i++) {
        if (c->env[i].value) {
            memset(c->env[i].value, 0, strlen(c->env[i].value));
            free(c->env[i].value);
        }
        free(c->env[i].name);
    }
    free(c->env);
    c->to_host = c->orig_host = c->what = NULL;
    c->env = NULL;
    c->n_env = 0;
}
