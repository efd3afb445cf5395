/* agent.h - ssh-agent for the engine (agent.c): the keys an agent offers filtered to a set
 * (IdentitiesOnly), and public-key blobs to compare keys and certificates by. */
#ifndef SC_AGENT_H
#define SC_AGENT_H

#include <libssh/libssh.h>
#include <stddef.h>

typedef struct {
    unsigned char *data;
    size_t len;
} sc_blob;

/* The public key blob of key (a plain key or a certificate), malloc'd: 0, or -1. */
int sc_key_blob(ssh_key key, unsigned char **blob, size_t *len);

/* Whether cert (a certificate's blob) certifies key (a plain public key's blob). */
int sc_blob_certifies(const unsigned char *cert, size_t clen, const unsigned char *key,
                      size_t klen);

/* A relay between libssh and the agent at sock_path (agent.c): the agent's keys that are ids
 * (public key blobs of the identity files; certificates of them too) come first, the others
 * after, or not at all when only (IdentitiesOnly). NULL with why set when the agent cannot be
 * reached. */
typedef struct sc_agent_relay sc_agent_relay;
sc_agent_relay *sc_agent_relay_open(const char *sock_path, const sc_blob *ids, int n, int only,
                                    char *why, size_t cap);
/* The socket to give libssh (ssh_set_agent_socket). */
int sc_agent_relay_fd(const sc_agent_relay *r);
/* Whether the agent offered identity i's key (then its file need not be tried). */
int sc_agent_relay_offered(sc_agent_relay *r, int i);
/* Takes the socket back from libssh (ssh may be NULL), ends the relay, frees it. */
void sc_agent_relay_close(sc_agent_relay *r, ssh_session ssh);

#endif
