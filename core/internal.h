/* internal.h - what the files of the core call in each other and nobody else may: the steps of
 * a session's connect (session.c, connect.c). The binding (lua/) includes only the public
 * headers: session.h, exec.h, forward.h, transfer.h, loop.h. */
#ifndef SC_INTERNAL_H
#define SC_INTERNAL_H

#include "session.h"

/* A new session (one reference for the caller) and its connect op (*op, one reference for the
 * caller), its deadline started; parent (may be NULL) is linked in. Nothing is connected yet.
 * NULL: out of memory (spec is then still the caller's). */
sc_session *sc_session_new(sc_loop *loop, sc_session *parent, sc_hostspec *spec, sc_op **op);

/* Resolves s's host and connects to it over TCP (a session with no parent). */
void sc_session_connect_tcp(sc_session *s);

/* Serves the auth-agent channels the server opens on s (agentfwd.c: ForwardAgent). */
void sc_agentfwd_attach(sc_session *s);

/* Starts s's ProxyCommand (proxy.c) and the handshake over its stdin/stdout. */
void sc_proxy_start(sc_session *s);

/* Connects s through the mux at s->spec.mux_path (mux.c), then starts the handshake. */
void sc_mux_start(sc_session *s);

/* Starts the SSH handshake on fd, a connected socket (TCP, or a hop's socketpair end) that
 * becomes s's own. 0, or -1 with s failed. */
int sc_session_begin_handshake(sc_session *s, int fd);

/* The session is carried by transport (released through ops->close when s goes away). */
void sc_session_set_transport(sc_session *s, void *transport, const sc_transport_ops *ops);

/* Fails s (and, first, its children) with err. */
void sc_session_fail(sc_session *s, const sc_err *err);

/* Fails s with a message in s's own words: "LABEL: STAGE: detail", the stage being the one s is
 * at (or `stage` when not NULL). */
void sc_session_failf(sc_session *s, sc_code code, const char *stage, const char *reason,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
