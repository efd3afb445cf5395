/* channel.h - the one channel layer. Every SSH channel the engine uses (a command, a shell, a
 * subsystem, a hop or forward pump) is opened, asked for, read, written and closed here; its
 * users (exec.c, pump.c, the transfer endpoints) only move bytes and keep their own state.
 *
 * A channel is a small state machine driven by its user's service round: sc_channel_step
 * advances the open and the requests (pty, env, exec/shell/subsystem) without waiting, reads
 * grow the receive window to the buffer they read into, writes take only what the remote window
 * and the session's output budget allow, and sc_channel_close is the one way out: it unhooks the
 * callbacks, and a channel given up while its open is still pending is finished and closed in the
 * background (else the server would keep it open for the life of the connection). */
#ifndef SC_CHANNEL_H
#define SC_CHANNEL_H

#include "session.h"

typedef enum {
    SC_CHAN_IDLE,    /* nothing sent yet */
    SC_CHAN_OPENING, /* the open was sent; its answer is not in */
    SC_CHAN_PTY,     /* asking for a pseudo-terminal */
    SC_CHAN_ENV,     /* sending environment variables */
    SC_CHAN_REQUEST, /* asking for the command, shell or subsystem */
    SC_CHAN_OPEN,    /* data flows */
    SC_CHAN_CLOSED,
} sc_chan_state;

typedef enum {
    SC_CHAN_RAW = 0,   /* a direct-tcpip channel, or a session channel asked for nothing */
    SC_CHAN_EXEC,      /* what = the command */
    SC_CHAN_SHELL,     /* the login shell */
    SC_CHAN_SUBSYSTEM, /* what = the subsystem ("sftp") */
} sc_chan_request;

typedef struct {
    const char *name, *value;
} sc_env_var;

typedef struct sc_channel sc_channel;

/* What to open. Strings are copied. */
typedef struct {
    const char *to_host; /* set: a direct-tcpip channel to to_host:to_port, from orig_host:port */
    int to_port;
    int to_unix; /* to_host is a socket path: a direct-streamlocal@openssh.com channel */
    const char *orig_host;
    int orig_port;
    sc_chan_request request; /* session channels: what to ask for once open */
    const char *what;
    int pty; /* with a pty of term (default "xterm"), cols x rows (default 80 x 24) */
    const char *term;
    int cols, rows;
    const sc_env_var *env; /* sent as "env" requests before the command; the server may refuse */
    int n_env;
    uint32_t window; /* receive window the reads grow to (0: libssh's 1.28 MB) */
    /* May be NULL: called once the env requests are answered, before the command is asked for
     * (it may change it with sc_channel_set_command: env_refused says how many were declined). */
    void (*before_request)(sc_channel *c, void *ud);
    void *ud;
} sc_chan_opts;

/* How a remote command ended, as the channel's callbacks report it. */
typedef struct {
    int status; /* -1 until an exit-status arrived */
    int have;   /* an exit-status or exit-signal arrived */
    char signal[32];
} sc_exit;

struct sc_channel {
    sc_session *session;
    ssh_channel ch;
    sc_chan_state state;
    int pending; /* the last open call answered AGAIN: the server owes an answer */
    char *to_host, *orig_host;
    int to_port, orig_port, to_unix;
    sc_chan_request request;
    char *what;
    int pty;
    char term[32];
    int cols, rows;
    struct sc_chan_env {
        char *name, *value;
    } * env; /* copies */
    int n_env, env_next;
    int env_refused; /* how many env requests the server declined */
    void (*before_request)(sc_channel *c, void *ud);
    void *ud;
    uint32_t window;
    int eof_sent;
    int remote_eof;    /* the peer sent EOF (the callback records it) */
    int remote_closed; /* the peer sent its close (the callback records it) */
    /* With the callbacks on (watched): whether stdout [0] or stderr [1] may have bytes buffered
     * in libssh. A read with nothing buffered costs libssh a poll() of the session's socket; a
     * session serving many channels would pay one per channel per round. */
    int watched;
    int rx_maybe[2];
    /* May be set by the user once the channel is open: takes stdout bytes as they arrive, from
     * inside libssh's packet handling (so it must not close or free anything), and returns how
     * many it took; the rest stay buffered for the reads. Bytes taken skip one copy, but libssh
     * would grow the window only by its own 1.28 MB then: the next read (which finds little or
     * nothing buffered) grows it back to `window` whenever any was taken since the last one
     * (`taken`). Growing it less often slows the senders: measured through j1 -> j2 -> t4 with
     * the servers on BBR, a 512 MB download took 5.0 s when it grew every 2 MiB taken, 3.2 s
     * every 64 KiB, 2.6-3.1 s at every read, as before the callback took bytes. */
    size_t (*take)(sc_channel *c, const void *data, size_t len, void *ud);
    void *take_ud;
    size_t taken;
    int counted; /* in the loop's live_channels */
    sc_exit exit;
    struct ssh_channel_callbacks_struct cb;
};

/* Sets c up to open o on s (nothing is sent before the first step). 0, or -1 out of memory. */
int sc_channel_init(sc_channel *c, sc_session *s, const sc_chan_opts *o);

/* Replaces the command (from before_request). 0, or -1 out of memory. */
int sc_channel_set_command(sc_channel *c, const char *what);

/* Takes over a channel that is open already (an accepted forwarded-tcpip channel). */
void sc_channel_adopt(sc_channel *c, sc_session *s, ssh_channel ch, uint32_t window);

/* Advances the open and the requests: 1 once data may flow, 0 to be called again on the next
 * service round, -1 with *err set (code ECHANNEL, reason "refused", stage `stage`: the user's,
 * such as "exec" or "hop channel"; ECLOSED when the session is not there). */
int sc_channel_step(sc_channel *c, const char *stage, sc_err *err);

enum { SC_CHAN_AGAIN = 0, SC_CHAN_EOF = -1, SC_CHAN_ERROR = -2 };

/* Reads up to len bytes of stdout (or stderr) without waiting, and lets the receive window grow
 * to len (up to the channel's window): buf must have room for len bytes. Returns the bytes
 * read, SC_CHAN_AGAIN when none are there now, SC_CHAN_EOF at the end, SC_CHAN_ERROR. */
int sc_channel_read(sc_channel *c, void *buf, size_t len, int is_stderr);
/* The same, but only what libssh holds already: the window does not grow (the two streams share
 * it, so reading one while the other is held up must not let the server send more of both). */
int sc_channel_read_held(sc_channel *c, void *buf, size_t len, int is_stderr);

/* How many bytes a write may take now: the remote window, the session's output budget and
 * one write's cap (64 KiB), whichever is least. */
size_t sc_channel_writable(sc_channel *c);

/* Queues what sc_channel_writable allows of buf[0..len): the bytes taken (0: none now), or -1
 * when the channel is closed or failed. */
long sc_channel_write(sc_channel *c, const void *buf, size_t len);

/* Sends EOF once (the remote side's stdin ends). */
void sc_channel_send_eof(sc_channel *c);

int sc_channel_is_eof(const sc_channel *c);    /* the remote side sent EOF */
int sc_channel_is_closed(const sc_channel *c); /* closed, failed, or never opened */

/* Changes the pty's size (a window-change request; nothing is waited for). */
void sc_channel_resize(sc_channel *c, int cols, int rows);

/* Sends a signal ("TERM", "INT", ...) to the remote command. */
void sc_channel_signal(sc_channel *c, const char *name);

/* The one way out, idempotent: unhooks the callbacks, closes and frees the channel; one given
 * up while its open is pending is finished in the background, then closed. */
void sc_channel_close(sc_channel *c);

/* Frees what sc_channel_init copied (after sc_channel_close). */
void sc_channel_free(sc_channel *c);

#endif
