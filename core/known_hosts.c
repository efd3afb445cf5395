/* known_hosts.c - known_hosts lines, host patterns and hashed names (see known_hosts.h). */
#include "known_hosts.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* The next whitespace-separated field of [*p, end), or NULL at the end. */
static const char *field(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    while (s < end && is_space(*s))
        s++;
    if (s == end)
        return NULL;
    const char *e = s;
    while (e < end && !is_space(*e))
        e++;
    *len = (size_t)(e - s);
    *p = e;
    return s;
}

int kh_parse_line(const char *line, size_t len, kh_line *out)
{
    const char *p = line, *end = line + len;
    size_t n;
    memset(out, 0, sizeof *out);
    const char *f = field(&p, end, &n);
    if (!f || f[0] == '#')
        return 0;
    if (f[0] == '@') {
        if (n == 8 && memcmp(f, "@revoked", 8) == 0)
            out->marker = KH_REVOKED;
        else if (n == 15 && memcmp(f, "@cert-authority", 15) == 0)
            out->marker = KH_CERT_AUTHORITY;
        else
            return -1;
        f = field(&p, end, &n);
        if (!f)
            return -1;
    }
    out->hosts = f;
    out->hosts_len = n;
    out->type = field(&p, end, &out->type_len);
    out->key = field(&p, end, &out->key_len);
    if (!out->type || !out->key) /* a comment may follow: it is not ours to read */
        return -1;
    return 1;
}

/* Glob match of pattern (* and ?) against s, both not NUL-terminated; case-insensitive, as
 * ssh matches host names. */
static int glob(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
    while (si < sn) {
        if (pi < pn && p[pi] != '*' &&
            (p[pi] == '?' || tolower((unsigned char)p[pi]) == tolower((unsigned char)s[si]))) {
            pi++;
            si++;
        } else if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return 0;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

static int b64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap)
        return -1;
    int k = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (k < 0)
        return -1;
    size_t len = (size_t)k;
    if (in[n - 1] == '=')
        len--;
    if (in[n - 2] == '=')
        len--;
    *outlen = len;
    return 0;
}

/* "|1|base64(salt)|base64(HMAC-SHA1(salt, name))" against name. */
static int hashed_matches(const char *h, size_t n, const char *name)
{
    const char *salt = h + 3, *end = h + n;
    const char *bar = memchr(salt, '|', (size_t)(end - salt));
    if (!bar)
        return 0;
    unsigned char key[64], want[64], got[EVP_MAX_MD_SIZE];
    size_t keylen, wantlen;
    unsigned gotlen = 0;
    if (b64_decode(salt, (size_t)(bar - salt), key, sizeof key, &keylen) < 0 ||
        b64_decode(bar + 1, (size_t)(end - bar - 1), want, sizeof want, &wantlen) < 0 ||
        wantlen != 20)
        return 0;
    if (!HMAC(EVP_sha1(), key, (int)keylen, (const unsigned char *)name, strlen(name), got,
              &gotlen))
        return 0;
    return gotlen == 20 && memcmp(got, want, 20) == 0;
}

int kh_host_matches(const kh_line *l, const char *name)
{
    const char *h = l->hosts;
    size_t n = l->hosts_len;
    if (n > 3 && memcmp(h, "|1|", 3) == 0)
        return hashed_matches(h, n, name);
    int matched = 0;
    size_t nlen = strlen(name);
    const char *end = h + n;
    while (h < end) {
        const char *comma = memchr(h, ',', (size_t)(end - h));
        const char *pe = comma ? comma : end;
        int negate = h < pe && *h == '!';
        const char *p = h + negate;
        if (glob(p, (size_t)(pe - p), name, nlen)) {
            if (negate)
                return -1;
            matched = 1;
        }
        h = comma ? comma + 1 : end;
    }
    return matched;
}

void kh_lookup_name(char *out, size_t cap, const char *host, int port)
{
    if (port == 22 || port <= 0)
        snprintf(out, cap, "%s", host);
    else
        snprintf(out, cap, "[%s]:%d", host, port);
    for (char *p = out; *p; p++) /* as ssh: hashed names are of the lowercase name */
        *p = (char)tolower((unsigned char)*p);
}

static int same_key(const kh_line *l, const char *key_b64)
{
    unsigned char a[4096], b[4096];
    size_t an, bn;
    if (b64_decode(l->key, l->key_len, a, sizeof a, &an) < 0 ||
        b64_decode(key_b64, strlen(key_b64), b, sizeof b, &bn) < 0)
        return l->key_len == strlen(key_b64) && memcmp(l->key, key_b64, l->key_len) == 0;
    return an == bn && memcmp(a, b, an) == 0;
}

/* Files already read, by path, with what stat said of them then: a connect looks its host up
 * twice (the host key algorithms to offer, then the key), and many connects look up the same
 * files; a stat that says the same file, size and time reads them from here. */
#define KH_KEPT     8
#define KH_KEPT_MAX (16u << 20) /* bytes: a larger file is read each time */
typedef struct {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    char *data;
    size_t len;
} kh_kept;
static kh_kept kept[KH_KEPT];
static int kept_next; /* the one replaced next */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;

static int same_file(const kh_kept *k, const struct stat *st)
{
    return k->dev == st->st_dev && k->ino == st->st_ino && k->size == st->st_size &&
           k->mtime.tv_sec == st->st_mtim.tv_sec && k->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* The file's bytes (*len of them), as kept or read now: NULL when it cannot be read. The caller
 * holds kept_lock and frees *owned (NULL when the bytes are kept). */
static const char *file_bytes(const char *path, size_t *n, char **owned)
{
    *owned = NULL;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (errno == ENOENT || errno == ENOTDIR)
            return NULL;
        st.st_size = -1; /* a FIFO, a device: read it as it comes */
    }
    for (int i = 0; i < KH_KEPT; i++)
        if (kept[i].path && st.st_size >= 0 && strcmp(kept[i].path, path) == 0 &&
            same_file(&kept[i], &st)) {
            *n = kept[i].len;
            return kept[i].data;
        }
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *d = realloc(data, ncap);
            if (!d)
                break;
            data = d;
            cap = ncap;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (!data)
        return NULL;
    *n = len;
    /* a file changed in the last seconds is read each time: its time is the kernel's coarse
     * clock's, so an edit of the same size moments later could look the same (as git's racily
     * clean entries) */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (st.st_size < 0 || (size_t)st.st_size != len || len > KH_KEPT_MAX ||
        now.tv_sec - st.st_mtim.tv_sec < 2) {
        *owned = data; /* changed while read, or not a file to keep */
        return data;
    }
    kh_kept *k = NULL;
    for (int i = 0; i < KH_KEPT && !k; i++)
        if (kept[i].path && strcmp(kept[i].path, path) == 0)
            k = &kept[i];
    if (!k) {
        k = &kept[kept_next];
        kept_next = (kept_next + 1) % KH_KEPT;
    }
    char *p = k->path && strcmp(k->path, path) == 0 ? k->path : strdup(path);
    if (!p) {
        *owned = data;
        return data;
    }
    if (k->path != p)
        free(k->path);
    free(k->data);
    *k = (kh_kept){p, st.st_dev, st.st_ino, st.st_size, st.st_mtim, data, len};
    return data;
}

void kh_each(const char *const *files, int n_files, const char *name, kh_visit visit, void *ud)
{
    pthread_mutex_lock(&kept_lock);
    for (int i = 0; i < n_files; i++) {
        char *owned;
        size_t size = 0;
        const char *data = file_bytes(files[i], &size, &owned);
        if (!data)
            continue;
        long lineno = 0;
        for (const char *line = data, *end = data + size; line < end;) {
            const char *nl = memchr(line, '\n', (size_t)(end - line));
            size_t len = nl ? (size_t)(nl - line) : (size_t)(end - line);
            lineno++;
            size_t n = len;
            while (n > 0 && line[n - 1] == '\r')
                n--;
            kh_line l;
            if (kh_parse_line(line, n, &l) == 1 && kh_host_matches(&l, name) == 1)
                visit(&l, files[i], lineno, ud);
            line += len + (nl ? 1 : 0);
        }
        free(owned);
    }
    pthread_mutex_unlock(&kept_lock);
}

typedef struct {
    const char *type, *key_b64;
    size_t tlen;
    kh_result best;
    char *where;
    size_t where_cap;
} kh_checking;

static void check_line(const kh_line *l, const char *file, long lineno, void *ud)
{
    kh_checking *c = ud;
    kh_result r;
    if (l->marker == KH_CERT_AUTHORITY) {
        r = KH_CA;
    } else {
        int same_type = l->type_len == c->tlen && memcmp(l->type, c->type, c->tlen) == 0;
        if (l->marker == KH_REVOKED)
            r = same_type && same_key(l, c->key_b64) ? KH_REVOKED_KEY : KH_NOT_FOUND;
        else if (same_type)
            r = same_key(l, c->key_b64) ? KH_OK : KH_CHANGED;
        else
            r = KH_OTHER;
    }
    if (r > c->best) {
        c->best = r;
        if (c->where_cap)
            snprintf(c->where, c->where_cap, "%s:%ld", file, lineno);
    }
}

kh_result kh_check(const char *const *files, int n_files, const char *name, const char *type,
                   const char *key_b64, char *where, size_t where_cap)
{
    kh_checking c = {.type = type,
                     .key_b64 = key_b64,
                     .tlen = strlen(type),
                     .best = KH_NOT_FOUND,
                     .where = where,
                     .where_cap = where_cap};
    if (where_cap)
        where[0] = '\0';
    kh_each(files, n_files, name, check_line, &c);
    return c.best;
}

int kh_format_line(char *out, size_t cap, const char *name, const char *type, const char *key_b64,
                   int hashed)
{
    int n;
    if (!hashed) {
        n = snprintf(out, cap, "%s %s %s\n", name, type, key_b64);
        return n > 0 && (size_t)n < cap ? n : -1;
    }
    unsigned char salt[20], mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (RAND_bytes(salt, sizeof salt) != 1 ||
        !HMAC(EVP_sha1(), salt, (int)sizeof salt, (const unsigned char *)name, strlen(name), mac,
              &maclen) ||
        maclen != 20)
        return -1;
    char bsalt[64], bmac[64];
    EVP_EncodeBlock((unsigned char *)bsalt, salt, (int)sizeof salt);
    EVP_EncodeBlock((unsigned char *)bmac, mac, (int)maclen);
    n = snprintf(out, cap, "|1|%s|%s %s %s\n", bsalt, bmac, type, key_b64);
    return n > 0 && (size_t)n < cap ? n : -1;
}
