/* sc.c - status codes, error messages and byte buffers. */
#include "sc.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const char *const code_names[] = {
    [SC_OK] = "OK",
    [SC_ECONNECT] = "ECONNECT",
    [SC_ETIMEDOUT] = "ETIMEDOUT",
    [SC_EHOSTKEY] = "EHOSTKEY",
    [SC_EAUTH] = "EAUTH",
    [SC_ECHANNEL] = "ECHANNEL",
    [SC_EPROTO] = "EPROTO",
    [SC_EIO] = "EIO",
    [SC_ECLOSED] = "ECLOSED",
    [SC_ECANCELED] = "ECANCELED",
};

const char *sc_code_name(sc_code code)
{
    if ((unsigned)code >= sizeof code_names / sizeof code_names[0])
        return "EIO";
    return code_names[code];
}

void sc_sanitize(char *dst, size_t dstlen, const char *src)
{
    size_t i = 0;
    if (dstlen == 0)
        return;
    for (; src && *src && i + 1 < dstlen; src++) {
        unsigned char c = (unsigned char)*src;
        if (c == 0xc2 && (unsigned char)src[1] >= 0x80 && (unsigned char)src[1] <= 0x9f) {
            dst[i++] = '?'; /* a C1 control in UTF-8: both bytes go */
            src++;
            continue;
        }
        dst[i++] = (c < 0x20 || c == 0x7f) ? (c == '\n' || c == '\t' ? ' ' : '?') : (char)c;
    }
    dst[i] = '\0';
}

void sc_err_vformat(sc_err *err, sc_code code, const char *label, int hop, const char *stage,
                    const char *reason, const char *fmt, va_list ap)
{
    char raw[sizeof err->msg];
    int n = snprintf(raw, sizeof raw, "%s%s%s%s", label ? label : "", label ? ": " : "",
                     stage ? stage : "", stage ? ": " : "");
    if (n < 0 || (size_t)n >= sizeof raw)
        n = 0;
    vsnprintf(raw + n, sizeof raw - (size_t)n, fmt, ap);
    err->code = code;
    err->stage = stage;
    err->reason = reason;
    err->hop = hop;
    sc_sanitize(err->msg, sizeof err->msg, raw);
}

void sc_err_format(sc_err *err, sc_code code, const char *label, int hop, const char *stage,
                   const char *reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sc_err_vformat(err, code, label, hop, stage, reason, fmt, ap);
    va_end(ap);
}

char *sc_buf_reserve(sc_buf *b, size_t n)
{
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n > b->cap) {
        if (b->off > 0 && b->len - b->off + n <= b->cap) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        } else {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->len + n)
                cap *= 2;
            char *d = realloc(b->data, cap);
            if (!d)
                return NULL;
            b->data = d;
            b->cap = cap;
        }
    }
    return b->data + b->len;
}

void sc_buf_commit(sc_buf *b, size_t n) { b->len += n; }

int sc_buf_append(sc_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    char *room = sc_buf_reserve(b, n);
    if (!room)
        return -1;
    memcpy(room, p, n);
    b->len += n;
    return 0;
}

size_t sc_buf_avail(const sc_buf *b) { return b->len - b->off; }

void sc_buf_consume(sc_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void sc_buf_reset(sc_buf *b) { b->off = b->len = 0; }

void sc_buf_free(sc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->off = b->cap = 0;
}

int sc_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > SC_NAME_MAX || memchr(name, '\0', len) || memchr(name, '/', len))
        return 0;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return 0;
    return 1;
}

char *sc_shell_quote(const char *s)
{
    size_t n = 3;
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    char *out = malloc(n), *o = out;
    if (!out)
        return NULL;
    *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

char *sc_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

#define BIG_KEPT 8 /* clean buffers kept (any thread frees and allocates: a lock) */
static struct {
    void *p;
    size_t n;
} big_kept[BIG_KEPT];
static int n_big_kept;
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

void *sc_big_alloc(size_t n)
{
    void *p = NULL;
    pthread_mutex_lock(&big_lock);
    for (int i = 0; i < n_big_kept; i++) {
        if (big_kept[i].n == n) {
            p = big_kept[i].p;
            big_kept[i] = big_kept[--n_big_kept];
            break;
        }
    }
    pthread_mutex_unlock(&big_lock);
    if (p)
        return p;
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void sc_big_free_clean(void *p, size_t n)
{
    if (!p)
        return;
    pthread_mutex_lock(&big_lock);
    int kept = n_big_kept < BIG_KEPT;
    if (kept)
        big_kept[n_big_kept++] = (typeof(big_kept[0])){p, n};
    pthread_mutex_unlock(&big_lock);
    if (!kept)
        munmap(p, n);
}

void sc_big_free(void *p, size_t n)
{
    if (p)
        munmap(p, n);
}
