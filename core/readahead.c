/* readahead.c - libssh's socket reads, made larger (see readahead.h).
 *
 * The patch (plt.c): libssh's calls to recv, send, poll and close come here; if any of the four
 * slots is missing, none is patched.
 *
 * The buffers: the kernel's bytes go through one once a read of libssh's has filled what it
 * asked (more was probably waiting), or when a zero-timeout poll asks only whether the fd is
 * readable (a recv answers that: a probe), and it goes again after a run of refills that each
 * fit in one of libssh's reads. A feeder's bytes (each way) go through a ring of 16 KiB that grows to
 * SC_RA_SIZE when more is held at once, and goes whenever it is empty before it grew: sessions
 * that carry little (1000 idle ones) hold no buffer between their packets. */
#include "readahead.h"

#include "plt.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SMALL_REFILLS_BEFORE_FREE 8
#define OUT_ASKED_EVERY           (64 * 1024) /* see sc_ra_poll */
#define PROBE_SMALL               (4 * 1024)  /* libssh's reads: see probe */
#define POLL_SET_MAX              16 /* libssh's sets here hold one fd (a context per session) */

/* A ring of bytes: it holds at most SC_RA_SIZE, in RING_FIRST bytes until more is held at once;
 * positions run modulo cap and go back to 0 whenever it is empty. */
typedef struct {
    char *p; /* NULL until bytes come */
    size_t cap, head, tail;
} ring;

#define RING_FIRST (16 * 1024)

typedef struct {
    void (*wake)(void *);
    void *arg;
    ring in;              /* held for libssh's reads: from the kernel, or from a feeder */
    int refill;           /* the kernel's bytes come through `in`, SC_RA_SIZE at a time */
    int small;            /* refills in a row that fit in one of libssh's reads */
    void (*room)(void *); /* the feeder's, told when a full `in` has half its room again */
    void *room_arg;
    int want_room;
    size_t unasked; /* bytes served since the kernel was last asked about this fd */
    int unread;     /* a poll said readable from held bytes, and libssh has not read since */
    /* What the kernel said last, until it may have changed: nothing to read (a poll without
     * POLLIN, a recv's EAGAIN) until the owner's watch says readable (sc_readahead_readable);
     * room to send (a send took all it was given, or a poll said POLLOUT) until a send is cut
     * short. libssh polls before each of its reads and after each of its writes. */
    int in_quiet;
    int out_free;
    int end; /* a probe's recv found the end of file (-1) or an error (its errno): after the bytes */
    /* the other way (sc_readahead_out_feed): libssh's sends, for the feeder to take */
    void (*news)(void *); /* the feeder's, told when bytes came; NULL: sends go to the kernel */
    void *news_arg;
    ring out;
    int out_full; /* a send found it full: the owner is woken when half of it is free again */
} ra_fd;

/* fd -> entry; the entries of one session are used by the thread that runs its loop, the table
 * by every thread (libssh runs in each thread that has a loop) */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ra_fd **table;
static int table_len;
static int installed = -1;
static unsigned long n_reads, n_kernel;       /* libssh's reads of attached fds; recv()s for them */
static unsigned long n_polls, n_kernel_polls; /* polls with an attached fd; poll()s they made */

static size_t ring_held(const ring *r) { return r->tail - r->head; }
static size_t ring_room(const ring *r) { return SC_RA_SIZE - ring_held(r); }

/* Copies n bytes between the ring at position pos and flat memory, both pieces of it. */
static void ring_copy(const ring *r, size_t pos, char *flat, size_t n, int into_ring)
{
    if (n == 0)
        return;
    size_t at = pos % r->cap, first = r->cap - at < n ? r->cap - at : n;
    if (into_ring) {
        memcpy(r->p + at, flat, first);
        memcpy(r->p, flat + first, n - first);
    } else {
        memcpy(flat, r->p + at, first);
        memcpy(flat + first, r->p, n - first);
    }
}

/* Room for n more bytes (n <= ring_room): 0, or -1 out of memory (the ring is as it was). */
static int ring_reserve(ring *r, size_t n)
{
    size_t held = ring_held(r);
    if (r->p && held + n <= r->cap)
        return 0;
    size_t cap = held + n <= RING_FIRST ? RING_FIRST : SC_RA_SIZE;
    char *p = malloc(cap);
    if (!p)
        return -1;
    if (r->p) {
        ring_copy(r, r->head, p, held, 0);
        free(r->p);
    }
    r->p = p;
    r->cap = cap;
    r->head = 0;
    r->tail = held;
    return 0;
}

static void ring_put(ring *r, const void *data, size_t n)
{
    ring_copy(r, r->tail, (char *)data, n, 1);
    r->tail += n;
}

static void ring_drop(ring *r, size_t n)
{
    r->head += n;
    if (r->head == r->tail)
        r->head = r->tail = 0;
}

static void ring_free(ring *r)
{
    free(r->p);
    memset(r, 0, sizeof *r);
}

/* An empty ring that never grew goes: sessions that carry little hold no buffer between. */
static void ring_trim(ring *r)
{
    if (r->p && r->head == r->tail && r->cap == RING_FIRST)
        ring_free(r);
}

static ra_fd *lookup(int fd)
{
    ra_fd *e = NULL;
    if (fd < 0)
        return NULL;
    pthread_mutex_lock(&lock);
    if (fd < table_len)
        e = table[fd];
    pthread_mutex_unlock(&lock);
    return e;
}

static ra_fd *lookup_owned(int fd, void *owner)
{
    ra_fd *e = lookup(fd);
    return e && e->arg == owner ? e : NULL;
}

/* What libssh sent and the feeder has not taken goes to the socket after all, where the feeder
 * reads it before the end of file (as much as the socket takes: this side is closing). */
static void out_flush(int fd, ra_fd *e)
{
    ring *r = &e->out;
    while (ring_held(r) > 0) {
        size_t at = r->head % r->cap, n = ring_held(r);
        if (n > r->cap - at)
            n = r->cap - at;
        ssize_t w = send(fd, r->p + at, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w <= 0)
            break;
        ring_drop(r, (size_t)w);
    }
    ring_free(r);
    e->news = NULL;
}

static void drop(int fd, void *arg, int any)
{
    ra_fd *e = NULL;
    pthread_mutex_lock(&lock);
    if (fd >= 0 && fd < table_len && table[fd] && (any || table[fd]->arg == arg)) {
        e = table[fd];
        table[fd] = NULL;
    }
    pthread_mutex_unlock(&lock);
    if (e) {
        out_flush(fd, e);
        ring_free(&e->in);
        free(e);
    }
}

void sc_readahead_attach(int fd, void (*wake)(void *), void *arg)
{
    if (fd < 0 || sc_readahead_install() != 1)
        return;
    ra_fd *e = calloc(1, sizeof *e);
    if (!e)
        return; /* libssh then reads fd as it always did */
    e->wake = wake;
    e->arg = arg;
    ra_fd *old = NULL;
    pthread_mutex_lock(&lock);
    if (fd >= table_len) {
        int n = table_len ? table_len : 64;
        while (n <= fd)
            n *= 2;
        ra_fd **t = realloc(table, (size_t)n * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&lock);
            free(e);
            return;
        }
        memset(t + table_len, 0, (size_t)(n - table_len) * sizeof *t);
        table = t;
        table_len = n;
    }
    old = table[fd]; /* an fd closed by someone else and reused: what it held is not this one's */
    table[fd] = e;
    pthread_mutex_unlock(&lock);
    if (old) {
        ring_free(&old->in);
        ring_free(&old->out);
        free(old);
    }
}

void sc_readahead_detach(int fd, void *arg) { drop(fd, arg, 0); }

void sc_readahead_readable(int fd, void *owner)
{
    ra_fd *e = lookup_owned(fd, owner);
    if (e)
        e->in_quiet = 0;
}

size_t sc_readahead_held(int fd)
{
    ra_fd *e = lookup(fd);
    return e ? ring_held(&e->in) : 0;
}

void sc_readahead_counts(unsigned long *reads, unsigned long *kernel)
{
    *reads = __atomic_load_n(&n_reads, __ATOMIC_RELAXED);
    *kernel = __atomic_load_n(&n_kernel, __ATOMIC_RELAXED);
}

void sc_readahead_poll_counts(unsigned long *polls, unsigned long *kernel)
{
    *polls = __atomic_load_n(&n_polls, __ATOMIC_RELAXED);
    *kernel = __atomic_load_n(&n_kernel_polls, __ATOMIC_RELAXED);
}

static void count(int kernel)
{
    __atomic_fetch_add(&n_reads, 1, __ATOMIC_RELAXED);
    if (kernel)
        __atomic_fetch_add(&n_kernel, 1, __ATOMIC_RELAXED);
}

/* Hands out held bytes; wakes the owner when some are left, the feeder when room came back. */
static ssize_t serve(ra_fd *e, void *buf, size_t len, int flags)
{
    if (ring_held(&e->in) == 0 && e->end) { /* what a probe found, once the bytes are read */
        if (e->end > 0) {
            errno = e->end;
            if (!(flags & MSG_PEEK))
                e->end = -1; /* a socket tells an error once, then the end of file */
            return -1;
        }
        return 0;
    }
    size_t n = ring_held(&e->in);
    if (n > len)
        n = len;
    ring_copy(&e->in, e->in.head, buf, n, 0);
    if (flags & MSG_PEEK)
        return (ssize_t)n;
    ring_drop(&e->in, n);
    e->unasked += n;
    e->unread = 0;
    if (ring_held(&e->in) > 0) {
        if (e->wake)
            e->wake(e->arg);
    } else if (!e->refill) {
        ring_trim(&e->in);
    } else if (e->small >= SMALL_REFILLS_BEFORE_FREE) {
        e->refill = e->small = 0; /* small reads again: libssh's own sizes, no buffer */
        ring_free(&e->in);
    }
    if (e->want_room && ring_held(&e->in) <= SC_RA_SIZE / 2) {
        e->want_room = 0;
        if (e->room)
            e->room(e->room_arg);
    }
    return (ssize_t)n;
}

ssize_t sc_ra_recv(int fd, void *buf, size_t len, int flags)
{
    ra_fd *e = lookup(fd);
    if (!e || len == 0)
        return recv(fd, buf, len, flags);
    if (ring_held(&e->in) > 0 || e->end) {
        count(0);
        return serve(e, buf, len, flags);
    }
    count(1);
    if (flags || len >= SC_RA_SIZE || !e->refill || ring_reserve(&e->in, SC_RA_SIZE) != 0) {
        ssize_t n = recv(fd, buf, len, flags);
        if (n == (ssize_t)len && !flags && len < SC_RA_SIZE)
            e->refill = 1; /* it filled what libssh asked: more was probably waiting */
        if (!flags)
            e->in_quiet = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        return n;
    }
    ssize_t n = recv(fd, e->in.p, SC_RA_SIZE, 0); /* empty: at position 0 */
    e->in_quiet = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (n <= 0)
        return n;
    e->in.tail = (size_t)n;
    e->small = (size_t)n <= len ? e->small + 1 : 0;
    return serve(e, buf, len, 0);
}

long sc_readahead_feed(int fd, void *owner, const void *data, size_t len)
{
    ra_fd *e = lookup_owned(fd, owner);
    if (!e)
        return -1;
    size_t n = ring_room(&e->in);
    if (n > len)
        n = len;
    if (n > 0 && ring_reserve(&e->in, n) != 0)
        return ring_held(&e->in) > 0 ? 0 : -1; /* the socket then, if nothing is held yet */
    ring_put(&e->in, data, n);
    if (n < len)
        e->want_room = 1;
    if (n > 0 && e->wake)
        e->wake(e->arg);
    return (long)n;
}

void sc_readahead_on_room(int fd, void *owner, void (*room)(void *), void *room_arg)
{
    ra_fd *e = lookup_owned(fd, owner);
    if (e) {
        e->room = room;
        e->room_arg = room_arg;
    }
}

void sc_readahead_out_feed(int fd, void *owner, void (*news)(void *), void *news_arg)
{
    ra_fd *e = lookup_owned(fd, owner);
    if (!e)
        return;
    if (!news) {
        out_flush(fd, e);
        return;
    }
    e->news = news;
    e->news_arg = news_arg;
}

int sc_readahead_out_room(int fd, void *owner)
{
    ra_fd *e = lookup_owned(fd, owner);
    return !e || !e->news ? -1 : ring_room(&e->out) > 0;
}

long sc_readahead_out_peek(int fd, void *owner, const char **data)
{
    ra_fd *e = lookup_owned(fd, owner);
    if (!e || !e->news)
        return -1;
    ring *r = &e->out;
    size_t n = ring_held(r);
    if (n == 0) {
        *data = NULL;
        return 0;
    }
    size_t at = r->head % r->cap;
    *data = r->p + at;
    return (long)(n > r->cap - at ? r->cap - at : n);
}

void sc_readahead_out_consume(int fd, void *owner, size_t n)
{
    ra_fd *e = lookup_owned(fd, owner);
    if (!e || n > ring_held(&e->out))
        return;
    ring_drop(&e->out, n);
    ring_trim(&e->out);
    if (e->out_full && ring_room(&e->out) >= SC_RA_SIZE / 2) {
        e->out_full = 0;
        if (e->wake)
            e->wake(e->arg);
    }
}

/* libssh sends only after a poll said writable, and takes a short count (0 too) as "the rest
 * later"; -1 would be fatal to it. */
ssize_t sc_ra_send(int fd, const void *buf, size_t len, int flags)
{
    ra_fd *e = lookup(fd);
    if (!e || len == 0)
        return send(fd, buf, len, flags);
    if (!e->news) {
        ssize_t n = send(fd, buf, len, flags);
        e->out_free = n == (ssize_t)len;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0; /* a poll answered from out_free was wrong: the rest later */
        return n;
    }
    size_t n = ring_room(&e->out);
    if (n > len)
        n = len;
    if (n > 0 && ring_reserve(&e->out, n) != 0) {
        if (ring_held(&e->out) == 0) {
            e->news = NULL; /* nothing queued: the socket for good, which the feeder reads too */
            return send(fd, buf, len, flags);
        }
        n = 0; /* after what is queued, when there is memory */
    }
    ring_put(&e->out, buf, n);
    if (n < len || ring_room(&e->out) == 0)
        e->out_full = 1; /* full, though libssh may not know yet: wake it when there is room */
    if (n > 0)
        e->news(e->news_arg);
    return (ssize_t)n;
}

/* "Readable?" with nothing held, not known quiet, and no wait: the answer is read rather than
 * polled for, into the buffer (a yes then costs one system call, not a poll and a recv). 1: bytes
 * (or an end) held now; 0: none, quiet from now on; -1: the kernel's poll is to answer. */
static int probe(int fd, ra_fd *e)
{
    size_t want = e->refill ? SC_RA_SIZE : RING_FIRST;
    if (ring_reserve(&e->in, want) != 0)
        return -1;
    ssize_t n = recv(fd, e->in.p, e->in.cap, MSG_DONTWAIT); /* empty: at position 0 */
    __atomic_fetch_add(&n_kernel_polls, 1, __ATOMIC_RELAXED);
    if (n > 0) {
        e->in.tail = (size_t)n;
        if ((size_t)n == e->in.cap)
            e->refill = 1; /* it filled what there was room for: more was probably waiting */
        else if (e->refill)
            e->small = (size_t)n <= PROBE_SMALL ? e->small + 1 : 0;
        return 1;
    }
    int err = n == 0 ? 0 : errno;
    ring_trim(&e->in);
    if (err == EAGAIN || err == EWOULDBLOCK) {
        e->in_quiet = 1;
        return 0;
    }
    if (err == EINTR || err == ENOTSOCK)
        return -1;
    e->end = err ? err : -1;
    return 1;
}

/* An attached fd's readiness is known here for what it holds: POLLIN when bytes are held, and
 * POLLOUT when its sends go to a feeder (room in the ring); the kernel is asked only for the
 * rest, and in a zero-timeout poll not about what it said last and cannot have changed without
 * the owner hearing of it (in_quiet, out_free). libssh asks for POLLOUT after each of its writes,
 * queueing its next ones (window adjusts) until a poll says writable, and a socket it was given
 * waits for it before libssh reads at all. For a fed fd, while there is an answer here, the rest
 * is asked only now and then: POLLIN (an end of file) waits until nothing is held or writable.
 * For a socket whose sends were not all taken, POLLOUT while bytes are held is asked once per
 * OUT_ASKED_EVERY bytes served, or when libssh did not read after the last answer. Asking each
 * time cost a poll() per 4 KiB; never asking while a feeder keeps bytes coming would hold the
 * window adjusts back until the flow stopped, and a fed session would never start. */
int sc_ra_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    int fd_of[POLL_SET_MAX];
    short events_of[POLL_SET_MAX], ours[POLL_SET_MAX];
    ra_fd *ent[POLL_SET_MAX];
    int attached = 0;
    nfds_t to_kernel = 0, answered = 0;
    if (n > POLL_SET_MAX)
        return poll(fds, n, timeout);
    for (nfds_t i = 0; i < n; i++) {
        fd_of[i] = fds[i].fd;
        events_of[i] = fds[i].events;
        ours[i] = 0;
        ent[i] = NULL;
        fds[i].revents = 0;
        if (fds[i].fd < 0 || fds[i].events == 0)
            continue;
        short ask = fds[i].events;
        ra_fd *e = ent[i] = lookup(fds[i].fd);
        if (e) {
            attached = 1;
            if ((ask & POLLIN) && (ring_held(&e->in) > 0 || e->end)) {
                ours[i] |= POLLIN;
                ask &= (short)~POLLIN;
            } else if ((ask & POLLIN) && e->in_quiet && timeout == 0) {
                ask &= (short)~POLLIN; /* not readable: the owner's watch says when it is */
            }
            if ((ask & POLLOUT) && e->news) {
                if (ring_room(&e->out) > 0)
                    ours[i] |= POLLOUT;
                else
                    e->out_full = 1; /* the owner is woken when there is room */
                ask &= (short)~POLLOUT;
            } else if ((ask & POLLOUT) && e->out_free && timeout == 0) {
                ours[i] |= POLLOUT;
                ask &= (short)~POLLOUT;
            }
            /* "readable?" the one question left for the kernel: a read answers it (with POLLOUT
             * for the kernel too, one poll answers both; a fed fd's POLLOUT answered here keeps
             * its end of file for later: the rule below) */
            if (ask == POLLIN && timeout == 0 && (!ours[i] || !e->news)) {
                int r = probe(fds[i].fd, e);
                if (r >= 0)
                    ask = 0;
                if (r > 0)
                    ours[i] |= POLLIN;
            }
            /* a socket's POLLOUT told from out_free leaves its POLLIN to the kernel */
            if (ours[i] && ask && (e->news || (ours[i] & POLLIN))) {
                int due = (ask & POLLOUT) && (e->unasked >= OUT_ASKED_EVERY || e->unread);
                if (due) {
                    e->unasked = 0;
                    e->unread = 0;
                } else {
                    ask = 0;
                    if (ours[i] & POLLIN)
                        e->unread = 1;
                }
            }
        }
        answered += ours[i] != 0;
        if (ask) {
            fds[i].events = ask;
            to_kernel++;
        } else {
            fds[i].fd = -1; /* the kernel skips it */
        }
    }
    /* with an answer here the kernel is not waited for; an fd whose readiness is all known here
     * and nil (a full ring) is not asked about at all: the feeder's wake comes instead */
    int rc = 0, err = 0;
    if (to_kernel > 0 || (answered == 0 && timeout != 0)) {
        rc = poll(fds, n, answered ? 0 : timeout);
        err = errno;
        if (attached)
            __atomic_fetch_add(&n_kernel_polls, 1, __ATOMIC_RELAXED);
    }
    if (attached)
        __atomic_fetch_add(&n_polls, 1, __ATOMIC_RELAXED);
    int ready = 0;
    for (nfds_t i = 0; i < n; i++) {
        ra_fd *e = ent[i];
        if (e && rc >= 0 && fds[i].fd >= 0) { /* what the kernel said of an attached fd, kept */
            short said = rc > 0 ? fds[i].revents : 0;
            if (fds[i].events & POLLIN)
                e->in_quiet = timeout == 0 && !(said & (POLLIN | POLLERR | POLLHUP | POLLNVAL));
            if ((said & POLLOUT) && !e->news)
                e->out_free = 1;
        }
        fds[i].fd = fd_of[i];
        fds[i].events = events_of[i];
        if (rc < 0)
            fds[i].revents = 0;
        fds[i].revents |= ours[i];
        ready += fds[i].revents != 0;
    }
    if (rc < 0 && answered == 0) {
        errno = err;
        return -1;
    }
    return ready;
}

int sc_ra_close(int fd)
{
    drop(fd, NULL, 1);
    return close(fd);
}

/* ---- the patch ---- */

static int patch(void)
{
    const char *off = getenv("SSHCHAIN_NO_READAHEAD");
    if (off && *off && strcmp(off, "0") != 0)
        return 0;
    static const sc_plt_hook hooks[] = {
        {"recv", (void *)sc_ra_recv},
        {"poll", (void *)sc_ra_poll},
        {"send", (void *)sc_ra_send},
        {"close", (void *)sc_ra_close},
    };
    return sc_plt_patch(hooks, sizeof hooks / sizeof hooks[0]);
}

static void install_once(void) { installed = patch(); }

int sc_readahead_install(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_once);
    return installed;
}
