/* session.h - one SSH session of a tree: connect (directly or through its parent), verify the host
 * key, authenticate, then serve the channels that use it. */
#ifndef SC_SESSION_H
#define SC_SESSION_H

#include <libssh/libssh.h>
#include <libssh/callbacks.h>
#include <libssh/server.h> /* ssh_execute_message_callbacks, message accessors: client-side too */

#include "auth.h"
#include "loop.h"

typedef enum {
    SS_RESOLVING,
    SS_TCP,
    SS_HOP_OPEN,
    SS_HANDSHAKE,
    SS_HOSTKEY,
    SS_AUTH,
    SS_READY,
    SS_FAILED,
    SS_CLOSED,
} sc_sstate;

/* The stage a session in `state` is at, as failures name it: "resolve", "connect",
 * "hop channel", "handshake", "host key", "auth", "connection" (ready), "closed". */
const char *sc_session_stage_name(sc_sstate state);

typedef struct sc_session sc_session;
typedef struct sc_chanuser sc_chanuser;

/* Something that uses a session's channels (a command, a pump, a transfer, a forward): it is
 * advanced on every service round of the session, and told when the session goes away. */
struct sc_chanuser {
    sc_session *session;
    void (*service)(sc_chanuser *u);
    void (*session_lost)(sc_chanuser *u, const sc_err *why);
    /* May be NULL: offered a channel the server opens towards us (a remote forward's
     * forwarded-tcpip connection); returns 1 when it took the message (accepted or refused). */
    int (*incoming)(sc_chanuser *u, ssh_message msg);
    sc_chanuser *next;
    int attached;
};

/* What carries a session's bytes when it is not a TCP socket of its own (a hop channel on the
 * parent): the session releases it when it goes away. */
typedef struct {
    void (*close)(void *transport);
    /* May be NULL: offered a failure of the session before it is ready; returns 1 when it takes
     * over (a ProxyCommand that ended explains the failure better, once its exit is known). */
    int (*intercept_failure)(void *transport, const sc_err *err);
    /* May be NULL: the session has written to its socket, so the transport has bytes to carry
     * (a hop's pump reads its end of the socketpair again). */
    void (*output)(void *transport);
} sc_transport_ops;

struct sc_session {
    sc_loop *loop;
    int refs;
    sc_session *parent;
    sc_session *first_child, *next_sibling;
    sc_hostspec spec;
    int hop;
    char label[300];
    sc_sstate state;
    sc_err fail;

    ssh_session ssh;
    int fd;             /* the fd the loop polls; ours to close */
    int lib_fd;         /* a duplicate given to libssh */
    int lib_fd_given;   /* ssh_connect has taken lib_fd over */
    int fd_nonblocking; /* libssh made the socket blocking once (connected), and it is not now */
    uv_poll_t poll;
    int poll_events; /* -1: not started */
    uv_timer_t timer;
    uv_timer_t keepalive_timer;
    uv_getaddrinfo_t gai;
    int gai_pending;
    int handles_open;
    struct ssh_counter_struct rx, tx;
    uint64_t rx_seen;       /* rx.in_bytes at the last keepalive check */
    uint64_t rx_seen_serve; /* rx.in_bytes at the last service round */
    double t_last_rx;       /* sc_loop_now() when bytes last arrived */
    double t_doubt;         /* the ancestors were probed then, doubting the chain (0: not) */
    double t_suspect;       /* the latest probe of this session was sent then (0: never) */
    int keepalive_misses;

    sc_op *connect_op;

    sc_auth auth;

    sc_chanuser *users;
    void *transport; /* a child's hop pump on the parent, or NULL */
    const sc_transport_ops *transport_ops;
    size_t write_queued; /* channel bytes queued since the output buffer was last empty */
    uint64_t tx_told;    /* tx.out_bytes when the transport last heard of output */
    uint64_t tx_kicked;  /* tx.out_bytes when a round was last asked for to flush (+1: never) */
    int out_kicked;      /* that round has not run yet */
    int global_busy;     /* a tcpip-forward request awaits its reply */
    void *global_owner;  /* whose: libssh tracks one pending global request per session */
    ssh_channel probe;   /* the keepalive probe waiting for its answer */

    sc_deferred kick;
    sc_chanuser *serve_next; /* the user a service round takes next */

    /* what the connect learned, for probes (sshlua -r tree) */
    char hostkey_fp[200]; /* "ssh-ed25519 SHA256:..." */
    int hostkey_note;     /* SC_HOSTKEY_NOTE_*: recorded (accept-new), or not checked (off) */
    char banner[120];     /* the server's version string, sanitized */
    double t_start, t_connected, t_handshake, t_ready; /* sc_loop_now() at each stage, 0 before */
};

/* Starts connecting a session described by spec (taken over) through parent (NULL: directly over
 * TCP). Returns the session with one reference for the caller; *op receives the connect op
 * (one reference for the caller), completed when the session is ready or has failed.
 * (connect.c: the hop through a parent is built there.) */
sc_session *sc_session_start(sc_loop *loop, sc_session *parent, sc_hostspec *spec, sc_op **op);

/* A mux socket (mux.c): 0 when path is a socket of this user's, closed to others, in a directory
 * others cannot write; 1 when there is nothing at path; -1 when it is refused. why: the reason. */
int sc_mux_check(const char *path, char *why, size_t cap);
/* As sc_mux_check, and 2 when it is refused no longer but nothing answers (a dead mux). */
int sc_mux_probe(const char *path, char *why, size_t cap);

/* Closes the session and, first, its children: their work ends with ECLOSED. Idempotent. */
void sc_session_close(sc_session *s);
void sc_session_ref(sc_session *s);
void sc_session_unref(sc_session *s);

/* Asks for a service round of s soon (after the current callback returns). */
void sc_session_kick(sc_session *s);

/* How many bytes channel users may queue for sending now (back-pressure on the output buffer). */
size_t sc_session_write_budget(sc_session *s);
/* n bytes were queued (0: something may be waiting to be sent): watch for writability. */
void sc_session_wrote(sc_session *s, size_t n);

/* Channel receive windows. libssh 0.10 keeps a channel's window near 1.28 MB unless a read asks
 * for more; through a chain of hops that stalls the pipeline (measured: downloads at half speed).
 * OpenSSH uses 2 MB per channel. */
#define SC_HOP_WINDOW     (4u * 1024 * 1024)
#define SC_FORWARD_WINDOW (2u * 1024 * 1024)
#define SC_XFER_WINDOW    (2u * 1024 * 1024)
#define SC_EXEC_WINDOW    (2u * 1024 * 1024)
/* SFTP has 64 reads of 64 KiB in flight (sftp.h): a window of less leaves the server waiting
 * (measured: 4 MiB against 2, downloads 13 % faster through j1 -> j2 -> t4) */
#define SC_SFTP_WINDOW (4u * 1024 * 1024)

void sc_session_attach(sc_session *s, sc_chanuser *u);
void sc_session_detach(sc_chanuser *u);

#endif
