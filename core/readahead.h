/* readahead.h - libssh's socket reads, made larger.
 *
 * libssh 0.10 (and 0.11) reads a session's socket 4 KiB at a time, with a poll() before each
 * read: two system calls per 4 KiB on every layer of a chain. It has no hook for its socket I/O.
 * This layer sits around it: libssh's own calls to recv, poll and close (its PLT slots, patched
 * once) come here first. For an fd the engine has attached, a recv takes up to RA_SIZE bytes
 * from the kernel at once and serves libssh's 4 KiB reads from them, and a poll reports the fd
 * readable while bytes are held, without a system call. Every other fd, and every call from
 * outside libssh, goes straight to the C library. Bytes held here are invisible to epoll: the
 * attached fd's wake callback runs whenever a read leaves some, so that its session is served
 * again (the callback may only record that: it runs inside a libssh call).
 *
 * SSHCHAIN_NO_READAHEAD=1 leaves libssh as it is (for comparison). */
#ifndef SC_READAHEAD_H
#define SC_READAHEAD_H

#include <poll.h>
#include <stddef.h>
#include <sys/types.h>

#define SC_RA_SIZE (256 * 1024)

/* Patches libssh's slots once per process (later calls return the first answer): 1 when the
 * reads of attached fds go through here, 0 when they cannot (libssh not found, slots missing,
 * switched off), and then attaching does nothing. */
int sc_readahead_install(void);

/* libssh's reads of fd go through a buffer from now on; wake(arg) runs when a read leaves bytes
 * held. The fd must be one only libssh reads. */
void sc_readahead_attach(int fd, void (*wake)(void *), void *arg);

/* fd's buffer goes, with any bytes held, if arg attached it (libssh may have closed fd and the
 * number be someone else's by now). */
void sc_readahead_detach(int fd, void *arg);

/* Bytes held for fd (0 when it is not attached). */
size_t sc_readahead_held(int fd);

/* What libssh's slots point to once patched, for tests: they behave as recv, poll and close. */
ssize_t sc_ra_recv(int fd, void *buf, size_t len, int flags);
int sc_ra_poll(struct pollfd *fds, nfds_t n, int timeout);
int sc_ra_close(int fd);

/* Counts since the start, for tests: libssh's reads of attached fds, and the recv()s they took. */
void sc_readahead_counts(unsigned long *reads, unsigned long *kernel);

#endif
