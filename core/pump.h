/* pump.h - moves bytes between an SSH channel and a local fd, both ways, with back-pressure and
 * half-close. Used by hops (the fd is one end of a socketpair whose other end is the child
 * session's socket), local forwards and SOCKS (an accepted client), and remote forwards. */
#ifndef SC_PUMP_H
#define SC_PUMP_H

#include "session.h"

typedef struct sc_pump sc_pump;

typedef struct {
    /* The direct-tcpip channel is open: pumping starts once the pump has an fd. */
    void (*opened)(sc_pump *p, void *ud);
    /* The channel could not be opened (err says why); the fd is still open. The owner must call
     * sc_pump_close (from here or later). */
    void (*failed)(sc_pump *p, const sc_err *err, void *ud);
    /* Both directions have ended, or one failed: channel and fd are closed. */
    void (*finished)(sc_pump *p, void *ud);
} sc_pump_events;

/* Opens a direct-tcpip channel on s to host:port and pumps it to fd (-1: the fd is given later
 * with sc_pump_set_fd, from the opened event). The pump owns fd from now on. */
sc_pump *sc_pump_open(sc_session *s, int fd, const char *host, int port, const char *orig_host,
                      int orig_port, const sc_pump_events *ev, void *ud);

/* The same to a Unix socket at path on the server (direct-streamlocal@openssh.com). */
sc_pump *sc_pump_open_unix(sc_session *s, int fd, const char *path, const sc_pump_events *ev,
                           void *ud);

/* Pumps an already open channel (an accepted forwarded-tcpip channel) to fd. */
sc_pump *sc_pump_attach(sc_session *s, ssh_channel ch, int fd, const sc_pump_events *ev, void *ud);

void sc_pump_set_fd(sc_pump *p, int fd);
/* The bytes from the channel go straight into the buffer of peer_fd (readahead.c), the child
 * session's own end of the socketpair, attached by owner; the socketpair then carries the
 * channel's end of file only, and the child's bytes the other way. Where the feed is refused
 * (not attached), they go through the fd as before. */
void sc_pump_feed(sc_pump *p, int peer_fd, void *owner);
/* The other end of the fd was written to (the child session of a hop sent something): read it
 * at the next service round, even after an EAGAIN, rather than waiting for the fd's watcher. */
void sc_pump_fd_news(sc_pump *p);

/* Bytes to send on the channel before any read from the fd (what a SOCKS client sent with its
 * request). Call before the channel is open; 0, or -1 out of memory. */
int sc_pump_preload(sc_pump *p, const void *data, size_t len);

/* The receive window of the pump's channel (default SC_FORWARD_WINDOW): set before data flows. */
void sc_pump_set_window(sc_pump *p, uint32_t bytes);

/* Stops the pump (no more events) and frees it once its handle has closed. */
void sc_pump_close(sc_pump *p);

#endif
