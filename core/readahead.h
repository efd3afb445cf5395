/* readahead.h - libssh's socket reads, made larger.
 *
 * libssh 0.10 (and 0.11) reads a session's socket 4 KiB at a time, with a poll() before each
 * read: two system calls per 4 KiB on every layer of a chain. It has no hook for its socket I/O.
 * This layer sits around it: libssh's own calls to recv, send, poll and close (its PLT slots,
 * patched once) come here first. For an fd the engine has attached, a recv takes up to
 * SC_RA_SIZE bytes from the kernel at once and serves libssh's 4 KiB reads from them, and a poll
 * reports the fd readable while bytes are held, without a system call. A hop's pump can feed
 * the fd's bytes in instead, and take its sends (below): then the kernel carries neither. Every other fd, and every call from
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

#define SC_RA_SIZE (512 * 1024) /* the most a ring holds, and one refill from the kernel */

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

/* The owner's watch of fd (epoll, level-triggered) says it is readable. Until it does, once the
 * kernel said it had nothing (a poll without POLLIN, a recv's EAGAIN), libssh's zero-timeout
 * polls are told so without asking the kernel again; and while its sends are taken whole, they
 * are told POLLOUT (a send the socket cuts short then returns what it took, 0 too, which libssh
 * takes as "the rest later"). The owner must watch fd for reading whenever libssh may read it. */
void sc_readahead_readable(int fd, void *owner);

/* A feeder (a hop's pump) puts the bytes of fd's peer straight into fd's buffer, without the
 * kernel: up to `len` of them, as many as there is room for (the number), or -1 when fd is not
 * attached by owner (then they go through the socket as before). The kernel's socket must then
 * carry nothing more towards fd, only its end of file, which libssh sees once the held bytes are
 * read. */
long sc_readahead_feed(int fd, void *owner, const void *data, size_t len);

/* room(room_arg) runs when a feed that did not fit has room again (inside a libssh call: it may
 * only record that); NULL stops it. Nothing when fd is not attached by owner. */
void sc_readahead_on_room(int fd, void *owner, void (*room)(void *), void *room_arg);

/* The other way: libssh's sends on fd go into a ring that the feeder takes them from (peek,
 * consume), without the kernel; news(news_arg) runs when bytes came (inside a libssh call: it
 * may only record that). The owner's wake runs when a full ring has half its room again. NULL
 * news stops it: what the feeder has not taken goes to the socket (as it does when fd is
 * detached or closed), and later sends too. */
void sc_readahead_out_feed(int fd, void *owner, void (*news)(void *), void *news_arg);

/* 1: the ring has room; 0: full; -1: fd's sends go to the kernel. */
int sc_readahead_out_room(int fd, void *owner);

/* The bytes waiting in the ring that lie in one piece at *data; -1 when fd's sends go to the
 * kernel. Then as many as the feeder took. */
long sc_readahead_out_peek(int fd, void *owner, const char **data);
void sc_readahead_out_consume(int fd, void *owner, size_t n);

/* Bytes held for fd (0 when it is not attached). */
size_t sc_readahead_held(int fd);

/* What libssh's slots point to once patched, for tests: they behave as recv, send, poll and
 * close. */
ssize_t sc_ra_recv(int fd, void *buf, size_t len, int flags);
ssize_t sc_ra_send(int fd, const void *buf, size_t len, int flags);
int sc_ra_poll(struct pollfd *fds, nfds_t n, int timeout);
int sc_ra_close(int fd);

/* Counts since the start, for tests: libssh's reads of attached fds, and the recv()s they took;
 * its polls of sets with an attached fd, and the poll()s they took. */
void sc_readahead_counts(unsigned long *reads, unsigned long *kernel);
void sc_readahead_poll_counts(unsigned long *polls, unsigned long *kernel);

#endif
