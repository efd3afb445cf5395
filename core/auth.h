/* auth.h - what a session proves on each end: the server's host key against known_hosts
 * (hostkey.c), and our identity (auth.c: keys, agent, keyboard-interactive, password). Both
 * work on the libssh session and the spec alone, so the session state machine (session.c)
 * calls them and they know nothing of it. */
#ifndef SC_AUTH_H
#define SC_AUTH_H

#include <libssh/libssh.h>

#include "agent.h"
#include "hostspec.h"
#include "loop.h"

/* The authentication of one session, step by step. */
typedef struct {
    ssh_session ssh;
    const sc_hostspec *spec;
    sc_loop *loop;     /* its cache of decrypted keys */
    const char *label; /* "hop 2 user@host:port", for messages */
    int hop;
    int phase;
    int methods;
    int next_identity;
    int agent_tried, kbd_tried, pw_tried, kbd_rounds;
    ssh_key key;
    ssh_key plain;  /* the key of a certificate being tried: tried alone next */
    ssh_key *certs; /* the spec's certificates (CertificateFile), loaded at the start */
    int n_certs, certs_loaded;
    sc_agent_relay *relay; /* between libssh and the agent, while authenticating */
    char tried[300];
    char offered[100]; /* the methods the server offered first ("publickey,password") */
    char key_problem[300];
    const char *method; /* the one that succeeded: "publickey", "agent", ... */
} sc_auth;

/* Advances a: 1 when authenticated, 0 to be called again when the session is readable, -1
 * with *err set (stage "auth"). */
int sc_auth_step(sc_auth *a, sc_err *err);
/* Frees what a holds between steps (a loaded key). */
void sc_auth_cleanup(sc_auth *a);

/* The server's host key on ssh against the spec's known_hosts and policy: 0 if acceptable,
 * else -1 with *err set (stage "host key"). Fills fp ("ssh-ed25519 SHA256:...") and *note
 * (SC_HOSTKEY_NOTE_*: the key was recorded, or not checked). */
int sc_hostkey_check(ssh_session ssh, const sc_hostspec *spec, const char *label, int hop, char *fp,
                     size_t fplen, int *note, sc_err *err);

/* The host key algorithms to offer, as ssh orders them: those of the keys known_hosts has for the
 * host first, then the others, each group in the order of the spec's list (else libssh's
 * defaults). 1 with the list in out, 0 when no key is known (the list is then as given). */
int sc_hostkey_algorithms(const sc_hostspec *spec, char *out, size_t cap);

#endif
