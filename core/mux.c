/* mux.c - a session reached through a mux (`sshlua -r mux`): a process of the same user that
 * holds the sessions to some jump hosts and serves SOCKS5 on a Unix socket only that user can
 * open. The session's socket is a connection to it: the SOCKS5 greeting and a CONNECT to the host
 * go at once, its two answers are read (12 bytes, no more: what follows is the server's SSH
 * banner), then the handshake runs on the same socket. The socket is refused before anything is
 * sent when it, or its directory, is another user's or open to others. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "listener.h"

typedef struct {
    uv_poll_t poll;
    sc_session *s; /* NULL once the session has let go of it */
    int fd;        /* -1 once the session has it */
    int closed;    /* the poll handle is closed */
    unsigned char got[12];
    size_t n;
} sc_mux;

int sc_mux_check(const char *path, char *why, size_t cap)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        int e = errno;
        snprintf(why, cap, "%s: %s", path, strerror(e));
        return e == ENOENT ? 1 : -1;
    }
    uid_t me = getuid();
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(why, cap, "%s is not a socket: refused", path);
        return -1;
    }
    if (st.st_uid != me) {
        snprintf(why, cap, "%s is owned by uid %u, not by you (uid %u): refused", path,
                 (unsigned)st.st_uid, (unsigned)me);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(why, cap, "%s is open to other users (mode %03o; it must be 600): refused", path,
                 (unsigned)(st.st_mode & 0777));
        return -1;
    }
    char *copy = sc_strdup(path);
    if (!copy) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    const char *dir = dirname(copy);
    int rc = 0;
    if (stat(dir, &st) < 0) {
        snprintf(why, cap, "%s: %s", dir, strerror(errno));
        rc = -1;
    } else if (st.st_uid != me && st.st_uid != 0) {
        snprintf(why, cap, "%s (the socket's directory) is owned by uid %u, not by you: refused",
                 dir, (unsigned)st.st_uid);
        rc = -1;
    } else if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
        snprintf(why, cap, "%s (the socket's directory) is writable by others (mode %03o): refused",
                 dir, (unsigned)(st.st_mode & 0777));
        rc = -1;
    }
    free(copy);
    return rc;
}

int sc_mux_probe(const char *path, char *why, size_t cap)
{
    int rc = sc_mux_check(path, why, cap);
    if (rc != 0)
        return rc;
    int fd = sc_connect_unix(path);
    if (fd < 0) {
        snprintf(why, cap, "no mux answers at %s (%s)", path, strerror(errno));
        return 2;
    }
    close(fd);
    return 0;
}

static void on_mux_closed(uv_handle_t *h)
{
    sc_mux *m = h->data;
    m->closed = 1;
    if (!m->s)
        free(m);
}

static void mux_stop(sc_mux *m)
{
    if (!uv_is_closing((uv_handle_t *)&m->poll))
        uv_close((uv_handle_t *)&m->poll, on_mux_closed); /* stops the poll at once */
}

static void mux_release(void *transport)
{
    sc_mux *m = transport;
    m->s = NULL;
    mux_stop(m);
    if (m->fd >= 0) {
        close(m->fd);
        m->fd = -1;
    }
    if (m->closed)
        free(m);
}

static const sc_transport_ops mux_transport = {mux_release, NULL, NULL};

static void on_mux_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    sc_mux *m = h->data;
    sc_session *s = m->s;
    if (!s || m->fd < 0)
        return;
    ssize_t r = recv(m->fd, m->got + m->n, sizeof m->got - m->n, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        sc_session_failf(s, SC_ECONNECT, "connect", "mux",
                         "the mux at %s closed the connection before it answered",
                         s->spec.mux_path);
        return;
    }
    m->n += (size_t)r;
    if (m->n >= 2 && (m->got[0] != 5 || m->got[1] != 0)) {
        sc_session_failf(s, SC_ECONNECT, "connect", "mux",
                         "the mux at %s refused the SOCKS5 greeting", s->spec.mux_path);
        return;
    }
    if (m->n < sizeof m->got)
        return;
    if (m->got[2] != 5 || m->got[3] != 0) {
        sc_session_failf(s, SC_ECHANNEL, "hop channel", "mux",
                         "the mux at %s could not open a channel to %s:%d (its stderr or log "
                         "says why)",
                         s->spec.mux_path, s->spec.host, s->spec.port);
        return;
    }
    int fd = m->fd;
    m->fd = -1;
    mux_stop(m);
    s->t_connected = sc_loop_now();
    if (sc_session_begin_handshake(s, fd) == 0)
        sc_session_kick(s);
}

void sc_mux_start(sc_session *s)
{
    const char *path = s->spec.mux_path;
    char why[512];
    if (sc_mux_check(path, why, sizeof why) != 0) {
        sc_session_failf(s, SC_ECONNECT, "connect", "mux", "mux socket %s", why);
        return;
    }
    size_t hl = strlen(s->spec.host);
    if (hl > 255) {
        sc_session_failf(s, SC_ECONNECT, "connect", "mux", "host name longer than 255 bytes");
        return;
    }
    int fd = sc_connect_unix(path);
    if (fd < 0) {
        int e = errno;
        sc_session_failf(s, SC_ECONNECT, "connect", "mux", "no mux answers at %s (%s)", path,
                         e == EAGAIN ? "its backlog is full" : strerror(e));
        return;
    }
    /* greeting (no authentication), then CONNECT host:port by name, in one write */
    unsigned char req[3 + 5 + 255 + 2];
    size_t n = 0;
    req[n++] = 5, req[n++] = 1, req[n++] = 0;
    req[n++] = 5, req[n++] = 1, req[n++] = 0, req[n++] = 3, req[n++] = (unsigned char)hl;
    memcpy(req + n, s->spec.host, hl);
    n += hl;
    req[n++] = (unsigned char)(s->spec.port >> 8), req[n++] = (unsigned char)(s->spec.port & 255);
    if (send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n) {
        int e = errno;
        close(fd);
        sc_session_failf(s, SC_ECONNECT, "connect", "mux", "writing to the mux at %s: %s", path,
                         strerror(e));
        return;
    }
    sc_mux *m = calloc(1, sizeof *m);
    if (!m || uv_poll_init(&s->loop->uv, &m->poll, fd) != 0) {
        free(m);
        close(fd);
        sc_session_failf(s, SC_EIO, "connect", NULL, "out of memory");
        return;
    }
    m->poll.data = m;
    m->s = s;
    m->fd = fd;
    sc_session_set_transport(s, m, &mux_transport);
    uv_poll_start(&m->poll, UV_READABLE, on_mux_readable);
}
