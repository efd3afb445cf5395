/* sc.h - common types of the sshchain core: status codes, errors, byte buffers.
 * The core never includes Lua; it reports through these codes and messages. */
#ifndef SC_H
#define SC_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SC_OK = 0,
    SC_ECONNECT,
    SC_ETIMEDOUT,
    SC_EHOSTKEY,
    SC_EAUTH,
    SC_ECHANNEL,
    SC_EPROTO,
    SC_EIO,
    SC_ECLOSED,
    SC_ECANCELED,
} sc_code;

/* The stable uppercase name of a code ("ECONNECT"); "OK" for SC_OK. */
const char *sc_code_name(sc_code code);

/* A failure, as data: what went wrong (code), at which stage of which hop, and why where policy
 * needs to know (reason); msg is the text for people ("hop 2 ops@10.0.0.2:22: auth: ..."). The
 * stage and reason strings are static (never freed). Reasons: "dropped" (the server closed the
 * connection during the handshake: MaxStartups), "refused" (TCP), "channel refused" (a channel
 * open declined: MaxSessions, AllowTcpForwarding), "request refused" (pty, env, command,
 * subsystem), "denied" (auth), "unknown"/"changed" (host key), "timeout", "lost" (a
 * connection that went away), "parent" (a hop below failed: hop says which), "limit", "verify",
 * "interrupted". */
typedef struct {
    sc_code code;
    const char *stage;  /* "resolve", "connect", "hop channel", "handshake", "host key", "auth",
                           "connection", "keepalive", "exec", "forward", "upload", ...; NULL */
    const char *reason; /* NULL when the code says it all */
    int hop;            /* the hop the failure belongs to (1 = first); 0: none */
    char msg[600];
} sc_err;

/* The one formatter of failures: sets every field of err, and the message
 * "LABEL: STAGE: detail" (LABEL and STAGE left out when NULL), with control characters
 * replaced (messages carry server text). */
void sc_err_format(sc_err *err, sc_code code, const char *label, int hop, const char *stage,
                   const char *reason, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* The same with a va_list, for the wrappers that put a session's or a transfer's label in. */
void sc_err_vformat(sc_err *err, sc_code code, const char *label, int hop, const char *stage,
                    const char *reason, const char *fmt, va_list ap);

/* A failure with no hop or stage of its own (tests, internal errors). */
#define sc_err_set(err, code, ...) sc_err_format((err), (code), NULL, 0, NULL, NULL, __VA_ARGS__)

/* Copies src's text with control characters replaced, for server-supplied strings: C0 and DEL
 * become '?' (newline and tab a space), and so do the C1 controls (U+0080..U+009F, in UTF-8
 * 0xC2 0x80..0x9F: CSI among them, which terminals obey as ESC [ ). */
void sc_sanitize(char *dst, size_t dstlen, const char *src);

/* A growable byte buffer; data[off..len) is the unread part. */
typedef struct {
    char *data;
    size_t len, off, cap;
} sc_buf;

int sc_buf_append(sc_buf *b, const void *p, size_t n); /* 0, or -1 out of memory */
/* Room for n more bytes at the end (written by the caller, then sc_buf_commit): a pointer to it,
 * or NULL out of memory. */
char *sc_buf_reserve(sc_buf *b, size_t n);
void sc_buf_commit(sc_buf *b, size_t n);
size_t sc_buf_avail(const sc_buf *b); /* unread bytes */
void sc_buf_consume(sc_buf *b, size_t n);
void sc_buf_reset(sc_buf *b);
void sc_buf_free(sc_buf *b);

char *sc_strdup(const char *s); /* NULL-safe strdup */

/* s quoted for a POSIX shell ('...', a quote inside as '\''), newly allocated; NULL: no memory. */
char *sc_shell_quote(const char *s);

#define SC_NAME_MAX 255
/* Whether name[0..len) is one plain path component, safe to create below a directory: not
 * empty, ".", "..", no '/', no NUL, at most SC_NAME_MAX bytes. */
int sc_name_ok(const char *name, size_t len);

/* Large buffers (channel windows): mapped directly, so pages never written cost no memory and a
 * freed buffer goes back to the system, whatever malloc's thresholds are. NULL out of memory. */
void *sc_big_alloc(size_t n);
void sc_big_free(void *p, size_t n);
/* sc_big_free of a buffer none of whose pages was written (they all read zero still): it is kept
 * for the next sc_big_alloc of its size (a few are), instead of unmapped. A hop's 4 MiB window
 * buffer is seldom written (its bytes go straight to the child), and mapping and unmapping it
 * cost 0.2 ms a session at 1000 chains on a VM (munmap's TLB flush reaches every core). */
void sc_big_free_clean(void *p, size_t n);

#endif
