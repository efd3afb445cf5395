/* session.h - one SSH session of a tree: connect (directly or through its parent), verify the host
 * key, authenticate, then serve the channels that use it. */
#ifndef SC_SESSION_H
#define SC_SESSION_H

#include <libssh/libssh.h>
#include <libssh/callbacks.h>
#include <libssh/server.h> /* ssh_execute_message_callbacks, message accessors: client-side too */

#include "loop.h"

enum { SC_HOSTKEY_STRICT = 0, SC_HOSTKEY_ACCEPT_NEW, SC_HOSTKEY_OFF };

/* How to reach and log into one host. All strings are owned by the spec. */
typedef struct {
    char *host;
    int port;
    char *user;
    char *password;
    char **identities;
    int n_identities;
    char *passphrase;
    int agent; /* -1: use it when SSH_AUTH_SOCK is set and nothing else is given; 0 no; 1 yes */
    char *known_hosts;
    int hostkey_mode;
    double timeout;   /* seconds for the whole connect of this hop */
    double keepalive; /* seconds between keepalives once connected; 0 off */
} sc_hostspec;

void sc_hostspec_free(sc_hostspec *spec);

typedef enum {
    SS_RESOLVING,
    SS_TCP,
    SS_HOP_OPEN,
    SS_HANDSHAKE,
    SS_AUTH,
    SS_READY,
    SS_FAILED,
    SS_CLOSED,
} sc_sstate;

typedef struct sc_session sc_session;
typedef struct sc_chanuser sc_chanuser;

/* Something that uses a session's channels (a command, a hop pump): it is advanced on every
 * service round of the session, and told when the session goes away. */
struct sc_chanuser {
    sc_session *session;
    const char *kind; /* "forward" for forwards (incoming channels are matched against them) */
    void (*service)(sc_chanuser *u);
    void (*session_lost)(sc_chanuser *u, const sc_err *why);
    sc_chanuser *next;
    int attached;
};

struct sc_pump;

struct sc_session {
    sc_loop *loop;
    int refs;
    sc_session *parent;
    sc_session *first_child, *next_sibling;
    sc_hostspec spec;
    int hop;
    char label[300];
    sc_sstate state;
    const char *stage;
    sc_err fail;

    ssh_session ssh;
    int fd;           /* the fd the loop polls; ours to close */
    int lib_fd;       /* a duplicate given to libssh */
    int lib_fd_given; /* ssh_connect has taken lib_fd over */
    uv_poll_t poll;
    int poll_events; /* -1: not started */
    uv_timer_t timer;
    uv_timer_t keepalive_timer;
    uv_getaddrinfo_t gai;
    int gai_pending;
    int handles_open;
    struct ssh_counter_struct rx, tx;
    uint64_t rx_seen; /* rx.in_bytes at the last keepalive check */
    int keepalive_misses;

    sc_op *connect_op;

    struct {
        int phase;
        int methods;
        int next_identity;
        int agent_tried, kbd_tried, pw_tried, kbd_rounds;
        ssh_key key;
        char tried[300];
        char key_problem[300];
    } auth;

    sc_chanuser *users;
    struct sc_pump *pump; /* for a child: the hop's pump on the parent's connection */
    struct sc_burial *buried; /* channels given up while opening (sc_session_bury) */
    size_t write_queued; /* channel bytes queued since the output buffer was last empty */
    int global_busy;     /* a tcpip-forward request awaits its reply */
    void *global_owner;  /* whose: libssh tracks one pending global request per session */
    ssh_channel probe;   /* the keepalive probe waiting for its answer */

    sc_session *next_kicked;
    int kicked;
    int servicing;

    /* what the connect learned, for probes (sshlua -r tree) */
    char hostkey_fp[200];     /* "ssh-ed25519 SHA256:..." */
    const char *auth_method;  /* the method that succeeded: "publickey", "agent", ... */
    char banner[120];         /* the server's version string, sanitized */
    double t_start, t_connected, t_handshake, t_ready; /* sc_loop_now() at each stage, 0 before */
};

/* Starts connecting a session described by spec (taken over) through parent (NULL: directly over
 * TCP). Returns the session with one reference for the caller; *op receives the connect op
 * (one reference for the caller), completed when the session is ready or has failed. */
sc_session *sc_session_start(sc_loop *loop, sc_session *parent, sc_hostspec *spec, sc_op **op);

/* Closes the session and, first, its children: their work ends with ECLOSED. Idempotent. */
void sc_session_close(sc_session *s);
void sc_session_ref(sc_session *s);
void sc_session_unref(sc_session *s);

/* Asks for a service round of s soon (after the current callback returns). */
void sc_session_kick(sc_session *s);

/* How many bytes channel users may queue for sending now (back-pressure on the output buffer). */
size_t sc_session_write_budget(sc_session *s);
void sc_session_wrote(sc_session *s, size_t n);

/* Channel receive windows. libssh 0.10 keeps a channel's window near 1.28 MB unless a read asks
 * for more; through a chain of hops that stalls the pipeline (measured: downloads at half speed).
 * OpenSSH uses 2 MB per channel. */
#define SC_HOP_WINDOW (4u * 1024 * 1024)
#define SC_FORWARD_WINDOW (2u * 1024 * 1024)
#define SC_XFER_WINDOW (2u * 1024 * 1024)

/* Reads up to len bytes of stdout (or stderr) without waiting, and lets the channel's receive
 * window grow to len: buf must have room for len bytes (pages never written cost no memory).
 * Returns the bytes read, 0 if none are there now, SSH_EOF at the end, SSH_ERROR. */
int sc_channel_read(ssh_channel ch, void *buf, uint32_t len, int is_stderr);

/* A channel whose owner gave up while it was still opening: libssh would forget it at once and
 * the server would keep its side open for the life of the connection (against MaxSessions).
 * The session finishes the open (the same call: a session channel, or direct-tcpip to host:port
 * from orig_host:orig_port when host is not NULL), then closes and frees it. Takes ch over. */
void sc_session_bury(sc_session *s, ssh_channel ch, const char *host, int port,
                     const char *orig_host, int orig_port);

/* How a remote command ended, as its channel's callbacks report it. */
typedef struct {
    struct ssh_channel_callbacks_struct cb;
    int status; /* -1 until an exit-status arrives */
    int have;   /* an exit-status or exit-signal arrived */
    char signal[32];
} sc_exit;

/* Sets ch's callbacks to record its exit status and signal in ex (cb lives in ex: call
 * sc_exit_unwatch before ex goes away; libssh may call them until the peer's close arrives). */
void sc_exit_watch(ssh_channel ch, sc_exit *ex);
void sc_exit_unwatch(ssh_channel ch, sc_exit *ex);

void sc_session_attach(sc_session *s, sc_chanuser *u);
void sc_session_detach(sc_chanuser *u);

/* Runs the service round of every kicked session (the loop's idle hook). */
void sc_session_run_kicked(sc_loop *loop);

/* Authentication step (auth.c): advances s->auth; returns 1 when done, 0 to wait; on failure it has
 * set *err and returns -1. */
int sc_auth_step(sc_session *s, sc_err *err);
void sc_auth_cleanup(sc_session *s);

/* An incoming forwarded-tcpip channel (forward.c): accepted and pumped by the remote forward
 * listening on that port; returns 0 if none claims it (it is refused). */
int sc_forward_incoming(sc_session *s, ssh_message msg);

/* Frees the loop's cache of decrypted private keys (auth.c). */
void sc_keycache_free(sc_loop *loop);

/* Host key check (auth.c): 0 if the key is acceptable, else -1 with *err set. */
int sc_hostkey_check(sc_session *s, sc_err *err);

#endif
