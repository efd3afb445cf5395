/* session.c - the session state machine: resolve, TCP connect (or a hop channel on the parent),
 * handshake, host key, auth, then service rounds for the channels that use the session.
 *
 * Nothing here blocks: every step is retried when the session's fd is ready or when something
 * kicks the session, and each connect has a deadline. libssh is driven with zero-timeout calls. */
#include "session.h"

#include "pump.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVICE_READS_PER_ROUND 64
#define WRITE_QUEUE_LIMIT (512 * 1024)
#define PREFERRED_CIPHERS                                                                          \
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,"    \
    "aes192-ctr,aes256-ctr"

typedef struct {
    sc_op op;
} sc_connect_op;

static void connect_op_destroy(sc_op *op) { free(op); }

static void session_advance(sc_session *s);
static void session_teardown(sc_session *s, sc_sstate final, const sc_err *why);

void sc_hostspec_free(sc_hostspec *spec)
{
    free(spec->host);
    free(spec->user);
    if (spec->password) {
        memset(spec->password, 0, strlen(spec->password));
        free(spec->password);
    }
    if (spec->passphrase) {
        memset(spec->passphrase, 0, strlen(spec->passphrase));
        free(spec->passphrase);
    }
    for (int i = 0; i < spec->n_identities; i++)
        free(spec->identities[i]);
    free(spec->identities);
    free(spec->known_hosts);
    memset(spec, 0, sizeof *spec);
}

static void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int session_alive(const sc_session *s) { return s->state < SS_FAILED; }

static void session_fail_err(sc_session *s, const sc_err *err) { session_teardown(s, SS_FAILED, err); }

static void session_fail(sc_session *s, sc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void session_fail(sc_session *s, sc_code code, const char *fmt, ...)
{
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    sc_err err;
    sc_err_set(&err, code, "%s: %s", s->label, detail);
    session_fail_err(s, &err);
}

/* poll */

static void on_poll(uv_poll_t *h, int status, int events);

static void session_update_poll(sc_session *s)
{
    if (!session_alive(s) || s->fd < 0)
        return;
    int want;
    if (s->state == SS_TCP) {
        want = UV_WRITABLE;
    } else if (s->ssh) {
        want = UV_READABLE;
        if (ssh_get_poll_flags(s->ssh) & SSH_WRITE_PENDING)
            want |= UV_WRITABLE;
    } else {
        return;
    }
    if (want != s->poll_events) {
        uv_poll_start(&s->poll, want, on_poll);
        s->poll_events = want;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)events;
    sc_session *s = h->data;
    (void)status; /* errors surface through the next read or SO_ERROR */
    sc_session_ref(s);
    session_advance(s);
    sc_session_unref(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    sc_session *s = h->data;
    if (--s->handles_open == 0 && s->refs == 0) {
        sc_hostspec_free(&s->spec);
        free(s);
    }
}

/* kicks */

void sc_session_kick(sc_session *s)
{
    if (s->kicked || !session_alive(s))
        return;
    s->kicked = 1;
    sc_session_ref(s);
    s->next_kicked = s->loop->kicked;
    s->loop->kicked = s;
    sc_loop_want_idle(s->loop);
}

void sc_session_run_kicked(sc_loop *loop)
{
    sc_session *list = loop->kicked;
    loop->kicked = NULL;
    while (list) {
        sc_session *s = list;
        list = s->next_kicked;
        s->next_kicked = NULL;
        s->kicked = 0;
        if (session_alive(s))
            session_advance(s);
        sc_session_unref(s);
    }
}

/* users of the session's channels */

void sc_session_attach(sc_session *s, sc_chanuser *u)
{
    u->session = s;
    u->attached = 1;
    u->next = s->users;
    s->users = u;
}

void sc_session_detach(sc_chanuser *u)
{
    if (!u->attached)
        return;
    u->attached = 0;
    sc_chanuser **pp = &u->session->users;
    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp)
        *pp = u->next;
    u->next = NULL;
}

static void on_exit_status(ssh_session session, ssh_channel channel, int status, void *ud)
{
    (void)session;
    (void)channel;
    sc_exit *ex = ud;
    ex->status = status;
    ex->have = 1;
}

static void on_exit_signal(ssh_session session, ssh_channel channel, const char *signal, int core,
                           const char *errmsg, const char *lang, void *ud)
{
    (void)session;
    (void)channel;
    (void)core;
    (void)errmsg;
    (void)lang;
    sc_exit *ex = ud;
    sc_sanitize(ex->signal, sizeof ex->signal, signal);
    ex->have = 1;
}

void sc_exit_watch(ssh_channel ch, sc_exit *ex)
{
    ex->status = -1;
    ssh_callbacks_init(&ex->cb);
    ex->cb.userdata = ex;
    ex->cb.channel_exit_status_function = on_exit_status;
    ex->cb.channel_exit_signal_function = on_exit_signal;
    ssh_set_channel_callbacks(ch, &ex->cb);
}

void sc_exit_unwatch(ssh_channel ch, sc_exit *ex) { ssh_remove_channel_callbacks(ch, &ex->cb); }

int sc_channel_read(ssh_channel ch, void *buf, uint32_t len, int is_stderr)
{
    /* ssh_channel_read_nonblocking reads at most what is buffered, which never grows the window;
     * a zero-timeout read asking for len grows it to len when less than that is granted */
    int n = ssh_channel_read_timeout(ch, buf, len, is_stderr, 0);
    if (n != 0)
        return n < 0 ? SSH_ERROR : n;
    if (ssh_channel_is_eof(ch))
        return SSH_EOF;
    if (ssh_channel_is_closed(ch))
        return SSH_ERROR;
    return 0;
}

size_t sc_session_write_budget(sc_session *s)
{
    if (!s->ssh || !session_alive(s))
        return 0;
    if (!(ssh_get_poll_flags(s->ssh) & SSH_WRITE_PENDING))
        s->write_queued = 0;
    return s->write_queued >= WRITE_QUEUE_LIMIT ? 0 : WRITE_QUEUE_LIMIT - s->write_queued;
}

void sc_session_wrote(sc_session *s, size_t n)
{
    s->write_queued += n;
    session_update_poll(s);
}

struct sc_burial {
    ssh_channel ch;
    char *host, *orig_host;
    int port, orig_port;
    struct sc_burial *next;
};

static void burial_free(struct sc_burial *b)
{
    ssh_channel_free(b->ch);
    free(b->host);
    free(b->orig_host);
    free(b);
}

void sc_session_bury(sc_session *s, ssh_channel ch, const char *host, int port,
                     const char *orig_host, int orig_port)
{
    struct sc_burial *b = calloc(1, sizeof *b);
    if (!b || !session_alive(s) || !s->ssh) {
        free(b);
        ssh_channel_free(ch);
        return;
    }
    b->ch = ch;
    b->host = sc_strdup(host);
    b->orig_host = sc_strdup(orig_host);
    b->port = port;
    b->orig_port = orig_port;
    b->next = s->buried;
    s->buried = b;
    sc_session_kick(s);
}

/* Finishes the opens of buried channels; the ones answered are closed and freed. */
static void session_bury_round(sc_session *s)
{
    struct sc_burial **pp = &s->buried;
    while (*pp) {
        struct sc_burial *b = *pp;
        int rc = b->host ? ssh_channel_open_forward(b->ch, b->host, b->port, b->orig_host, b->orig_port)
                         : ssh_channel_open_session(b->ch);
        if (rc == SSH_AGAIN) {
            pp = &b->next;
            continue;
        }
        if (rc == SSH_OK)
            ssh_channel_close(b->ch);
        *pp = b->next;
        burial_free(b);
    }
}

/* service round of a ready session: read what arrived, then advance every channel user */
static void session_serve(sc_session *s)
{
    for (int i = 0; i < SERVICE_READS_PER_ROUND; i++) {
        uint64_t before = s->rx.in_bytes;
        ssh_execute_message_callbacks(s->ssh);
        if (s->rx.in_bytes == before)
            break;
    }
    if (!ssh_is_connected(s->ssh) || (ssh_get_status(s->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR))) {
        const char *why = ssh_get_error(s->ssh);
        session_fail(s, SC_ECLOSED, "connection lost: %s", why && *why ? why : "closed by peer");
        return;
    }
    if (s->buried)
        session_bury_round(s);
    if (s->probe && ssh_channel_open_x11(s->probe, "127.0.0.1", 0) != SSH_AGAIN) {
        ssh_channel_free(s->probe); /* the keepalive probe was answered (refused, as meant) */
        s->probe = NULL;
    }
    uint64_t rx0 = s->rx.in_bytes;
    s->servicing = 1;
    sc_chanuser *next;
    for (sc_chanuser *u = s->users; u; u = next) {
        next = u->next;
        u->service(u);
        if (!session_alive(s))
            return;
    }
    s->servicing = 0;
    if (s->rx.in_bytes != rx0)
        sc_session_kick(s); /* more arrived while serving: another round */
}

static void session_ready(sc_session *s);

static void session_advance(sc_session *s)
{
    sc_err err;
    switch (s->state) {
    case SS_TCP: {
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            soerr = errno;
        if (soerr == EINPROGRESS || soerr == EALREADY)
            return;
        if (soerr != 0) {
            session_fail(s, SC_ECONNECT, "connect: %s", strerror(soerr));
            return;
        }
        s->state = SS_HANDSHAKE;
        s->stage = "handshake";
        s->t_connected = sc_loop_now();
    }
        /* fallthrough */
    case SS_HANDSHAKE: {
        s->lib_fd_given = 1;
        int rc = ssh_connect(s->ssh);
        set_nonblocking(s->fd); /* libssh makes a socket blocking once it sees it connected */
        if (rc == SSH_AGAIN)
            break;
        if (rc != SSH_OK) {
            const char *e = ssh_get_error(s->ssh);
            session_fail(s, SC_ECONNECT, "handshake: %s", e && *e ? e : "connection closed");
            return;
        }
        s->t_handshake = sc_loop_now();
        const char *banner = ssh_get_serverbanner(s->ssh);
        sc_sanitize(s->banner, sizeof s->banner, banner ? banner : "");
        s->stage = "host key";
        if (sc_hostkey_check(s, &err) != 0) {
            session_fail_err(s, &err);
            return;
        }
        s->state = SS_AUTH;
        s->stage = "auth";
    }
        /* fallthrough */
    case SS_AUTH: {
        int r = sc_auth_step(s, &err);
        if (r < 0) {
            session_fail_err(s, &err);
            return;
        }
        if (r == 0)
            break;
        session_ready(s);
        if (!session_alive(s))
            return;
    }
        /* fallthrough */
    case SS_READY:
        session_serve(s);
        break;
    default:
        return;
    }
    session_update_poll(s);
}

/* deadlines and keepalives */

static void on_deadline(uv_timer_t *t)
{
    sc_session *s = t->data;
    if (s->state >= SS_READY)
        return;
    session_fail(s, SC_ETIMEDOUT, "%s: timed out after %gs", s->stage, s->spec.timeout);
}

static void on_keepalive(uv_timer_t *t)
{
    sc_session *s = t->data;
    if (s->state != SS_READY)
        return;
    if (s->rx.in_bytes == s->rx_seen) {
        if (++s->keepalive_misses >= 3) {
            session_fail(s, SC_ECLOSED, "keepalive: no answer for %gs",
                         s->spec.keepalive * s->keepalive_misses);
            return;
        }
    } else {
        s->keepalive_misses = 0;
        s->rx_seen = s->rx.in_bytes;
    }
    /* The probe: a channel of a type sshd refuses at once ("x11" from a client), so the answer
     * is a round trip; keepalive@openssh.com would share libssh's single pending-global-request
     * slot with remote forwards. Whatever arrives counts as life. */
    if (!s->probe) {
        s->probe = ssh_channel_new(s->ssh);
        if (s->buried)
        session_bury_round(s);
    if (s->probe && ssh_channel_open_x11(s->probe, "127.0.0.1", 0) != SSH_AGAIN) {
            ssh_channel_free(s->probe);
            s->probe = NULL;
        }
    }
    session_update_poll(s);
}

/* libssh hands queued requests from the server to this callback (else they would be refused by
 * ssh_execute_message_callbacks): forwarded-tcpip channels go to the remote forwards. */
static int on_message(ssh_session ssh, ssh_message msg, void *ud)
{
    (void)ssh;
    sc_session *s = ud;
    if (ssh_message_type(msg) == SSH_REQUEST_CHANNEL_OPEN &&
        ssh_message_subtype(msg) == SSH_CHANNEL_FORWARDED_TCPIP && sc_forward_incoming(s, msg))
        return 0; /* handled */
    return 1;     /* refused */
}

static void session_ready(sc_session *s)
{
    s->t_ready = sc_loop_now();
    s->state = SS_READY;
    s->stage = "ready";
    ssh_set_message_callback(s->ssh, on_message, s);
    uv_timer_stop(&s->timer);
    sc_auth_cleanup(s);
    if (s->connect_op) {
        sc_op *op = s->connect_op;
        s->connect_op = NULL;
        sc_op_finish(op, NULL);
        sc_op_release(op);
    }
    if (s->spec.keepalive > 0) {
        uint64_t ms = (uint64_t)(s->spec.keepalive * 1000.0);
        if (ms < 10)
            ms = 10;
        s->rx_seen = s->rx.in_bytes;
        sc_timer_start(&s->keepalive_timer, on_keepalive, ms, ms);
    }
}

/* handshake start: fd is connected (TCP, or the child end of a hop socketpair) */

/* libssh closes the fd it was given on some error paths, and not on others: it gets a duplicate
 * of its own (s->lib_fd), so that the fd the loop polls (s->fd) stays ours to close. */
static int session_begin_handshake(sc_session *s, int fd)
{
    s->fd = fd;
    set_nonblocking(fd);
    s->ssh = ssh_new();
    s->lib_fd = dup(fd);
    if (!s->ssh || s->lib_fd < 0) {
        session_fail(s, SC_EIO, "handshake: %s", s->ssh ? strerror(errno) : "out of memory");
        return -1;
    }
    bool no = false;
    unsigned int port = (unsigned int)s->spec.port;
    long timeout = 0;
    ssh_options_set(s->ssh, SSH_OPTIONS_PROCESS_CONFIG, &no);
    ssh_options_set(s->ssh, SSH_OPTIONS_HOST, s->spec.host);
    ssh_options_set(s->ssh, SSH_OPTIONS_PORT, &port);
    ssh_options_set(s->ssh, SSH_OPTIONS_USER, s->spec.user);
    ssh_options_set(s->ssh, SSH_OPTIONS_TIMEOUT, &timeout);
    /* AES-GCM first: with AES-NI it costs a fraction of ChaCha20-Poly1305's CPU, which matters
     * when one process decrypts every layer of a chain */
    ssh_options_set(s->ssh, SSH_OPTIONS_CIPHERS_C_S, PREFERRED_CIPHERS);
    ssh_options_set(s->ssh, SSH_OPTIONS_CIPHERS_S_C, PREFERRED_CIPHERS);
    if (s->spec.known_hosts)
        ssh_options_set(s->ssh, SSH_OPTIONS_KNOWNHOSTS, s->spec.known_hosts);
    ssh_options_set(s->ssh, SSH_OPTIONS_FD, &s->lib_fd);
    ssh_set_counters(s->ssh, &s->rx, &s->tx);
    ssh_set_blocking(s->ssh, 0);
    if (s->poll_events < 0 && uv_poll_init(&s->loop->uv, &s->poll, fd) == 0) {
        s->poll.data = s;
        s->handles_open++;
        s->poll_events = 0;
    }
    s->state = SS_HANDSHAKE;
    s->stage = "handshake";
    return 0;
}

/* A hop: the pump on the parent has opened the direct-tcpip channel; the child's socket is one end
 * of a socketpair, the pump moves the other end's bytes through the channel. */
static void hop_opened(sc_pump *p, void *ud)
{
    sc_session *child = ud;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        session_fail(child, SC_EIO, "hop channel: socketpair: %s", strerror(errno));
        return;
    }
    sc_pump_set_fd(p, sv[0]);
    child->t_connected = sc_loop_now();
    if (session_begin_handshake(child, sv[1]) == 0)
        sc_session_kick(child);
}

static void hop_failed(sc_pump *p, const sc_err *err, void *ud)
{
    (void)p;
    sc_session *child = ud;
    sc_err e;
    sc_err_set(&e, err->code, "%s: %s", child->label, err->msg);
    session_fail_err(child, &e);
}

static const sc_pump_events hop_events = {hop_opened, hop_failed, NULL};

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    sc_session *s = req->data;
    s->gai_pending = 0;
    if (!session_alive(s)) {
        uv_freeaddrinfo(res);
        sc_session_unref(s);
        return;
    }
    if (status < 0 || !res) {
        session_fail(s, SC_ECONNECT, "resolve: %s", uv_strerror(status));
        uv_freeaddrinfo(res);
        sc_session_unref(s);
        return;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    uv_freeaddrinfo(res);
    if (fd < 0) {
        session_fail(s, SC_ECONNECT, "connect: %s", strerror(err));
        sc_session_unref(s);
        return;
    }
    s->stage = "connect";
    if (session_begin_handshake(s, fd) == 0) {
        s->state = SS_TCP;
        s->stage = "connect";
        session_update_poll(s);
    }
    sc_session_unref(s);
}

sc_session *sc_session_start(sc_loop *loop, sc_session *parent, sc_hostspec *spec, sc_op **opp)
{
    sc_session *s = calloc(1, sizeof *s);
    sc_connect_op *cop = calloc(1, sizeof *cop);
    if (!s || !cop) {
        free(s);
        free(cop);
        return NULL;
    }
    s->loop = loop;
    s->refs = 1;
    s->spec = *spec;
    memset(spec, 0, sizeof *spec);
    s->fd = -1;
    s->lib_fd = -1;
    s->poll_events = -1;
    if (!s->spec.user) {
        struct passwd *pw = getpwuid(getuid());
        s->spec.user = sc_strdup(pw ? pw->pw_name : "root");
    }
    if (s->spec.port <= 0)
        s->spec.port = 22;
    if (s->spec.timeout <= 0)
        s->spec.timeout = 30;
    s->hop = parent ? parent->hop + 1 : 1;
    s->t_start = sc_loop_now();
    snprintf(s->label, sizeof s->label, "hop %d %s@%s:%d", s->hop, s->spec.user, s->spec.host,
             s->spec.port);
    s->stage = "connect";

    uv_timer_init(&loop->uv, &s->timer);
    uv_timer_init(&loop->uv, &s->keepalive_timer);
    s->timer.data = s->keepalive_timer.data = s;
    s->handles_open = 2;

    sc_op_init(&cop->op, loop, "connect");
    cop->op.destroy = connect_op_destroy;
    cop->op.refs++; /* the session's reference, released when the connect completes */
    s->connect_op = &cop->op;
    *opp = &cop->op;
    loop->live_sessions++;

    sc_timer_start(&s->timer, on_deadline, (uint64_t)(s->spec.timeout * 1000.0), 0);

    if (parent) {
        s->parent = parent;
        sc_session_ref(parent);
        s->next_sibling = parent->first_child;
        parent->first_child = s;
        s->state = SS_HOP_OPEN;
        s->stage = "hop channel";
        if (!session_alive(parent)) {
            session_fail(s, SC_ECLOSED, "hop channel: hop %d is closed", parent->hop);
            return s;
        }
        s->pump = sc_pump_open(parent, -1, s->spec.host, s->spec.port, "127.0.0.1", 0, &hop_events, s);
        if (!s->pump) {
            session_fail(s, SC_EIO, "hop channel: out of memory");
            return s;
        }
        sc_pump_set_window(s->pump, SC_HOP_WINDOW);
        sc_session_kick(parent);
        return s;
    }

    s->state = SS_RESOLVING;
    s->stage = "resolve";
    char port[16];
    snprintf(port, sizeof port, "%d", s->spec.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    s->gai.data = s;
    sc_session_ref(s); /* the resolver's reference */
    s->gai_pending = 1;
    int rc = uv_getaddrinfo(&loop->uv, &s->gai, on_resolved, s->spec.host, port, &hints);
    if (rc < 0) {
        s->gai_pending = 0;
        session_fail(s, SC_ECONNECT, "resolve: %s", uv_strerror(rc));
        sc_session_unref(s);
    }
    return s;
}

static void unlink_child(sc_session *child)
{
    sc_session *p = child->parent;
    if (!p)
        return;
    sc_session **pp = &p->first_child;
    while (*pp && *pp != child)
        pp = &(*pp)->next_sibling;
    if (*pp)
        *pp = child->next_sibling;
    child->next_sibling = NULL;
    child->parent = NULL;
    sc_session_unref(p);
}

static void session_teardown(sc_session *s, sc_sstate final, const sc_err *why)
{
    if (!session_alive(s)) {
        if (final == SS_CLOSED)
            s->state = SS_CLOSED;
        return;
    }
    s->state = final;
    s->fail = *why;
    s->loop->live_sessions--;

    /* children first: they ride on this session's connection */
    sc_err cerr;
    sc_session *c;
    while ((c = s->first_child) != NULL) {
        if (final == SS_CLOSED)
            sc_err_set(&cerr, SC_ECLOSED, "%s: closed with hop %d", c->label, s->hop);
        else
            sc_err_set(&cerr, SC_ECLOSED, "%s: hop %d failed: %s", c->label, s->hop, why->msg);
        session_teardown(c, final, &cerr);
        if (s->first_child == c) /* teardown did not unlink it (it was already down) */
            unlink_child(c);
    }

    if (s->connect_op) {
        sc_op *op = s->connect_op;
        s->connect_op = NULL;
        sc_op_finish(op, why);
        sc_op_release(op);
    }
    sc_chanuser *u;
    while ((u = s->users) != NULL) {
        sc_session_detach(u);
        u->session_lost(u, why);
    }
    if (s->pump) {
        sc_pump_close(s->pump);
        s->pump = NULL;
    }
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->keepalive_timer);
    if (s->poll_events >= 0)
        uv_poll_stop(&s->poll);
    sc_auth_cleanup(s);
    if (s->probe) {
        ssh_channel_free(s->probe);
        s->probe = NULL;
    }
    while (s->buried) {
        struct sc_burial *b = s->buried;
        s->buried = b->next;
        burial_free(b);
    }
    if (s->ssh) {
        /* ssh_disconnect never closes a given fd; libssh may have closed it already (then -1) */
        int lib_fd = s->lib_fd_given ? ssh_get_fd(s->ssh) : s->lib_fd;
        ssh_disconnect(s->ssh);
        ssh_free(s->ssh);
        s->ssh = NULL;
        if (lib_fd >= 0)
            close(lib_fd);
    } else if (s->lib_fd >= 0) {
        close(s->lib_fd);
    }
    s->lib_fd = -1;
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->gai_pending)
        uv_cancel((uv_req_t *)&s->gai);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->keepalive_timer, on_handle_closed);
    if (s->poll_events >= 0)
        uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    unlink_child(s);
}

void sc_session_close(sc_session *s)
{
    sc_err err;
    sc_err_set(&err, SC_ECLOSED, "%s: session closed", s->label);
    session_teardown(s, SS_CLOSED, &err);
}

void sc_session_ref(sc_session *s) { s->refs++; }

void sc_session_unref(sc_session *s)
{
    if (--s->refs > 0)
        return;
    if (session_alive(s)) {
        s->refs++; /* keep it while tearing down */
        sc_session_close(s);
        s->refs--;
    }
    if (s->handles_open == 0) {
        sc_hostspec_free(&s->spec);
        free(s);
    }
}
