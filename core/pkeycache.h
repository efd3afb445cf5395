/* pkeycache.h - libssh's raw private key imports, answered with keys libcrypto already made.
 *
 * libssh 0.10 keeps Ed25519 and X25519 private keys as 32 raw bytes and gives them back to
 * libcrypto (EVP_PKEY_new_raw_private_key) each time it uses one: to sign with an identity, and
 * to finish a curve25519 key exchange with the ephemeral key it generated a round trip before.
 * Each import computes the public key again, a scalar multiplication: 1.2 M instructions of the
 * 6.2 M a session through two jumps costs the client (callgrind, 60 sessions at once). Here
 * libssh's calls to the import and to EVP_PKEY_get_raw_private_key (its PLT slots, plt.h) go
 * through a cache of the keys themselves: a key whose raw bytes libssh takes out of a key libcrypto
 * made, or imports once, is kept (a reference), and an import of the same type and bytes gets it
 * back. An ephemeral X25519 key is given back once and leaves the cache then (at most 64 wait,
 * the oldest goes first, and none longer than 30 s: an exchange that was lost leaves no secret
 * here); Ed25519 identities stay (8 at most, the least used goes first) until sc_pkeycache_clear,
 * as the loop's own copies do (auth.c). Other types, lengths and engines go to libcrypto as
 * before. The cache is the process's: a clear by one loop makes the others import again.
 *
 * SSHCHAIN_NO_KEYCACHE=1 leaves libssh's calls as they are (for comparison). */
#ifndef SC_PKEYCACHE_H
#define SC_PKEYCACHE_H

#include <openssl/evp.h>

/* Patches libssh's two slots once per process (later calls return the first answer): 1 when its
 * imports come here, 0 when they cannot (see plt.h) or it is switched off. */
int sc_pkeycache_install(void);

/* As libssh calls them: EVP_PKEY_new_raw_private_key and EVP_PKEY_get_raw_private_key. */
EVP_PKEY *sc_pkeycache_new_raw_private_key(int type, ENGINE *e, const unsigned char *priv,
                                           size_t len);
int sc_pkeycache_get_raw_private_key(const EVP_PKEY *pkey, unsigned char *priv, size_t *len);

/* Every kept key goes (its bytes wiped with it): when a loop frees its identities. */
void sc_pkeycache_clear(void);

/* Imports answered from the cache, and those that went to libcrypto (for the tests). */
void sc_pkeycache_counts(unsigned long *hits, unsigned long *misses);

#endif
