/* hop.c - a hop: a direct-tcpip channel on the parent session, pumped to and from one end of a
 * socketpair whose other end is the child session's socket.
 *
 * Back-pressure both ways: bytes read from the channel wait in a fixed buffer until the socketpair
 * takes them (meanwhile the channel is not read, so its window closes), and bytes from the child are
 * read only as far as the channel window and the parent's output budget allow. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session.h"

#define HOP_BUF 65536

void sc_session_hop_open(sc_session *child, int fd);
void sc_session_hop_failed(sc_session *child, const sc_err *err);

enum { H_OPENING, H_OPEN, H_DONE };

typedef struct sc_hop {
    sc_chanuser cu; /* on the parent */
    sc_session *child;
    ssh_channel ch;
    int state;
    int fd; /* the pump's end of the socketpair */
    uv_poll_t poll;
    int poll_events; /* -1: no handle */
    int closing;
    int eof_to_child;   /* the channel's EOF has been passed on (shutdown SHUT_WR) */
    int eof_from_child; /* the child closed its end: EOF sent on the channel */
    char to_child[HOP_BUF];
    size_t tc_off, tc_len;
    char from_child[HOP_BUF];
    size_t fc_off, fc_len;
} sc_hop;

static void hop_service(sc_chanuser *u);
static void hop_pump(sc_hop *h);

static void hop_poll_closed(uv_handle_t *handle)
{
    sc_hop *h = handle->data;
    free(h);
}

static void hop_free(sc_hop *h)
{
    if (h->poll_events >= 0) {
        uv_poll_stop(&h->poll);
        uv_close((uv_handle_t *)&h->poll, hop_poll_closed);
    } else {
        free(h);
    }
}

/* Ends the pump: closes the channel and the pump's fd (the child then sees EOF). */
static void hop_finish(sc_hop *h)
{
    if (h->state == H_DONE)
        return;
    h->state = H_DONE;
    sc_session_detach(&h->cu);
    if (h->ch) {
        if (ssh_channel_is_open(h->ch))
            ssh_channel_close(h->ch);
        ssh_channel_free(h->ch);
        h->ch = NULL;
        h->cu.session->loop->live_channels--;
    }
    if (h->fd >= 0) {
        if (h->poll_events >= 0)
            uv_poll_stop(&h->poll);
        close(h->fd);
        h->fd = -1;
    }
}

static void on_hop_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    sc_hop *h = p->data;
    if (h->state != H_OPEN)
        return;
    sc_session *parent = h->cu.session;
    hop_pump(h);
    sc_session_kick(parent); /* flush what was queued, read what the channel may now take */
}

static void hop_update_poll(sc_hop *h)
{
    if (h->state != H_OPEN || h->fd < 0)
        return;
    int want = 0;
    if (h->tc_len > h->tc_off)
        want |= UV_WRITABLE;
    if (!h->eof_from_child && h->fc_len == h->fc_off)
        want |= UV_READABLE;
    if (want != h->poll_events) {
        if (want)
            uv_poll_start(&h->poll, want, on_hop_poll);
        else
            uv_poll_stop(&h->poll);
        h->poll_events = want;
    }
}

/* Moves bytes both ways as far as buffers, windows and budgets allow. */
static void hop_pump(sc_hop *h)
{
    sc_session *parent = h->cu.session;
    size_t moved = 0;

    /* channel -> child */
    while (moved < 4 * HOP_BUF) {
        if (h->tc_len > h->tc_off) {
            ssize_t n = send(h->fd, h->to_child + h->tc_off, h->tc_len - h->tc_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                hop_finish(h); /* the child is gone */
                return;
            }
            h->tc_off += (size_t)n;
            moved += (size_t)n;
            if (h->tc_off < h->tc_len)
                break;
            h->tc_off = h->tc_len = 0;
        }
        int n = ssh_channel_read_nonblocking(h->ch, h->to_child, HOP_BUF, 0);
        if (n > 0) {
            h->tc_len = (size_t)n;
            continue;
        }
        if ((n == SSH_EOF || ssh_channel_is_eof(h->ch)) && !h->eof_to_child) {
            h->eof_to_child = 1;
            shutdown(h->fd, SHUT_WR);
        }
        break;
    }

    /* child -> channel */
    while (!h->eof_from_child) {
        if (h->fc_len == h->fc_off) {
            ssize_t n = recv(h->fd, h->from_child, HOP_BUF, 0);
            if (n < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    h->eof_from_child = 1;
                break;
            }
            if (n == 0) {
                h->eof_from_child = 1;
                if (ssh_channel_is_open(h->ch))
                    ssh_channel_send_eof(h->ch);
                break;
            }
            h->fc_off = 0;
            h->fc_len = (size_t)n;
        }
        size_t want = h->fc_len - h->fc_off;
        size_t window = ssh_channel_window_size(h->ch);
        size_t budget = sc_session_write_budget(parent);
        if (want > window)
            want = window;
        if (want > budget)
            want = budget;
        if (want == 0)
            break;
        int w = ssh_channel_write(h->ch, h->from_child + h->fc_off, (uint32_t)want);
        if (w < 0) {
            hop_finish(h);
            return;
        }
        sc_session_wrote(parent, (size_t)w);
        h->fc_off += (size_t)w;
        if (h->fc_off == h->fc_len)
            h->fc_off = h->fc_len = 0;
        if ((size_t)w < want)
            break;
    }

    if (ssh_channel_is_closed(h->ch) && h->tc_len == h->tc_off && !h->eof_to_child) {
        h->eof_to_child = 1;
        shutdown(h->fd, SHUT_WR);
    }
    hop_update_poll(h);
}

static void hop_service(sc_chanuser *u)
{
    sc_hop *h = (sc_hop *)u;
    sc_session *parent = u->session;
    if (h->state == H_OPENING) {
        if (parent->state != SS_READY)
            return;
        if (!h->ch) {
            h->ch = ssh_channel_new(parent->ssh);
            if (!h->ch) {
                sc_err err;
                sc_err_set(&err, SC_EIO, "%s: hop channel: cannot create a channel on hop %d",
                           h->child->label, parent->hop);
                sc_session *child = h->child;
                hop_finish(h);
                sc_session_hop_failed(child, &err);
                return;
            }
            parent->loop->live_channels++;
        }
        int rc = ssh_channel_open_forward(h->ch, h->child->spec.host, h->child->spec.port,
                                          "127.0.0.1", 0);
        if (rc == SSH_AGAIN)
            return;
        if (rc != SSH_OK) {
            sc_err err;
            const char *e = ssh_get_error(parent->ssh);
            sc_err_set(&err, SC_ECHANNEL, "%s: channel refused by hop %d: %s", h->child->label,
                       parent->hop, e && *e ? e : "open failed");
            sc_session *child = h->child;
            hop_finish(h);
            sc_session_hop_failed(child, &err);
            return;
        }
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
            sc_err err;
            sc_err_set(&err, SC_EIO, "%s: hop channel: socketpair: %s", h->child->label,
                       strerror(errno));
            sc_session *child = h->child;
            hop_finish(h);
            sc_session_hop_failed(child, &err);
            return;
        }
        h->fd = sv[0];
        if (uv_poll_init(&parent->loop->uv, &h->poll, h->fd) == 0) {
            h->poll.data = h;
            h->poll_events = 0;
        }
        h->state = H_OPEN;
        sc_session_hop_open(h->child, sv[1]);
    }
    if (h->state == H_OPEN)
        hop_pump(h);
}

static void hop_session_lost(sc_chanuser *u, const sc_err *why)
{
    (void)why; /* the child is torn down with its parent */
    sc_hop *h = (sc_hop *)u;
    hop_finish(h);
}

sc_hop *sc_hop_start(sc_session *parent, sc_session *child)
{
    sc_hop *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->child = child;
    h->fd = -1;
    h->poll_events = -1;
    h->state = H_OPENING;
    h->cu.service = hop_service;
    h->cu.session_lost = hop_session_lost;
    sc_session_attach(parent, &h->cu);
    return h;
}

/* The child is going away: stop pumping and free the hop once its handle has closed. */
void sc_hop_close(sc_hop *h)
{
    hop_finish(h);
    hop_free(h);
}
