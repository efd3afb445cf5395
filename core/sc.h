/* sc.h - common types of the sshchain core: status codes, errors, byte buffers.
 * The core never includes Lua; it reports through these codes and messages. */
#ifndef SC_H
#define SC_H

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

typedef struct {
    sc_code code;
    char msg[600];
} sc_err;

/* Sets err to code and a printf-style message (control characters replaced by '?'). */
void sc_err_set(sc_err *err, sc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies src's text with control characters replaced, for server-supplied strings. */
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
size_t sc_buf_avail(const sc_buf *b);                   /* unread bytes */
void sc_buf_consume(sc_buf *b, size_t n);
void sc_buf_reset(sc_buf *b);
void sc_buf_free(sc_buf *b);

char *sc_strdup(const char *s); /* NULL-safe strdup */

/* Large buffers (channel windows): mapped directly, so pages never written cost no memory and a
 * freed buffer goes back to the system, whatever malloc's thresholds are. NULL out of memory. */
void *sc_big_alloc(size_t n);
void sc_big_free(void *p, size_t n);

#endif
