/* agent.c - what the engine needs of ssh-agent beyond libssh: the keys an agent offers, filtered
 * to a set (IdentitiesOnly: the agent may only sign with keys the configuration names), and
 * public-key blobs to compare keys and certificates by.
 *
 * libssh 0.10 talks to an agent through a socket it is given (ssh_set_agent_socket) with
 * blocking I/O, and has no public call to list or choose agent keys. So the filter is a small
 * relay on its own thread: libssh gets one end of a socketpair; the thread passes each request
 * to the real agent and each answer back, leaving out of an identities answer (type 12) every
 * key that is not allowed. It ends when libssh closes its end (with the session). */
#include "agent.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum {
    AGENT_MAX_MSG = 256 * 1024,
    AGENTC_REQUEST_IDENTITIES = 11,
    AGENT_IDENTITIES_ANSWER = 12,
};

int sc_key_blob(ssh_key key, unsigned char **blob, size_t *len)
{
    char *b64 = NULL;
    if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK || !b64)
        return -1;
    size_t n = strlen(b64);
    unsigned char *out = malloc(n / 4 * 3 + 3);
    int k = out ? EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n) : -1;
    if (k < 0) {
        free(out);
        ssh_string_free_char(b64);
        return -1;
    }
    size_t m = (size_t)k;
    if (n >= 1 && b64[n - 1] == '=')
        m--;
    if (n >= 2 && b64[n - 2] == '=')
        m--;
    ssh_string_free_char(b64);
    *blob = out;
    *len = m;
    return 0;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* The bytes after the first string of a blob (its type name), or NULL. */
static const unsigned char *after_string(const unsigned char *b, size_t len, size_t *rest)
{
    if (len < 4 || get32(b) > len - 4)
        return NULL;
    size_t n = 4 + get32(b);
    *rest = len - n;
    return b + n;
}

int sc_blob_certifies(const unsigned char *cert, size_t clen, const unsigned char *key, size_t klen)
{
    /* a certificate: string type, string nonce, then the key's own fields, then the rest;
     * a plain key: string type, then the same fields */
    size_t crest = 0, krest = 0, nrest = 0;
    const unsigned char *c = after_string(cert, clen, &crest);
    const unsigned char *k = after_string(key, klen, &krest);
    if (!c || !k)
        return 0;
    const unsigned char *f = after_string(c, crest, &nrest); /* skip the nonce */
    if (!f || krest == 0 || nrest < krest)
        return 0;
    static const char suffix[] = "-cert-v01@openssh.com";
    size_t tlen = get32(cert), slen = sizeof suffix - 1;
    if (tlen <= slen || memcmp(cert + 4 + tlen - slen, suffix, slen) != 0)
        return 0;
    return memcmp(f, k, krest) == 0;
}

typedef struct {
    int client; /* libssh's peer */
    int agent;  /* the real agent */
    sc_blob *allowed;
    int n_allowed;
} filter_job;

static int read_full(int fd, unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One message (length and body) from fd into a new buffer, or NULL. */
static unsigned char *read_msg(int fd, uint32_t *len)
{
    unsigned char h[4];
    if (read_full(fd, h, 4) < 0)
        return NULL;
    *len = get32(h);
    if (*len == 0 || *len > AGENT_MAX_MSG)
        return NULL;
    unsigned char *m = malloc(*len);
    if (!m || read_full(fd, m, *len) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

static int allowed(const filter_job *j, const unsigned char *blob, size_t len)
{
    for (int i = 0; i < j->n_allowed; i++) {
        const sc_blob *a = &j->allowed[i];
        if ((a->len == len && memcmp(a->data, blob, len) == 0) ||
            sc_blob_certifies(blob, len, a->data, a->len))
            return 1;
    }
    return 0;
}

/* An identities answer without the keys that are not allowed: a new message, or NULL when the
 * answer is malformed. */
static unsigned char *filter_answer(const filter_job *j, const unsigned char *m, uint32_t len,
                                    uint32_t *out_len)
{
    if (len < 5)
        return NULL;
    uint32_t n = get32(m + 1);
    unsigned char *out = malloc(len);
    if (!out)
        return NULL;
    out[0] = AGENT_IDENTITIES_ANSWER;
    size_t pos = 5, wpos = 5;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t start = pos;
        if (pos + 4 > len || get32(m + pos) > len - pos - 4)
            goto bad;
        size_t blen = get32(m + pos);
        const unsigned char *blob = m + pos + 4;
        pos += 4 + blen;
        if (pos + 4 > len || get32(m + pos) > len - pos - 4)
            goto bad;
        pos += 4 + get32(m + pos); /* the comment */
        if (allowed(j, blob, blen)) {
            memcpy(out + wpos, m + start, pos - start);
            wpos += pos - start;
            kept++;
        }
    }
    put32(out + 1, kept);
    *out_len = (uint32_t)wpos;
    return out;
bad:
    free(out);
    return NULL;
}

static void *filter_main(void *arg)
{
    filter_job *j = arg;
    for (;;) {
        uint32_t qlen, alen;
        unsigned char *q = read_msg(j->client, &qlen);
        if (!q)
            break;
        unsigned char h[4];
        put32(h, qlen);
        int is_list = q[0] == AGENTC_REQUEST_IDENTITIES;
        int ok = write_full(j->agent, h, 4) == 0 && write_full(j->agent, q, qlen) == 0;
        free(q);
        unsigned char *a = ok ? read_msg(j->agent, &alen) : NULL;
        if (!a)
            break;
        if (is_list && a[0] == AGENT_IDENTITIES_ANSWER) {
            uint32_t flen;
            unsigned char *f = filter_answer(j, a, alen, &flen);
            free(a);
            if (!f)
                break;
            a = f;
            alen = flen;
        }
        put32(h, alen);
        ok = write_full(j->client, h, 4) == 0 && write_full(j->client, a, alen) == 0;
        free(a);
        if (!ok)
            break;
    }
    close(j->client);
    close(j->agent);
    for (int i = 0; i < j->n_allowed; i++)
        free(j->allowed[i].data);
    free(j->allowed);
    free(j);
    return NULL;
}

int sc_agent_filter_open(const char *sock_path, const sc_blob *allow, int n, char *why, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!sock_path || strlen(sock_path) >= sizeof sa.sun_path) {
        snprintf(why, cap, "no agent socket");
        return -1;
    }
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    int agent = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (agent < 0 || connect(agent, (struct sockaddr *)&sa, sizeof sa) < 0) {
        snprintf(why, cap, "cannot reach the agent at %s: %s", sock_path, strerror(errno));
        if (agent >= 0)
            close(agent);
        return -1;
    }
    int sv[2];
    filter_job *j = calloc(1, sizeof *j);
    if (!j || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(why, cap, "agent filter: %s", strerror(errno));
        free(j);
        close(agent);
        return -1;
    }
    j->client = sv[1];
    j->agent = agent;
    j->allowed = n > 0 ? calloc((size_t)n, sizeof *j->allowed) : NULL;
    for (int i = 0; i < n && j->allowed; i++) {
        j->allowed[i].data = malloc(allow[i].len);
        if (j->allowed[i].data) {
            memcpy(j->allowed[i].data, allow[i].data, allow[i].len);
            j->allowed[i].len = allow[i].len;
            j->n_allowed++;
        }
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, filter_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        snprintf(why, cap, "agent filter: %s", strerror(rc));
        close(sv[0]);
        j->client = sv[1];
        filter_main(j); /* frees j (the peer is closed: it ends at once) */
        return -1;
    }
    return sv[0];
}
