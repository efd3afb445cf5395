/* pump.c - a channel <-> fd pump.
 *
 * Back-pressure both ways: bytes read from the channel wait in a fixed buffer until the fd takes
 * them (meanwhile the channel is not read, so its window closes and the peer stops), and bytes
 * from the fd are read only as far as the channel window and the session's output budget allow.
 * Half-close: the channel's EOF becomes shutdown(SHUT_WR) on the fd, the fd's EOF becomes the
 * channel's EOF; the pump finishes when both directions have ended. */
#include "pump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "readahead.h"

#define PUMP_BUF (256 * 1024) /* fd -> channel */

enum { P_OPENING, P_OPEN, P_DONE };

struct sc_pump {
    sc_chanuser cu;
    sc_pump_events ev;
    void *ud;
    sc_channel chan;
    int state;
    int fd;
    uv_poll_t poll;
    int poll_events; /* -1: no handle */
    int closed;      /* sc_pump_close was called: no more events */
    int in_event;    /* an event callback runs: a close during it frees after it */
    int free_due;    /* sc_pump_close came during an event */
    int eof_to_fd;   /* the channel's EOF has been passed on */
    int eof_from_fd; /* the fd ended: EOF sent on the channel */
    /* The fd said EAGAIN and has been watched for reading since, without a word: a recv now
     * would say EAGAIN again. The session's rounds serve every pump on it; most have nothing. */
    int fd_drained;
    char *to_fd;       /* channel -> fd: `window` bytes, allocated on first use */
    int to_fd_written; /* a read put bytes in it (else its pages are all still zero) */
    uint32_t window;
    size_t tf_off, tf_len;
    int feed_fd;      /* channel -> fd bytes go into this fd's buffer instead (sc_pump_feed) */
    void *feed_owner; /* NULL: no feed */
    int feed_full;    /* the feed took less than offered: its room callback says when to go on */
    char *from_fd; /* fd -> channel: PUMP_BUF bytes, mapped on first use (pages never written cost
                    * nothing: most hops and forwards carry little this way) */
    size_t ff_off, ff_len;
};

static void pump_run(sc_pump *p);

/* No more feed: the socket from now on, both ways (what the child sent into its ring goes
 * there first); the child's buffer calls the pump no more. */
static void pump_unfeed(sc_pump *p)
{
    if (!p->feed_owner)
        return;
    sc_readahead_on_room(p->feed_fd, p->feed_owner, NULL, NULL);
    sc_readahead_out_feed(p->feed_fd, p->feed_owner, NULL, NULL);
    p->feed_owner = NULL;
    p->feed_full = 0;
}

static void pump_free(sc_pump *p)
{
    sc_channel_free(&p->chan);
    if (p->to_fd_written)
        sc_big_free(p->to_fd, p->window);
    else
        sc_big_free_clean(p->to_fd, p->window);
    sc_big_free(p->from_fd, PUMP_BUF);
    free(p);
}

static void pump_handle_closed(uv_handle_t *h) { pump_free(h->data); }

/* Releases the channel and the fd; fires `finished` unless closed by the owner. */
static void pump_finish(sc_pump *p)
{
    if (p->state == P_DONE)
        return;
    p->state = P_DONE;
    pump_unfeed(p);
    sc_session_detach(&p->cu);
    sc_channel_close(&p->chan);
    if (p->fd >= 0) {
        if (p->poll_events >= 0)
            uv_poll_stop(&p->poll);
        close(p->fd);
        p->fd = -1;
    }
    if (!p->closed && p->ev.finished)
        p->ev.finished(p, p->ud);
}

/* The channel could not be opened: the owner hears it while the fd is still open (a SOCKS
 * client gets its failure reply) and must close the pump. */
static void pump_fail(sc_pump *p, const sc_err *err)
{
    if (p->closed || !p->ev.failed) {
        pump_finish(p);
        return;
    }
    p->closed = 1; /* no `finished` after `failed` */
    sc_session_detach(&p->cu);
    p->ev.failed(p, err, p->ud);
}

static void on_pump_poll(uv_poll_t *h, int status, int events)
{
    sc_pump *p = h->data;
    if (status < 0 || (events & (UV_READABLE | UV_DISCONNECT)))
        p->fd_drained = 0;
    if (p->state != P_OPEN)
        return;
    sc_session *s = p->cu.session;
    sc_session_ref(s);
    pump_run(p);
    sc_session_kick(s); /* flush what was queued; the window may take more now */
    sc_session_unref(s);
}

static void pump_update_poll(sc_pump *p)
{
    if (p->state != P_OPEN || p->fd < 0)
        return;
    if (p->poll_events < 0) {
        if (uv_poll_init(&p->cu.session->loop->uv, &p->poll, p->fd) != 0)
            return;
        p->poll.data = p;
        p->poll_events = 0;
    }
    int want = 0;
    if (p->tf_len > p->tf_off && !p->feed_full) /* a full feed says itself when it has room */
        want |= UV_WRITABLE;
    if (!p->eof_from_fd && p->ff_len == p->ff_off)
        want |= UV_READABLE;
    if (!(want & UV_READABLE))
        p->fd_drained = 0; /* unwatched, it may fill */
    if (want != p->poll_events) {
        if (want)
            uv_poll_start(&p->poll, want, on_pump_poll);
        else
            uv_poll_stop(&p->poll);
        p->poll_events = want;
    }
}

/* channel -> fd: into the feed, else the fd. The bytes taken, or -1 with errno (EAGAIN: none
 * now). */
static ssize_t pump_put(sc_pump *p, const void *data, size_t len)
{
    if (p->feed_owner) {
        long n = sc_readahead_feed(p->feed_fd, p->feed_owner, data, len);
        if (n >= 0) {
            p->feed_full = (size_t)n < len;
            if (n == 0)
                errno = EAGAIN;
            return n > 0 ? n : -1;
        }
        pump_unfeed(p); /* the child let it go, or its buffer could not be had */
    }
    return send(p->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* channel -> fd straight from libssh's buffer as the bytes arrive, when nothing read before
 * waits and the fd takes them now (one copy fewer per byte through each hop). Whatever it does
 * not take is read by pump_to_fd, which also finds out about a failing fd. */
static size_t pump_take(sc_channel *c, const void *data, size_t len, void *ud)
{
    (void)c;
    sc_pump *p = ud;
    if (p->state != P_OPEN || p->fd < 0 || p->tf_len > p->tf_off || p->eof_to_fd)
        return 0;
    ssize_t n = pump_put(p, data, len);
    return n > 0 ? (size_t)n : 0;
}

/* the child sent: its bytes wait in its ring for the next round */
static void pump_news(void *ud)
{
    sc_pump *p = ud;
    if (p->state == P_OPEN)
        sc_session_kick(p->cu.session);
}

/* the child's buffer has room again for what the feed did not take */
static void pump_room(void *ud)
{
    ((sc_pump *)ud)->feed_full = 0;
    pump_news(ud);
}

void sc_pump_feed(sc_pump *p, int peer_fd, void *owner)
{
    p->feed_fd = peer_fd;
    p->feed_owner = owner;
    sc_readahead_on_room(peer_fd, owner, pump_room, p);
    sc_readahead_out_feed(peer_fd, owner, pump_news, p);
}

/* fd -> channel from the child's ring, straight from it: 1 to go on, 0 when the ring is empty
 * (the socket may still have its end of file, or bytes flushed at a stop), -1 finished. */
static int pump_from_ring(sc_pump *p)
{
    for (;;) {
        const char *d;
        long avail = sc_readahead_out_peek(p->feed_fd, p->feed_owner, &d);
        if (avail <= 0)
            return 0;
        long w = sc_channel_write(&p->chan, d, (size_t)avail);
        if (w < 0) {
            pump_finish(p);
            return -1;
        }
        sc_readahead_out_consume(p->feed_fd, p->feed_owner, (size_t)w);
        if (w < avail)
            return 1;
    }
}

static void pump_takes(sc_pump *p)
{
    p->chan.take = pump_take;
    p->chan.take_ud = p;
}

/* channel -> fd, as far as the fd takes it; 0 to go on, -1 when the pump finished. */
static int pump_to_fd(sc_pump *p)
{
    size_t moved = 0;
    while (moved < 4 * PUMP_BUF && !p->eof_to_fd) {
        if (p->tf_len > p->tf_off) {
            ssize_t n = pump_put(p, p->to_fd + p->tf_off, p->tf_len - p->tf_off);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ENOTCONN)
                    break;
                pump_finish(p); /* the local side is gone */
                return -1;
            }
            p->tf_off += (size_t)n;
            moved += (size_t)n;
            if (p->tf_off < p->tf_len)
                break;
            p->tf_off = p->tf_len = 0;
        }
        if (!p->to_fd && !(p->to_fd = sc_big_alloc(p->window))) {
            pump_finish(p);
            return -1;
        }
        int n = sc_channel_read(&p->chan, p->to_fd, p->window, 0);
        if (n > 0) {
            p->to_fd_written = 1;
            p->tf_len = (size_t)n;
            continue;
        }
        if (n < 0) {
            p->eof_to_fd = 1;
            shutdown(p->fd, SHUT_WR);
        }
        break;
    }
    return 0;
}

/* fd -> channel, as far as the window and the session's budget allow; 0 or -1 (finished). */
static int pump_from_fd(sc_pump *p)
{
    if (p->feed_owner && p->ff_len == p->ff_off && !p->eof_from_fd) {
        int r = pump_from_ring(p);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    while (!p->eof_from_fd) {
        if (p->ff_len == p->ff_off) {
            if (p->fd_drained)
                break;
            if (!p->from_fd && p->feed_owner) {
                /* fed, the socket carries only the end of file, or what a stopping child sent
                 * there: no buffer until there are bytes */
                char c;
                ssize_t n = recv(p->fd, &c, 1, MSG_PEEK);
                if (n < 0) {
                    if (errno == EAGAIN && p->poll_events >= 0)
                        p->fd_drained = 1;
                    if (errno == EAGAIN || errno == EINTR || errno == ENOTCONN)
                        break;
                    n = 0;
                }
                if (n == 0) {
                    p->eof_from_fd = 1;
                    sc_channel_send_eof(&p->chan);
                    break;
                }
            }
            if (!p->from_fd && !(p->from_fd = sc_big_alloc(PUMP_BUF))) {
                pump_finish(p);
                return -1;
            }
            ssize_t n = recv(p->fd, p->from_fd, PUMP_BUF, 0);
            if (n < 0) {
                if (errno == EAGAIN && p->poll_events >= 0) /* its watcher will say more */
                    p->fd_drained = 1;
                if (errno == EAGAIN || errno == EINTR || errno == ENOTCONN)
                    break;
                n = 0; /* reset or error: end this direction */
            }
            if (n == 0) {
                p->eof_from_fd = 1;
                sc_channel_send_eof(&p->chan);
                break;
            }
            p->ff_off = 0;
            p->ff_len = (size_t)n;
        }
        size_t want = p->ff_len - p->ff_off;
        long w = sc_channel_write(&p->chan, p->from_fd + p->ff_off, want);
        if (w < 0) {
            pump_finish(p);
            return -1;
        }
        p->ff_off += (size_t)w;
        if (p->ff_off == p->ff_len)
            p->ff_off = p->ff_len = 0;
        if ((size_t)w < want)
            break;
    }
    return 0;
}

/* Moves bytes both ways as far as buffers, windows and budgets allow. */
static void pump_run(sc_pump *p)
{
    if (p->fd < 0)
        return;
    if (pump_to_fd(p) < 0 || pump_from_fd(p) < 0)
        return;
    if ((p->eof_to_fd && p->eof_from_fd) || (sc_channel_is_closed(&p->chan) && p->eof_to_fd)) {
        pump_finish(p);
        return;
    }
    pump_update_poll(p);
}

static void pump_service(sc_chanuser *u)
{
    sc_pump *p = (sc_pump *)u;
    if (p->state == P_OPENING) {
        if (u->session->state != SS_READY)
            return;
        sc_err err;
        int r = sc_channel_step(&p->chan, NULL, &err); /* the owner names the stage */
        if (r == 0)
            return;
        if (r < 0) {
            pump_fail(p, &err);
            return;
        }
        p->state = P_OPEN;
        if (p->ev.opened) {
            /* the owner may close the pump from here (a hop whose handshake cannot start) */
            p->in_event = 1;
            p->ev.opened(p, p->ud);
            p->in_event = 0;
            if (p->free_due) {
                sc_pump_close(p);
                return;
            }
        }
        if (p->state != P_OPEN)
            return;
    }
    if (p->state == P_OPEN)
        pump_run(p);
}

static void pump_session_lost(sc_chanuser *u, const sc_err *why)
{
    sc_pump *p = (sc_pump *)u;
    if (p->state == P_OPENING)
        pump_fail(p, why);
    else
        pump_finish(p);
}

static sc_pump *pump_new(sc_session *s, int fd, const sc_pump_events *ev, void *ud)
{
    sc_pump *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->ev = *ev;
    p->ud = ud;
    p->fd = fd;
    p->window = SC_FORWARD_WINDOW;
    p->poll_events = -1;
    p->cu.service = pump_service;
    p->cu.session_lost = pump_session_lost;
    sc_session_attach(s, &p->cu);
    return p;
}

static sc_pump *pump_open(sc_session *s, int fd, sc_chan_opts *o, const sc_pump_events *ev,
                          void *ud)
{
    sc_pump *p = pump_new(s, fd, ev, ud);
    if (!p)
        return NULL;
    o->window = p->window;
    if (sc_channel_init(&p->chan, s, o) < 0) {
        sc_session_detach(&p->cu);
        pump_free(p);
        return NULL;
    }
    pump_takes(p);
    p->state = P_OPENING;
    sc_session_kick(s);
    return p;
}

sc_pump *sc_pump_open(sc_session *s, int fd, const char *host, int port, const char *orig_host,
                      int orig_port, const sc_pump_events *ev, void *ud)
{
    sc_chan_opts o = {
        .to_host = host, .to_port = port, .orig_host = orig_host, .orig_port = orig_port};
    return pump_open(s, fd, &o, ev, ud);
}

sc_pump *sc_pump_open_unix(sc_session *s, int fd, const char *path, const sc_pump_events *ev,
                           void *ud)
{
    /* OpenSSH's client sends these two reserved fields as an empty name and 0 */
    sc_chan_opts o = {.to_host = path, .to_unix = 1, .orig_host = "", .orig_port = 0};
    return pump_open(s, fd, &o, ev, ud);
}

sc_pump *sc_pump_attach(sc_session *s, ssh_channel ch, int fd, const sc_pump_events *ev, void *ud)
{
    sc_pump *p = pump_new(s, fd, ev, ud);
    if (!p)
        return NULL;
    sc_channel_adopt(&p->chan, s, ch, p->window);
    pump_takes(p);
    p->state = P_OPEN;
    sc_session_kick(s);
    return p;
}

void sc_pump_set_window(sc_pump *p, uint32_t bytes)
{
    if (!p->to_fd) {
        p->window = bytes;
        p->chan.window = bytes;
    }
}

int sc_pump_preload(sc_pump *p, const void *data, size_t len)
{
    if (len > PUMP_BUF - p->ff_len)
        return -1;
    if (!p->from_fd && !(p->from_fd = sc_big_alloc(PUMP_BUF)))
        return -1;
    memcpy(p->from_fd + p->ff_len, data, len);
    p->ff_len += len;
    return 0;
}

void sc_pump_fd_news(sc_pump *p)
{
    if (p->feed_owner && sc_readahead_out_room(p->feed_fd, p->feed_owner) >= 0)
        return; /* its sends come through the ring, which says so itself (pump_news) */
    if (!p->fd_drained)
        return; /* its next service reads it anyway */
    p->fd_drained = 0;
    if (p->state == P_OPEN)
        sc_session_kick(p->cu.session);
}

void sc_pump_set_fd(sc_pump *p, int fd)
{
    p->fd = fd;
    p->fd_drained = 0;
    if (p->state == P_OPEN)
        sc_session_kick(p->cu.session);
}

void sc_pump_close(sc_pump *p)
{
    p->closed = 1;
    if (p->in_event) {
        p->free_due = 1;
        return;
    }
    pump_finish(p);
    if (p->poll_events >= 0) {
        uv_close((uv_handle_t *)&p->poll, pump_handle_closed);
    } else {
        pump_free(p);
    }
}
