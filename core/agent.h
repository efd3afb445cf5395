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

/* A socket for ssh_set_agent_socket that speaks for the agent at sock_path, offering only the
 * keys in allow (or certificates of them); a thread relays until the socket is closed. The fd,
 * or -1 with why set. */
int sc_agent_filter_open(const char *sock_path, const sc_blob *allow, int n, char *why, size_t cap);

#endif
