/* session.c - the session state machine: resolve, TCP connect (or a hop channel on the parent),
 * handshake, host key, auth, then service rounds for the channels that use the session.
 *
 * Nothing here blocks: every step is retried when the session's fd is ready or when something
 * kicks the session, and each connect has a deadline. libssh is driven with zero-timeout calls. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pkeycache.h"
#include "randbuf.h"
#include "readahead.h"

#define SERVICE_READS_PER_ROUND 64
#define WRITE_QUEUE_LIMIT       (512 * 1024)
#define PREFERRED_CIPHERS                                                                          \
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,"      \
    "aes192-ctr,aes256-ctr"

typedef struct {
    sc_op op;
} sc_connect_op;

static void connect_op_destroy(sc_op *op) { free(op); }

static void session_advance(sc_session *s);
static void session_teardown(sc_session *s, sc_sstate final, const sc_err *why);
static void probe_poll(sc_session *s);

const char *sc_session_stage_name(sc_sstate state)
{
    static const char *const names[] = {
        [SS_RESOLVING] = "resolve",   [SS_TCP] = "connect",      [SS_HOP_OPEN] = "hop channel",
        [SS_HANDSHAKE] = "handshake", [SS_HOSTKEY] = "host key", [SS_AUTH] = "auth",
        [SS_READY] = "connection",    [SS_FAILED] = "failed",    [SS_CLOSED] = "closed",
    };
    return (unsigned)state < sizeof names / sizeof names[0] ? names[state] : "connection";
}

/* 1 when fd was blocking and is not now */
static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

static int session_alive(const sc_session *s) { return s->state < SS_FAILED; }

void sc_session_fail(sc_session *s, const sc_err *err)
{
    if (s->transport && s->transport_ops->intercept_failure && session_alive(s) &&
        s->transport_ops->intercept_failure(s->transport, err))
        return;
    session_teardown(s, SS_FAILED, err);
}

void sc_session_failf(sc_session *s, sc_code code, const char *stage, const char *reason,
                      const char *fmt, ...)
{
    sc_err err;
    va_list ap;
    va_start(ap, fmt);
    sc_err_vformat(&err, code, s->label, s->hop, stage ? stage : sc_session_stage_name(s->state),
                   reason, fmt, ap);
    va_end(ap);
    sc_session_fail(s, &err);
}

/* poll */

static void on_poll(uv_poll_t *h, int status, int events);

/* libssh asks for POLLOUT after each of its writes and flushes what it holds at its next poll,
 * which says so at once unless the socket is full: a round soon lets it. Asking the loop to
 * watch for writability instead costs four epoll_ctl calls (libuv's uv_poll_start removes the
 * fd from epoll and adds it back, and again when the watch goes): 41 a session at 1000
 * chains. A round after which nothing more went out leaves it to the socket's watch. */
static void kick_for_output(sc_session *s)
{
    if (s->out_kicked)
        return; /* its round is coming */
    s->out_kicked = 1;
    s->tx_kicked = s->tx.out_bytes;
    sc_session_kick(s);
}

static void session_update_poll(sc_session *s)
{
    if (!session_alive(s) || s->fd < 0)
        return;
    if (s->tx.out_bytes != s->tx_told) {
        s->tx_told = s->tx.out_bytes;
        if (s->transport && s->transport_ops->output)
            s->transport_ops->output(s->transport);
    }
    int want;
    if (s->state == SS_TCP) {
        want = UV_WRITABLE;
    } else if (s->ssh) {
        want = UV_READABLE;
        if (ssh_get_poll_flags(s->ssh) & SSH_WRITE_PENDING) {
            /* a hop's sends go to its pump's ring (readahead.c): writable while it has room,
             * and a full one wakes the session when it has room again */
            int room = sc_readahead_out_room(s->lib_fd, s);
            if (room < 0 && !s->out_kicked && s->tx.out_bytes == s->tx_kicked)
                want |= UV_WRITABLE; /* a round since the last write did not flush: it waits */
            else if (room < 0)
                kick_for_output(s);
            else if (room > 0)
                sc_session_kick(s);
        }
    } else {
        return;
    }
    if (want != s->poll_events) {
        uv_poll_start(&s->poll, want, on_poll);
        s->poll_events = want;
    }
}

/* TCP stalls: a peer's small packet waits (Nagle) until its last one is acknowledged, and our
 * kernel delays that ACK by up to 40 ms when we have nothing to send (sshd's unsolicited
 * host-keys message after auth, then its answer to our channel open, is such a pair). After a
 * small read that we answered with nothing, an SSH_MSG_IGNORE carries the ACK at once; through a
 * chain it reaches each inner server, whose own TCP link gets the same nudge. Not during the
 * first key exchange (strict kex forbids it), nor after bulk reads (their ACKs flow anyway).
 * Measured on the lab: a 2-jump chain + exec in 110 ms instead of 237. */
static void nudge(sc_session *s, uint64_t got, uint64_t sent)
{
    static int off = -1; /* SSHCHAIN_NO_NUDGE=1: without it, for benchmarks that show the stall */
    if (off < 0) {
        const char *e = getenv("SSHCHAIN_NO_NUDGE");
        off = e && *e && strcmp(e, "0") != 0;
    }
    if (!off && got > 0 && got <= 2048 && sent == 0 && session_alive(s) && s->ssh &&
        s->state == SS_READY) {
        ssh_send_ignore(s->ssh, "");
        sc_session_kick(s); /* sending may have read what the channels wait for */
    }
}

/* a round, and the nudge after it: rounds come from the socket's poll, or from kicks (a hop's
 * bytes arrive that way, fed by its pump, and bytes held by readahead.c too) */
static void advance_nudged(sc_session *s)
{
    sc_session_ref(s); /* the round may drop the others */
    uint64_t rx = s->rx.in_bytes, tx = s->tx.out_bytes;
    session_advance(s);
    nudge(s, s->rx.in_bytes - rx, s->tx.out_bytes - tx);
    sc_session_unref(s);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sc_session *s = h->data;
    /* errors surface through the next read or SO_ERROR, which libssh's next poll asks for */
    if (status < 0 || (events & (UV_READABLE | UV_DISCONNECT)))
        sc_readahead_readable(s->lib_fd, s);
    if (status < 0)
        s->poll_events = 0; /* libuv stopped the watch: the next update starts it again */
    advance_nudged(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    sc_session *s = h->data;
    if (--s->handles_open == 0 && s->refs == 0) {
        sc_hostspec_free(&s->spec);
        free(s);
    }
}

/* kicks: a service round soon, through the loop's deferred work. A kick holds no reference: a
 * session that goes away takes its kick back (session_teardown), so dropping the last handle
 * closes it at once. */

static void on_kicked(sc_deferred *d, int canceled)
{
    sc_session *s = (sc_session *)((char *)d - offsetof(sc_session, kick));
    s->out_kicked = 0;
    if (canceled || !session_alive(s))
        return;
    advance_nudged(s);
}

void sc_session_kick(sc_session *s)
{
    if (s->kick.queued || !session_alive(s))
        return;
    s->kick.run = on_kicked;
    sc_loop_defer(s->loop, &s->kick);
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
    if (u->session->serve_next == u)
        u->session->serve_next = u->next;
    u->next = NULL;
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

/* service round of a ready session: read what arrived, then advance every channel user */
static void session_serve(sc_session *s)
{
    for (int i = 0; i < SERVICE_READS_PER_ROUND; i++) {
        uint64_t before = s->rx.in_bytes;
        ssh_execute_message_callbacks(s->ssh);
        if (s->rx.in_bytes == before)
            break;
    }
    if (s->rx.in_bytes != s->rx_seen_serve) {
        s->rx_seen_serve = s->rx.in_bytes;
        s->t_last_rx = sc_loop_now();
    }
    if (!ssh_is_connected(s->ssh) || (ssh_get_status(s->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR))) {
        const char *why = ssh_get_error(s->ssh);
        sc_session_failf(s, SC_ECLOSED, NULL, "lost", "connection lost: %s",
                         why && *why ? why : "closed by peer");
        return;
    }
    probe_poll(s);
    uint64_t rx0 = s->rx.in_bytes;
    /* a user's service may detach others (a forward closing its connections): detach keeps
     * serve_next right */
    for (sc_chanuser *u = s->users; u; u = s->serve_next) {
        s->serve_next = u->next;
        u->service(u);
        if (!session_alive(s))
            return;
    }
    s->serve_next = NULL;
    if (s->rx.in_bytes != rx0)
        sc_session_kick(s); /* more arrived while serving: another round */
}

/* ---- keepalive probes, and who is to blame when a chain goes silent ---- */

/* The probe: a channel of a type sshd refuses at once ("x11" from a client), so the answer is a
 * round trip; keepalive@openssh.com would share libssh's single pending-global-request slot with
 * remote forwards. Whatever arrives counts as life. */
static void probe_send(sc_session *s)
{
    if (s->state != SS_READY || s->probe)
        return;
    s->probe = ssh_channel_new(s->ssh);
    s->t_suspect = sc_loop_now(); /* its answer is due from now */
    probe_poll(s);
    session_update_poll(s);
}

static void probe_poll(sc_session *s)
{
    if (s->probe && ssh_channel_open_x11(s->probe, "127.0.0.1", 0) != SSH_AGAIN) {
        ssh_channel_free(s->probe); /* answered (refused, as meant), or the session failed */
        s->probe = NULL;
    }
}

/* A session whose bytes ride on its parents has gone silent: the silence may be theirs. The
 * first ancestor, from the root down, that has not answered its latest probe, sent at least
 * `grace` seconds ago, is the one that failed; NULL when every ancestor answered. (Each is judged
 * by its own probe: one that answered an older probe and then carried nothing is not silent.) */
static sc_session *silent_ancestor(sc_session *s, double grace)
{
    sc_session *chain[64];
    int n = 0;
    double now = sc_loop_now();
    for (sc_session *a = s->parent; a && n < 64; a = a->parent)
        chain[n++] = a;
    while (n-- > 0) {
        sc_session *a = chain[n];
        if (a->state == SS_READY && a->t_suspect > 0 && a->t_last_rx < a->t_suspect &&
            now - a->t_suspect >= grace)
            return a;
    }
    return NULL;
}

/* Probes every ancestor of s that has no probe waiting for its answer already, so that by the
 * verdict each has answered or not: a live one answers within a round trip. */
static void doubt_ancestors(sc_session *s)
{
    for (sc_session *a = s->parent; a; a = a->parent)
        probe_send(a);
}

static void keepalive_verdict(sc_session *s, double since)
{
    sc_session *culprit = silent_ancestor(s, s->spec.keepalive);
    double waited = sc_loop_now() - since + s->spec.keepalive;
    if (culprit) {
        /* its own failure takes every session under it with it, naming it */
        sc_session_failf(culprit, SC_ECLOSED, "keepalive", "timeout",
                         "no answer for %.1fs (seen from %s)", waited, s->label);
        return;
    }
    sc_session_failf(s, SC_ECLOSED, "keepalive", "timeout", "no answer for %.1fs", waited);
}

static void on_keepalive(uv_timer_t *t)
{
    sc_session *s = t->data;
    if (s->state != SS_READY)
        return;
    double now = sc_loop_now();
    if (s->rx.in_bytes == s->rx_seen) {
        if (s->keepalive_misses++ == 0) {
            s->t_doubt = now; /* nothing came since the last tick: ask the ancestors now */
            doubt_ancestors(s);
        }
        if (s->keepalive_misses >= (s->spec.keepalive_count > 0 ? s->spec.keepalive_count : 3)) {
            sc_session_ref(s);
            keepalive_verdict(s, s->t_doubt);
            sc_session_unref(s);
            return;
        }
    } else {
        s->keepalive_misses = 0;
        s->rx_seen = s->rx.in_bytes;
    }
    probe_send(s);
}

/* ---- the connect, step by step ---- */

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
            sc_session_failf(s, SC_ECONNECT, NULL, soerr == ECONNREFUSED ? "refused" : NULL, "%s",
                             strerror(soerr));
            return;
        }
        s->state = SS_HANDSHAKE;
        s->t_connected = sc_loop_now();
    }
        /* fallthrough */
    case SS_HANDSHAKE: {
        s->lib_fd_given = 1;
        uint64_t rx = s->rx.in_bytes;
        int rc = ssh_connect(s->ssh);
        /* libssh makes the socket blocking once, when it sees it connected (its first POLLOUT) */
        if (!s->fd_nonblocking)
            s->fd_nonblocking = set_nonblocking(s->fd);
        if (rc == SSH_AGAIN) {
            if (s->rx.in_bytes != rx) /* as for auth below: what libssh read may hold more */
                sc_session_kick(s);
            break;
        }
        if (rc != SSH_OK) {
            const char *e = ssh_get_error(s->ssh);
            /* the server closed the connection during the handshake (MaxStartups drops bursts of
             * unauthenticated connections): worth a retry, unlike a failed negotiation */
            int dropped = ssh_get_serverbanner(s->ssh) == NULL ||
                          (ssh_get_status(s->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR)) != 0;
            const char *hint = "";
            if (e && strstr(e, "no match for method")) { /* both sides' lists are in e */
                dropped = 0;
                hint = strstr(e, "kex algos")    ? " (to allow one: kex = \"+NAME\", or "
                                                   "KexAlgorithms +NAME in ssh_config)"
                       : strstr(e, "host key")   ? " (to allow one: hostkeys = \"+NAME\", or "
                                                   "HostKeyAlgorithms +NAME in ssh_config)"
                       : strstr(e, "encryption") ? " (to allow one: ciphers = \"+NAME\", or "
                                                   "Ciphers +NAME in ssh_config)"
                       : strstr(e, "mac")        ? " (to allow one: macs = \"+NAME\", or MACs "
                                                   "+NAME in ssh_config)"
                                                 : "";
            }
            sc_session_failf(s, SC_ECONNECT, NULL,
                             dropped ? "dropped" : (*hint ? "algorithms" : NULL), "%s%s",
                             e && *e ? e : "connection closed", hint);
            return;
        }
        s->t_handshake = sc_loop_now();
        const char *banner = ssh_get_serverbanner(s->ssh);
        sc_sanitize(s->banner, sizeof s->banner, banner ? banner : "");
        s->state = SS_HOSTKEY;
        if (sc_hostkey_check(s->ssh, &s->spec, s->label, s->hop, s->hostkey_fp,
                             sizeof s->hostkey_fp, &s->hostkey_note, &err) != 0) {
            sc_session_fail(s, &err);
            return;
        }
        s->state = SS_AUTH;
    }
        /* fallthrough */
    case SS_AUTH: {
        if (!s->auth.ssh) {
            s->auth.ssh = s->ssh;
            s->auth.spec = &s->spec;
            s->auth.loop = s->loop;
            s->auth.label = s->label;
            s->auth.hop = s->hop;
        }
        uint64_t rx = s->rx.in_bytes;
        int r = sc_auth_step(&s->auth, &err);
        if (r < 0) {
            sc_session_fail(s, &err);
            return;
        }
        if (r == 0) {
            /* libssh may have read more than the packet it wanted (the server's answer came
             * with it): the socket stays quiet, so look again soon rather than wait on it */
            if (s->rx.in_bytes != rx)
                sc_session_kick(s);
            break;
        }
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

/* Halfway to a connect's deadline through parents: the parents are probed, so that the deadline
 * can tell a silent one (a stopped jump host) from a slow server. */
static void on_connect_halfway(uv_timer_t *t)
{
    sc_session *s = t->data;
    if (s->state >= SS_READY || !s->parent)
        return;
    s->t_doubt = sc_loop_now();
    doubt_ancestors(s);
}

/* The connect's deadline. Through a parent that has not answered since it was probed (a stopped
 * jump host), the message names the parent: that is where the time went. */
static void on_deadline(uv_timer_t *t)
{
    sc_session *s = t->data;
    if (s->state >= SS_READY)
        return;
    sc_session *silent = s->t_doubt > 0 ? silent_ancestor(s, s->spec.timeout / 4) : NULL;
    if (silent) {
        sc_err err;
        sc_err_format(&err, SC_ETIMEDOUT, s->label, silent->hop, sc_session_stage_name(s->state),
                      "parent", "timed out after %gs: %s does not answer", s->spec.timeout,
                      silent->label);
        sc_session_fail(s, &err);
        return;
    }
    sc_session_failf(s, SC_ETIMEDOUT, NULL, "timeout", "timed out after %gs", s->spec.timeout);
}

/* libssh hands queued requests from the server to this callback (else they would be refused by
 * ssh_execute_message_callbacks): channels the server opens go to the users that take them. */
static int on_message(ssh_session ssh, ssh_message msg, void *ud)
{
    (void)ssh;
    sc_session *s = ud;
    if (ssh_message_type(msg) == SSH_REQUEST_CHANNEL_OPEN) {
        for (sc_chanuser *u = s->users; u; u = u->next)
            if (u->incoming && u->incoming(u, msg))
                return 0; /* handled */
    }
    return 1; /* refused */
}

static void session_ready(sc_session *s)
{
    s->t_ready = s->t_last_rx = sc_loop_now();
    s->state = SS_READY;
    s->t_doubt = 0;
    ssh_set_message_callback(s->ssh, on_message, s);
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->keepalive_timer);
    sc_auth_cleanup(&s->auth);
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

/* libssh's reads of the socket come in large pieces (readahead.c); bytes it holds are not seen
 * by the loop's poll, so a read that leaves some asks for another round */
static void on_bytes_held(void *arg) { sc_session_kick(arg); }

/* ~/.ssh as libssh finds it (the password database's home, else $HOME), once per process:
 * libssh looks it up for each session otherwise (five system calls a connect); "" when unknown
 * (libssh then tries itself). */
static char ssh_dir[512];
static void find_ssh_dir(void)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    const char *home = getpwuid_r(getuid(), &pw, buf, sizeof buf, &found) == 0 && found
                           ? pw.pw_dir
                           : getenv("HOME");
    if (home && *home && strlen(home) + 6 < sizeof ssh_dir)
        snprintf(ssh_dir, sizeof ssh_dir, "%s/.ssh", home);
}

static const char *user_ssh_dir(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, find_ssh_dir);
    return ssh_dir;
}

/* libssh closes the fd it was given on some error paths, and not on others: it gets a duplicate
 * of its own (s->lib_fd), so that the fd the loop polls (s->fd) stays ours to close. */
int sc_session_begin_handshake(sc_session *s, int fd)
{
    s->fd = fd;
    set_nonblocking(fd);
    sc_randbuf_install();
    sc_pkeycache_install();
    s->ssh = ssh_new();
    s->lib_fd = dup(fd);
    if (!s->ssh || s->lib_fd < 0) {
        sc_session_failf(s, SC_EIO, "handshake", NULL, "%s",
                         s->ssh ? strerror(errno) : "out of memory");
        return -1;
    }
    sc_readahead_attach(s->lib_fd, on_bytes_held, s);
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
    const char *ciphers = s->spec.ciphers ? s->spec.ciphers : PREFERRED_CIPHERS;
    /* the host key types known_hosts has for this host first, as ssh asks; libssh would read the
     * files itself for that (and parse every key in them) on each connect, so it is given none:
     * the host key is checked by hostkey.c */
    char hostkeys[1024];
    const char *hk =
        sc_hostkey_algorithms(&s->spec, hostkeys, sizeof hostkeys) ? hostkeys : s->spec.hostkeys;
    const struct {
        enum ssh_options_e opt;
        const char *value, *field;
    } algs[] = {
        {SSH_OPTIONS_CIPHERS_C_S, ciphers, "ciphers"},
        {SSH_OPTIONS_CIPHERS_S_C, ciphers, "ciphers"},
        {SSH_OPTIONS_KEY_EXCHANGE, s->spec.kex, "kex"},
        {SSH_OPTIONS_HOSTKEYS, hk, "hostkeys"},
        {SSH_OPTIONS_HMAC_C_S, s->spec.macs, "macs"},
        {SSH_OPTIONS_HMAC_S_C, s->spec.macs, "macs"},
        {SSH_OPTIONS_PUBLICKEY_ACCEPTED_TYPES, s->spec.pubkeys, "pubkeys"},
    };
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        if (algs[i].value && ssh_options_set(s->ssh, algs[i].opt, algs[i].value) != SSH_OK) {
            sc_session_failf(s, SC_ECONNECT, "handshake", "algorithms",
                             "%s \"%s\": none of these algorithms is supported by libssh (%s)",
                             algs[i].field, algs[i].value, ssh_get_error(s->ssh));
            return -1;
        }
    }
    if (s->spec.agent_sock)
        ssh_options_set(s->ssh, SSH_OPTIONS_IDENTITY_AGENT, s->spec.agent_sock);
    ssh_options_set(s->ssh, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
    ssh_options_set(s->ssh, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    if (user_ssh_dir()[0])
        ssh_options_set(s->ssh, SSH_OPTIONS_SSH_DIR, user_ssh_dir());
    ssh_options_set(s->ssh, SSH_OPTIONS_FD, &s->lib_fd);
    ssh_set_counters(s->ssh, &s->rx, &s->tx);
    ssh_set_blocking(s->ssh, 0);
    if (s->poll_events < 0 && uv_poll_init(&s->loop->uv, &s->poll, fd) == 0) {
        s->poll.data = s;
        s->handles_open++;
        s->poll_events = 0;
    }
    s->state = SS_HANDSHAKE;
    return 0;
}

void sc_session_set_transport(sc_session *s, void *transport, const sc_transport_ops *ops)
{
    s->transport = transport;
    s->transport_ops = ops;
}

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
        sc_session_failf(s, SC_ECONNECT, NULL, NULL, "%s", uv_strerror(status));
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
    s->state = SS_TCP;
    if (fd < 0) {
        sc_session_failf(s, SC_ECONNECT, NULL, err == ECONNREFUSED ? "refused" : NULL, "%s",
                         strerror(err));
        sc_session_unref(s);
        return;
    }
    if (sc_session_begin_handshake(s, fd) == 0) {
        s->state = SS_TCP;
        session_update_poll(s);
    }
    sc_session_unref(s);
}

sc_session *sc_session_new(sc_loop *loop, sc_session *parent, sc_hostspec *spec, sc_op **opp)
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
    s->tx_kicked = UINT64_MAX;
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
    s->state = parent ? SS_HOP_OPEN : SS_RESOLVING;

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
    if (parent) /* the keepalive timer is free until the session is ready */
        sc_timer_start(&s->keepalive_timer, on_connect_halfway, (uint64_t)(s->spec.timeout * 500.0),
                       0);

    if (parent) {
        s->parent = parent;
        sc_session_ref(parent);
        s->next_sibling = parent->first_child;
        parent->first_child = s;
    }
    return s;
}

void sc_session_connect_tcp(sc_session *s)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->spec.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    s->state = SS_RESOLVING;
    s->gai.data = s;
    sc_session_ref(s); /* the resolver's reference */
    s->gai_pending = 1;
    int rc = uv_getaddrinfo(&s->loop->uv, &s->gai, on_resolved, s->spec.host, port, &hints);
    if (rc < 0) {
        s->gai_pending = 0;
        sc_session_failf(s, SC_ECONNECT, NULL, NULL, "%s", uv_strerror(rc));
        sc_session_unref(s);
    }
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
    sc_loop_undefer(s->loop, &s->kick);

    /* children first: they ride on this session's connection; their failure names this hop */
    sc_err cerr;
    sc_session *c;
    while ((c = s->first_child) != NULL) {
        if (final == SS_CLOSED)
            sc_err_format(&cerr, SC_ECLOSED, c->label, s->hop, sc_session_stage_name(c->state),
                          "parent", "closed with hop %d", s->hop);
        else
            sc_err_format(&cerr, SC_ECLOSED, c->label, why->hop ? why->hop : s->hop,
                          sc_session_stage_name(c->state), "parent", "hop %d failed: %s",
                          why->hop ? why->hop : s->hop, why->msg);
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
    if (s->transport) {
        void *t = s->transport;
        s->transport = NULL;
        s->transport_ops->close(t);
    }
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->keepalive_timer);
    if (s->poll_events >= 0)
        uv_poll_stop(&s->poll);
    sc_auth_cleanup(&s->auth);
    if (s->probe) {
        ssh_channel_free(s->probe);
        s->probe = NULL;
    }
    sc_readahead_detach(s->lib_fd, s);
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
    sc_err_format(&err, SC_ECLOSED, s->label, s->hop, "closed", NULL, "session closed");
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
