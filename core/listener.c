#define _GNU_SOURCE
/* listener.c - listening sockets for forwards, and the listener op that keeps one bound while
 * no forward serves it (see listener.h). */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sc.h"

/* A non-blocking Unix socket, and *sa set to path; -1 with errno (ENAMETOOLONG: past sun_path). */
static int unix_socket(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

int sc_connect_unix(const char *path)
{
    struct sockaddr_un sa;
    int fd = unix_socket(path, &sa);
    if (fd < 0)
        return -1;
    /* a Unix socket connects at once or not at all: EAGAIN is a full backlog, a refusal */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int sc_listen_tcp(const char *bind_addr, int port, int *out_port, sc_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    const char *addr = bind_addr;
    if (strcmp(addr, "localhost") == 0)
        addr = "127.0.0.1";
    else if (strcmp(addr, "*") == 0)
        addr = "0.0.0.0";
    int family = AF_INET;
    if (uv_ip4_addr(addr, port, (struct sockaddr_in *)&ss) != 0) {
        if (uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&ss) != 0) {
            sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "bind address must be numeric: %s",
                          bind_addr);
            return -1;
        }
        family = AF_INET6;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 256) < 0) {
        sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "cannot listen on %s:%d: %s",
                      bind_addr, port, strerror(errno));
        close(fd);
        return -1;
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *out_port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

char *sc_absolute_path(const char *path)
{
    char cwd[4096];
    if (path[0] == '/' || !getcwd(cwd, sizeof cwd))
        return sc_strdup(path);
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", cwd, path);
    return p;
}

int sc_listen_unix(const char *path, sc_err *err)
{
    struct sockaddr_un sa;
    int fd = unix_socket(path, &sa);
    if (fd < 0) {
        sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "socket %s: %s", path,
                      strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "cannot listen on %s: %s", path,
                      strerror(errno));
        close(fd);
        return -1;
    }
    /* bound, not listening yet: nobody can connect before the mode is set */
    if (chmod(path, 0600) < 0 || listen(fd, 256) < 0) {
        sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "cannot listen on %s: %s", path,
                      strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

/* ---- the listener op ---- */

typedef struct {
    sc_op op;
    int fd, port, refusing;
    char *path; /* absolute; removed at the end if still the socket made here */
    dev_t dev;
    ino_t ino;
    uv_poll_t poll;
    long refused;
} sc_listener;

static void refuse_waiting(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    sc_listener *l = h->data;
    for (int i = 0; i < 256; i++) {
        int c = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            return;
        close(c);
        l->refused++;
    }
}

static void poll_closed(uv_handle_t *h)
{
    sc_listener *l = h->data;
    sc_op_release(&l->op); /* the core's reference */
}

static void listener_cancel(sc_op *op)
{
    sc_listener *l = (sc_listener *)op;
    if (l->fd < 0)
        return;
    uv_poll_stop(&l->poll);
    close(l->fd);
    l->fd = -1;
    struct stat st;
    if (l->path && lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == l->dev &&
        st.st_ino == l->ino)
        unlink(l->path);
    sc_op_finish(op, NULL);
    uv_close((uv_handle_t *)&l->poll, poll_closed);
}

static void listener_destroy(sc_op *op)
{
    sc_listener *l = (sc_listener *)op;
    free(l->path);
    free(l);
}

sc_op *sc_listener_open(sc_loop *loop, const char *bind_addr, int port, const char *path,
                        sc_err *err)
{
    sc_listener *l = calloc(1, sizeof *l);
    char *abs = path ? sc_absolute_path(path) : NULL;
    if (!l || (path && !abs)) {
        free(l);
        free(abs);
        sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "out of memory");
        return NULL;
    }
    int fd = abs ? sc_listen_unix(abs, err)
                 : sc_listen_tcp(bind_addr ? bind_addr : "127.0.0.1", port, &port, err);
    if (fd < 0 || uv_poll_init(&loop->uv, &l->poll, fd) != 0) {
        if (fd >= 0) {
            close(fd);
            if (abs)
                unlink(abs);
            sc_err_format(err, SC_EIO, NULL, 0, "forward", NULL, "cannot watch the listener");
        }
        free(l);
        free(abs);
        return NULL;
    }
    sc_op_init(&l->op, loop, "listener");
    l->op.cancel = listener_cancel;
    l->op.destroy = listener_destroy;
    l->op.refs++; /* the core's, until the poll handle has closed */
    l->poll.data = l;
    l->fd = fd;
    l->port = abs ? 0 : port;
    l->path = abs;
    struct stat st;
    if (abs && lstat(abs, &st) == 0) {
        l->dev = st.st_dev;
        l->ino = st.st_ino;
    }
    return &l->op;
}

int sc_listener_fd(sc_op *op) { return ((sc_listener *)op)->fd; }
int sc_listener_port(sc_op *op) { return ((sc_listener *)op)->port; }
const char *sc_listener_path(sc_op *op) { return ((sc_listener *)op)->path; }
long sc_listener_refused(sc_op *op) { return ((sc_listener *)op)->refused; }

void sc_listener_refuse(sc_op *op, int on)
{
    sc_listener *l = (sc_listener *)op;
    if (l->fd < 0 || l->refusing == !!on)
        return;
    l->refusing = !!on;
    if (on) {
        uv_poll_start(&l->poll, UV_READABLE, refuse_waiting);
        refuse_waiting(&l->poll, 0, 0);
    } else {
        uv_poll_stop(&l->poll);
    }
}
