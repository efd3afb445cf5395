/* randbuf.h - libssh's random bytes, drawn from libcrypto in 4 KiB at a time.
 *
 * libssh asks libcrypto's RAND_bytes for the padding of every packet it sends (4 to 255 bytes),
 * and OpenSSL 3.0 takes a lock and makes a getpid() system call on each request: 6 % of the
 * client's CPU on 1000 sessions at once, and one system call per packet on every layer of a
 * chain. Here libssh's calls to RAND_bytes (its PLT slot, plt.h) take small requests from a
 * pool that RAND_bytes fills 4 KiB at a time. The bytes are libcrypto's own, each given out once
 * and wiped from the pool as it is; each thread has its pool, and a forked child starts with an
 * empty one (it never gives out its parent's bytes). Requests above 256 bytes go to RAND_bytes.
 *
 * SSHCHAIN_NO_RANDBUF=1 leaves libssh's calls as they are (for comparison). */
#ifndef SC_RANDBUF_H
#define SC_RANDBUF_H

/* Patches libssh's RAND_bytes slot once per process (later calls return the first answer): 1
 * when its requests come here, 0 when they cannot (see plt.h) or it is switched off. */
int sc_randbuf_install(void);

/* RAND_bytes(buf, num) as libssh calls it: 1 with num random bytes at buf, else what RAND_bytes
 * gave (0 or -1). */
int sc_randbuf_bytes(unsigned char *buf, int num);

/* Bytes given out from pools so far, and the times a pool was filled (for the tests). */
void sc_randbuf_counts(unsigned long *given, unsigned long *fills);

#endif
