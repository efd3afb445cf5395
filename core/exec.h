/* exec.h - run one command on a session's channel, with stdin, pty, sudo answering, a timeout,
 * and output collected whole or handed over in chunks as it arrives. */
#ifndef SC_EXEC_H
#define SC_EXEC_H

#include "session.h"

typedef struct {
    const char *cmd;
    const char *stdin_data; /* NULL: no input (EOF at once, unless a pty is asked for) */
    size_t stdin_len;
    int pty;
    const char *sudo_password; /* answers sudo's password prompt on the pty (implies pty) */
    double timeout;            /* seconds; 0: none */
    int stream;                /* hand output over in chunks (sc_exec_take) instead of keeping it */
} sc_exec_opts;

enum { SC_STDOUT = 0, SC_STDERR = 1 };

/* Starts the command on s (which must be ready); the op completes when the command has exited and
 * its output has been read. */
sc_op *sc_exec_start(sc_session *s, const sc_exec_opts *opts);

/* Output not yet taken: in stream mode, the chunks since the last take; otherwise all of it. */
const char *sc_exec_output(sc_op *op, int which, size_t *len);
/* Marks the output returned by sc_exec_output as taken (stream mode: lets reading resume). */
void sc_exec_take(sc_op *op, int which);
/* Exit status (-1 if none arrived) and signal name ("" if none). */
int sc_exec_status(sc_op *op);
const char *sc_exec_signal(sc_op *op);

#endif
