#define _GNU_SOURCE
/* forward.c - local forwards and SOCKS5: a listening socket served by the loop; each accepted
 * connection gets a pump to a direct-tcpip channel of the session (for SOCKS, after the client has
 * named its destination). A refused destination closes that one connection and is queued as an
 * error for the embedder; the forward goes on. */
#include "forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listener.h"
#include "pump.h"
#include "socks5.h"

#define MAX_QUEUED_ERRORS 32
#define ACCEPTS_PER_EVENT 64

typedef struct fwd_conn fwd_conn;

/* A remote forward's state: asking the server to listen, listening, asking it to stop. */
typedef enum { R_REQUEST, R_LISTEN, R_CANCEL } remote_phase;

/* A SOCKS client's handshake: its greeting, its request, done (pumped). */
typedef enum { SOCKS_GREETING, SOCKS_REQUEST, SOCKS_PUMPING } socks_phase;

typedef struct {
    sc_op op;
    sc_chanuser cu;
    char *bind, *to_host;
    char *path, *to_path; /* Unix sockets: where it listens (absolute); where connections go */
    dev_t sock_dev;       /* the socket file it made: only that one is removed at the end */
    ino_t sock_ino;
    char from[300]; /* where it listens, for messages: "bind:port" or the path */
    int to_port, socks, port;
    int remote, listen_news;
    remote_phase phase;
    int lfd; /* local listener (not for remote forwards) */
    uv_poll_t lpoll;
    int closing;
    fwd_conn *conns;
    int active;
    long accepted;
    sc_err errors[MAX_QUEUED_ERRORS];
    int err_head, nerr;
    sc_err taken;
} sc_forward;

enum { H_NONE, H_OPEN, H_CLOSING };

struct fwd_conn {
    sc_forward *fw;
    fwd_conn *prev, *next;
    int fd;
    char peer[64];
    int peer_port;
    sc_pump *pump;
    /* SOCKS handshake */
    socks_phase socks_phase;
    uv_poll_t poll;
    int poll_state;
    int dead;
    unsigned char buf[512];
    size_t len;
    char dest[256];
    int dest_port;
};

/* Queues a connection's failure for the embedder (the oldest goes when the queue is full). */
static void queue_error(sc_forward *fw, sc_code code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void queue_error(sc_forward *fw, sc_code code, const char *reason, const char *fmt, ...)
{
    int slot = (fw->err_head + fw->nerr) % MAX_QUEUED_ERRORS;
    if (fw->nerr == MAX_QUEUED_ERRORS)
        fw->err_head = (fw->err_head + 1) % MAX_QUEUED_ERRORS; /* drop the oldest */
    else
        fw->nerr++;
    sc_session *s = fw->cu.session;
    va_list ap;
    va_start(ap, fmt);
    sc_err_vformat(&fw->errors[slot], code, s->label, s->hop, "forward", reason, fmt, ap);
    va_end(ap);
    sc_op_notify(&fw->op);
}

static void conn_free(fwd_conn *c) { free(c); }

/* Adds a new client connection to its forward's list (conn_close takes it out). */
static void conn_link(fwd_conn *c)
{
    sc_forward *fw = c->fw;
    c->next = fw->conns;
    if (fw->conns)
        fw->conns->prev = c;
    fw->conns = c;
    fw->active++;
    fw->accepted++;
}

static void conn_poll_closed(uv_handle_t *h)
{
    fwd_conn *c = h->data;
    c->poll_state = H_NONE;
    if (c->dead)
        conn_free(c);
}

static void conn_stop_poll(fwd_conn *c)
{
    if (c->poll_state == H_OPEN) {
        uv_poll_stop(&c->poll);
        uv_close((uv_handle_t *)&c->poll, conn_poll_closed);
        c->poll_state = H_CLOSING;
    }
}

/* Unlinks and closes one client connection (its pump, or its fd during a SOCKS handshake). */
static void conn_close(fwd_conn *c)
{
    sc_forward *fw = c->fw;
    if (c->dead)
        return;
    c->dead = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        fw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    fw->active--;
    conn_stop_poll(c);
    if (c->pump) {
        sc_pump *p = c->pump;
        c->pump = NULL;
        sc_pump_close(p); /* closes the fd */
    } else if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    if (c->poll_state == H_NONE)
        conn_free(c);
}

static void send_all(int fd, const void *p, size_t n) { (void)send(fd, p, n, MSG_NOSIGNAL); }

static const char *dest_host(fwd_conn *c) { return c->fw->socks ? c->dest : c->fw->to_host; }
static int dest_port(fwd_conn *c) { return c->fw->socks ? c->dest_port : c->fw->to_port; }

/* "host:port", or the socket path, of where a connection goes */
static const char *dest_name(fwd_conn *c, char *buf, size_t len)
{
    if (c->fw->to_path)
        return c->fw->to_path;
    snprintf(buf, len, "%s:%d", dest_host(c), dest_port(c));
    return buf;
}

static void conn_opened(sc_pump *p, void *ud)
{
    (void)p;
    fwd_conn *c = ud;
    if (c->fw->socks) {
        static const unsigned char ok[10] = {5, 0, 0, 1, 0, 0, 0, 0, 0, 0};
        send_all(c->fd, ok, sizeof ok);
    }
}

static void conn_failed(sc_pump *p, const sc_err *err, void *ud)
{
    (void)p;
    fwd_conn *c = ud;
    sc_forward *fw = c->fw;
    if (fw->socks) {
        static const unsigned char refused[10] = {5, 5, 0, 1, 0, 0, 0, 0, 0, 0};
        send_all(c->fd, refused, sizeof refused);
    }
    char dest[300];
    if (fw->path)
        queue_error(fw, err->code, err->reason, "%s -> %s: %s", fw->from,
                    dest_name(c, dest, sizeof dest), err->msg);
    else
        queue_error(fw, err->code, err->reason, "%s -> %s (client %s:%d): %s", fw->from,
                    dest_name(c, dest, sizeof dest), c->peer, c->peer_port, err->msg);
    conn_close(c);
}

static void conn_finished(sc_pump *p, void *ud)
{
    (void)p;
    conn_close(ud);
}

static const sc_pump_events conn_events = {conn_opened, conn_failed, conn_finished};

/* early: what the client sent after its SOCKS request, before any answer (pipelining, TCP Fast
 * Open): it goes first once the channel is open */
static void conn_start_pump(fwd_conn *c, const void *early, size_t early_len)
{
    sc_forward *fw = c->fw;
    int fd = c->fd;
    if (fw->to_path)
        c->pump = sc_pump_open_unix(fw->cu.session, fd, fw->to_path, &conn_events, c);
    else
        c->pump = sc_pump_open(fw->cu.session, fd, dest_host(c), dest_port(c), c->peer,
                               c->peer_port, &conn_events, c);
    if (!c->pump || (early_len && sc_pump_preload(c->pump, early, early_len) < 0)) {
        queue_error(fw, SC_EIO, NULL, "out of memory");
        conn_close(c);
    }
}

/* SOCKS5 (RFC 1928), no authentication, CONNECT only: greeting, then the request (socks5.c). */
static void socks_reply_fail(fwd_conn *c, unsigned char rep)
{
    unsigned char r[10] = {5, rep, 0, 1, 0, 0, 0, 0, 0, 0};
    send_all(c->fd, r, sizeof r);
    conn_close(c);
}

static void socks_step(fwd_conn *c)
{
    size_t used = 0;
    if (c->socks_phase == SOCKS_GREETING) {
        int noauth = 0;
        socks5_result r = socks5_parse_greeting(c->buf, c->len, &used, &noauth);
        if (r == SOCKS5_MORE)
            return;
        if (r == SOCKS5_BAD) {
            conn_close(c);
            return;
        }
        unsigned char reply[2] = {5, noauth ? 0 : 0xff};
        send_all(c->fd, reply, 2);
        if (!noauth) {
            conn_close(c);
            return;
        }
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        c->socks_phase = SOCKS_REQUEST;
    }
    int rep;
    socks5_result r =
        socks5_parse_request(c->buf, c->len, &used, c->dest, sizeof c->dest, &c->dest_port, &rep);
    if (r == SOCKS5_MORE)
        return;
    if (r == SOCKS5_BAD) {
        if (rep == 0xff)
            conn_close(c);
        else
            socks_reply_fail(c, (unsigned char)rep);
        return;
    }
    c->socks_phase = SOCKS_PUMPING;
    conn_stop_poll(c);
    conn_start_pump(c, c->buf + used, c->len - used);
}

static void on_socks_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    fwd_conn *c = h->data;
    if (c->dead || c->socks_phase == SOCKS_PUMPING)
        return;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 || c->len + (size_t)n >= sizeof c->buf) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    socks_step(c);
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    sc_forward *fw = h->data;
    for (int i = 0; i < ACCEPTS_PER_EVENT && !fw->closing; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(fw->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        fwd_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            return;
        }
        c->fw = fw;
        c->fd = fd;
        if (ss.ss_family == AF_UNIX) {
            /* the socket is 0600; a client that is another user anyway (the mode changed since,
             * or a socket passed on) is turned away */
            struct ucred cred;
            socklen_t cl = sizeof cred;
            if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.uid != getuid()) {
                queue_error(fw, SC_EIO, "peer",
                            "%s: a connection from uid %d turned away (not ours)", fw->from,
                            cl == sizeof cred ? (int)cred.uid : -1);
                close(fd);
                free(c);
                continue;
            }
            snprintf(c->peer, sizeof c->peer, "127.0.0.1"); /* a direct-tcpip needs an origin */
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, c->peer, sizeof c->peer);
            c->peer_port = ntohs(a->sin6_port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, c->peer, sizeof c->peer);
            c->peer_port = ntohs(a->sin_port);
        }
        conn_link(c);
        if (fw->socks) {
            if (uv_poll_init(&fw->op.loop->uv, &c->poll, fd) != 0) {
                conn_close(c);
                continue;
            }
            c->poll.data = c;
            c->poll_state = H_OPEN;
            uv_poll_start(&c->poll, UV_READABLE, on_socks_readable);
        } else {
            conn_start_pump(c, NULL, 0);
        }
    }
}

static void listener_closed(uv_handle_t *h)
{
    sc_forward *fw = h->data;
    sc_op_release(&fw->op); /* the core's reference */
}

/* The forward is over: completes the op (err NULL: closed on purpose), drops the core's reference. */
static void forward_done(sc_forward *fw, const sc_err *err)
{
    sc_session *s = fw->cu.session;
    if (s->global_owner == fw) {
        s->global_busy = 0;
        s->global_owner = NULL;
    }
    sc_session_detach(&fw->cu);
    while (fw->conns)
        conn_close(fw->conns);
    sc_op_finish(&fw->op, err);
    if (fw->remote) {
        sc_op_release(&fw->op);
        return;
    }
    uv_poll_stop(&fw->lpoll);
    close(fw->lfd);
    fw->lfd = -1;
    struct stat st;
    if (fw->path && lstat(fw->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_dev == fw->sock_dev && st.st_ino == fw->sock_ino)
        unlink(fw->path); /* ours, made by make_unix_listener, and not replaced since */
    uv_close((uv_handle_t *)&fw->lpoll, listener_closed);
}

/* Stops accepting and closes every connection; a remote forward first asks the server to stop
 * listening. */
static void forward_close(sc_forward *fw, const sc_err *err)
{
    if (fw->closing)
        return;
    fw->closing = 1;
    while (fw->conns)
        conn_close(fw->conns);
    if (fw->remote && fw->phase == R_LISTEN && !err && fw->cu.session->state == SS_READY) {
        fw->phase = R_CANCEL;
        sc_session_kick(fw->cu.session);
        return;
    }
    forward_done(fw, err);
}

/* Remote forwards: the tcpip-forward and cancel-tcpip-forward global requests, one at a time per
 * session (libssh tracks a single pending global request; keepalives use it too). */
static void forward_service(sc_chanuser *u)
{
    sc_forward *fw = (sc_forward *)((char *)u - offsetof(sc_forward, cu));
    sc_session *s = u->session;
    if (!fw->remote || fw->phase == R_LISTEN)
        return;
    if (s->global_busy && s->global_owner != fw)
        return;
    s->global_busy = 2;
    s->global_owner = fw;
    int bound = 0, rc;
    if (fw->phase == R_REQUEST)
        rc = ssh_channel_listen_forward(s->ssh, fw->bind, fw->port, &bound);
    else
        rc = ssh_channel_cancel_forward(s->ssh, fw->bind, fw->port);
    if (rc == SSH_AGAIN)
        return;
    s->global_busy = 0;
    s->global_owner = NULL;
    if (fw->phase == R_CANCEL) {
        forward_done(fw, NULL);
        return;
    }
    if (rc != SSH_OK) {
        sc_err err;
        sc_err_format(&err, SC_ECHANNEL, s->label, s->hop, "forward", "request refused",
                      "remote forward %s:%d: refused by the server: %s", fw->bind, fw->port,
                      ssh_get_error(s->ssh));
        fw->closing = 1;
        forward_done(fw, &err);
        return;
    }
    if (fw->port == 0)
        fw->port = bound;
    snprintf(fw->from, sizeof fw->from, "%s:%d", fw->bind, fw->port);
    fw->phase = R_LISTEN;
    fw->listen_news = 1;
    sc_op_notify(&fw->op);
}

/* Opens a non-blocking TCP connection to host:port (numeric, or "localhost"); -1 on failure. */
static int connect_local(const char *host, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    int family = AF_INET;
    socklen_t sl = sizeof(struct sockaddr_in);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0) {
        if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
            return -1;
        family = AF_INET6;
        sl = sizeof(struct sockaddr_in6);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A channel the server opens: a remote forward's connection when it is forwarded-tcpip to our
 * port (1: taken, accepted or refused; 0: not ours). */
static int forward_incoming(sc_chanuser *u, ssh_message msg)
{
    sc_forward *fw = (sc_forward *)((char *)u - offsetof(sc_forward, cu));
    sc_session *s = u->session;
    if (ssh_message_subtype(msg) != SSH_CHANNEL_FORWARDED_TCPIP)
        return 0;
    int port = ssh_message_channel_request_open_destination_port(msg);
    {
        if (!fw->remote || fw->phase != R_LISTEN || fw->closing || fw->port != port)
            return 0;
        const char *orig = ssh_message_channel_request_open_originator(msg);
        int orig_port = ssh_message_channel_request_open_originator_port(msg);
        int fd =
            fw->to_path ? sc_connect_unix(fw->to_path) : connect_local(fw->to_host, fw->to_port);
        if (fd < 0) {
            char dest[300];
            if (fw->to_path)
                snprintf(dest, sizeof dest, "%s", fw->to_path);
            else
                snprintf(dest, sizeof dest, "%s:%d", fw->to_host, fw->to_port);
            queue_error(fw, SC_ECONNECT, NULL, "remote forward %d -> %s: %s", fw->port, dest,
                        strerror(errno));
            ssh_message_reply_default(msg);
            return 1;
        }
        ssh_channel ch = ssh_message_channel_request_open_reply_accept(msg);
        if (!ch) {
            close(fd);
            return 1;
        }
        fwd_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            ssh_channel_free(ch);
            return 1;
        }
        c->fw = fw;
        c->fd = fd;
        sc_sanitize(c->peer, sizeof c->peer, orig ? orig : "?");
        c->peer_port = orig_port;
        conn_link(c);
        c->pump = sc_pump_attach(s, ch, fd, &conn_events, c);
        if (!c->pump) {
            ssh_channel_free(ch);
            conn_close(c);
        }
        return 1;
    }
}

static void forward_session_lost(sc_chanuser *u, const sc_err *why)
{
    sc_forward *fw = (sc_forward *)((char *)u - offsetof(sc_forward, cu));
    fw->closing = 1;
    forward_done(fw, why);
}

static void forward_cancel(sc_op *op) { forward_close((sc_forward *)op, NULL); }

static void forward_destroy(sc_op *op)
{
    sc_forward *fw = (sc_forward *)op;
    free(fw->bind);
    free(fw->to_host);
    free(fw->path);
    free(fw->to_path);
    free(fw);
}

sc_op *sc_forward_start(sc_session *s, const sc_forward_opts *o, sc_err *err)
{
    if (s->state != SS_READY) {
        sc_err_format(err, SC_ECLOSED, s->label, s->hop, "forward", "lost",
                      "session is not connected");
        return NULL;
    }
    const char *bind_addr = o->bind ? o->bind : "127.0.0.1";
    int port = o->port, lfd = -1;
    if (o->path && o->remote) {
        sc_err_format(err, SC_EIO, s->label, s->hop, "forward", NULL,
                      "remote Unix-socket forwards are not supported");
        return NULL;
    }
    if (o->listener && !o->remote) { /* a kept listener: serve a dup of its socket */
        lfd = fcntl(sc_listener_fd(o->listener), F_DUPFD_CLOEXEC, 0);
        port = sc_listener_port(o->listener);
        if (lfd < 0)
            sc_err_format(err, SC_EIO, s->label, s->hop, "forward", NULL, "listener: %s",
                          sc_listener_fd(o->listener) < 0 ? "closed" : strerror(errno));
    } else if (!o->remote && o->path) {
        lfd = sc_listen_unix(o->path, err);
    } else if (!o->remote) {
        lfd = sc_listen_tcp(bind_addr, o->port, &port, err);
    }
    if (!o->remote && lfd < 0)
        return NULL;
    sc_forward *fw = calloc(1, sizeof *fw);
    if (!fw) {
        if (lfd >= 0)
            close(lfd);
        if (o->path && !o->listener)
            unlink(o->path);
        sc_err_format(err, SC_EIO, s->label, s->hop, "forward", NULL, "out of memory");
        return NULL;
    }
    sc_op_init(&fw->op, s->loop, "forward");
    fw->op.cancel = forward_cancel;
    fw->op.destroy = forward_destroy;
    fw->op.has_news = sc_forward_has_errors;
    fw->op.refs++; /* the core's, until the listener's handle has closed */
    fw->bind = sc_strdup(bind_addr);
    fw->to_host = sc_strdup(o->to_host ? o->to_host : "");
    fw->to_port = o->to_port;
    fw->path = o->path && !o->listener ? sc_absolute_path(o->path) : NULL; /* the file it removes */
    struct stat st;
    if (fw->path && lstat(fw->path, &st) == 0) {
        fw->sock_dev = st.st_dev;
        fw->sock_ino = st.st_ino;
    }
    fw->to_path = o->to_path ? sc_strdup(o->to_path) : NULL;
    if (o->listener && sc_listener_path(o->listener))
        snprintf(fw->from, sizeof fw->from, "%s", sc_listener_path(o->listener));
    else if (fw->path)
        snprintf(fw->from, sizeof fw->from, "%s", fw->path);
    else
        snprintf(fw->from, sizeof fw->from, "%s:%d", bind_addr, port);
    fw->socks = o->socks;
    fw->port = o->path || (o->listener && sc_listener_path(o->listener)) ? 0 : port;
    fw->lfd = lfd;
    fw->remote = o->remote;
    fw->phase = R_REQUEST;
    if (!fw->remote) {
        uv_poll_init(&s->loop->uv, &fw->lpoll, lfd);
        fw->lpoll.data = fw;
        uv_poll_start(&fw->lpoll, UV_READABLE, on_accept);
    }
    fw->cu.incoming = forward_incoming;
    fw->cu.service = forward_service;
    fw->cu.session_lost = forward_session_lost;
    sc_session_attach(s, &fw->cu);
    if (fw->remote)
        sc_session_kick(s);
    return &fw->op;
}

int sc_forward_port(sc_op *op) { return ((sc_forward *)op)->port; }

int sc_forward_has_errors(sc_op *op)
{
    sc_forward *fw = (sc_forward *)op;
    return fw->nerr > 0 || fw->listen_news;
}

int sc_forward_take_listening(sc_op *op)
{
    sc_forward *fw = (sc_forward *)op;
    int was = fw->listen_news;
    fw->listen_news = 0;
    return was || fw->phase == R_LISTEN;
}

const sc_err *sc_forward_take_error(sc_op *op)
{
    sc_forward *fw = (sc_forward *)op;
    if (fw->nerr == 0)
        return NULL;
    fw->taken = fw->errors[fw->err_head];
    fw->err_head = (fw->err_head + 1) % MAX_QUEUED_ERRORS;
    fw->nerr--;
    return &fw->taken;
}

void sc_forward_counts(sc_op *op, int *active, long *accepted)
{
    sc_forward *fw = (sc_forward *)op;
    *active = fw->active;
    *accepted = fw->accepted;
}
