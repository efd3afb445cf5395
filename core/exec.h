/* exec.h - one command (or the login shell) on a session channel: stdin given at once or fed as
 * it comes, a pty, environment variables, sudo's password, a timeout, and output kept whole or
 * handed over in chunks as it arrives. */
#ifndef SC_EXEC_H
#define SC_EXEC_H

#include "channel.h"

typedef struct {
    const char *cmd;        /* NULL: the login shell */
    const char *subsystem;  /* set (no cmd): this subsystem ("sftp"), its bytes on stdin/stdout */
    const char *stdin_data; /* given at once; NULL: none */
    size_t stdin_len;
    int stdin_open; /* more input comes with sc_exec_write, until sc_exec_close_stdin */
    int pty;
    const char *term; /* pty: terminal type and size (defaults xterm, 80 x 24) */
    int cols, rows;
    const sc_env_var *env; /* variables for the command, kept out of its command line: sent as
                              env requests, or (where the server refuses those) on stdin to a
                              wrapper that exports them */
    int n_env;
    const char *sudo_password; /* answers sudo's own prompt, once (implies pty) */
    double timeout;            /* seconds for the whole command; 0: none */
    int stream;                /* hand output over in chunks (sc_exec_take) instead of keeping it */
    size_t max_output;         /* kept output (each stream) past which the command fails EIO
                                  (reason "limit"); 0: no limit */
} sc_exec_opts;

enum { SC_STDOUT = 0, SC_STDERR = 1 };

/* Starts the command on s (which must be ready); the op completes when the command has exited and
 * its output has been read. */
sc_op *sc_exec_start(sc_session *s, const sc_exec_opts *opts);

/* Output not yet taken: in stream mode, the chunks since the last take; otherwise all of it. */
const char *sc_exec_output(sc_op *op, int which, size_t *len);
/* Marks the output returned by sc_exec_output as taken (stream mode: lets reading resume). */
void sc_exec_take(sc_op *op, int which);
/* Frees the kept output (once the embedder has its copy). */
void sc_exec_drop_output(sc_op *op);
/* Exit status (-1 if none arrived) and signal name ("" if none). */
int sc_exec_status(sc_op *op);
const char *sc_exec_signal(sc_op *op);

/* With stdin_open: queues more input (it goes out as the window allows). 0, or -1 when the
 * command's stdin is closed or the op is done. */
int sc_exec_write(sc_op *op, const char *data, size_t len);
/* Input queued and not yet sent (for the embedder's back-pressure). */
size_t sc_exec_pending_input(sc_op *op);
/* Notifies the op once the queued input has fallen to `below` bytes or less. */
void sc_exec_notify_drain(sc_op *op, size_t below);
/* Ends the command's stdin once the queued input has gone. */
void sc_exec_close_stdin(sc_op *op);
/* The pty's new size; a signal for the command ("TERM", "INT", "KILL", ...). */
void sc_exec_resize(sc_op *op, int cols, int rows);
void sc_exec_signal_send(sc_op *op, const char *name);

#endif
