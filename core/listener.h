/* listener.h - listening sockets: made for forwards (TCP, or a Unix socket made 0600), and kept
 * as an op of their own when a forward must outlive its session (reconnecting forwards): the
 * socket stays bound while the chain is rebuilt, new clients wait in its backlog, or are
 * accepted and closed at once when told to refuse, and the next forward serves it again. */
#ifndef SC_LISTENER_H
#define SC_LISTENER_H

#include <stddef.h>

#include "loop.h"

/* A non-blocking TCP listener on bind_addr:port (numeric, "localhost" or "*"; port 0: any
 * free one, *out_port tells which); -1 with *err set (EIO naming the address). */
int sc_listen_tcp(const char *bind_addr, int port, int *out_port, sc_err *err);
/* A non-blocking listener on the Unix socket path, 0600 before anyone can connect; an existing
 * file is not replaced. -1 with *err set. */
int sc_listen_unix(const char *path, sc_err *err);
/* A non-blocking connection to the Unix socket at path (it connects at once or not at all);
 * -1 with errno set (ENAMETOOLONG past sun_path). */
int sc_connect_unix(const char *path);
/* path made absolute against the current directory (malloc'd; NULL when out of memory). */
char *sc_absolute_path(const char *path);

/* A listener op: bound until canceled (then its socket closes, and a Unix socket it made is
 * removed unless replaced since). path NULL: TCP on bind:port. NULL with *err on failure. */
sc_op *sc_listener_open(sc_loop *loop, const char *bind_addr, int port, const char *path,
                        sc_err *err);
/* Its socket (forwards serve a dup of it), the port bound (0 for a Unix socket) and its path. */
int sc_listener_fd(sc_op *op);
int sc_listener_port(sc_op *op);
const char *sc_listener_path(sc_op *op);
/* on: every client waiting, and every new one, is accepted and closed (refused cleanly);
 * off: they wait in the backlog for the next forward. */
void sc_listener_refuse(sc_op *op, int on);
/* Clients refused so far. */
long sc_listener_refused(sc_op *op);

#endif
