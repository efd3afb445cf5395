/* forward.h - local port forwards (ssh -L) and SOCKS5 proxies (ssh -D) carried by a session:
 * a listening socket whose every accepted connection becomes a direct-tcpip channel. */
#ifndef SC_FORWARD_H
#define SC_FORWARD_H

#include "session.h"

typedef struct {
    const char *bind; /* local address (numeric, or "localhost"); default 127.0.0.1 */
    int port;         /* 0: any free port */
    const char *path; /* set: listen on a Unix socket there (made 0600, removed at the end) */
    const char *to_host;
    int to_port;
    const char *to_path; /* set: connections go to this Unix socket on the server */
    int socks;           /* a SOCKS5 proxy: the destination comes from each client */
    int remote; /* ssh -R: the server listens on bind:port, connections come to to_host:to_port */
    sc_op *listener; /* set (local forwards and SOCKS): serve this kept listener (listener.h)
                      * instead of binding; bind, port and path are then its own */
} sc_forward_opts;

/* Starts listening. Returns the forward's op (done when the forward has closed: by
 * sc_op cancel, or when its session goes away), or NULL with *err set (EIO naming the port). The
 * op is notified when connection errors are waiting (sc_forward_take_error). */
sc_op *sc_forward_start(sc_session *s, const sc_forward_opts *o, sc_err *err);

int sc_forward_port(sc_op *op);
/* A remote forward's listener is up (once: the call clears the news). */
int sc_forward_take_listening(sc_op *op);
/* The oldest connection error not yet taken, or NULL; valid until the next call. */
const sc_err *sc_forward_take_error(sc_op *op);
int sc_forward_has_errors(sc_op *op);
/* Connections open now, and accepted in all. */
void sc_forward_counts(sc_op *op, int *active, long *accepted);

#endif
