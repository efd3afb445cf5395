/* agent.c - what the engine needs of ssh-agent beyond libssh: the keys an agent offers, filtered
 * to a set (IdentitiesOnly: the agent may only sign with keys the configuration names), and
 * public-key blobs to compare keys and certificates by.
 *
 * libssh 0.10 talks to an agent through a socket it is given (ssh_set_agent_socket) with
 * blocking I/O, and has no public call to list or choose agent keys. So a small relay on its own
 * thread stands between them: libssh gets one end of a socketpair; the thread passes each
 * request to the real agent and each answer back, with an identities answer (type 12) put in
 * OpenSSH's order (the identity files' keys first, the others after, or not at all with
 * IdentitiesOnly) and the identities it held noted, so that a key the agent offered is not
 * offered again from its file. The relay ends with the authentication (sc_agent_relay_close). */
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

struct sc_agent_relay {
    int lib_fd; /* libssh's end, given with ssh_set_agent_socket */
    int client; /* the relay's end of it */
    int agent;  /* the real agent */
    int only;   /* IdentitiesOnly: offer only the identities' keys */
    sc_blob *ids;
    int n_ids;
    int *offered; /* ids[i] was among the agent's keys (guarded by lock) */
    pthread_mutex_t lock;
    pthread_t thread;
    int running;
};

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

/* The identity a key blob of the agent's is (the same key, or a certificate of it), or -1. */
static int identity_of(const struct sc_agent_relay *r, const unsigned char *blob, size_t len)
{
    for (int i = 0; i < r->n_ids; i++) {
        const sc_blob *a = &r->ids[i];
        if ((a->len == len && memcmp(a->data, blob, len) == 0) ||
            sc_blob_certifies(blob, len, a->data, a->len))
            return i;
    }
    return -1;
}

/* An identities answer as OpenSSH would use it: the keys of the identity files first (in the
 * agent's order), then the others unless `only`; each identity seen is marked offered. A new
 * message, or NULL when the answer is malformed. */
static unsigned char *reorder_answer(struct sc_agent_relay *r, const unsigned char *m, uint32_t len,
                                     uint32_t *out_len)
{
    if (len < 5)
        return NULL;
    uint32_t n = get32(m + 1);
    unsigned char *out = malloc(len);
    if (!out)
        return NULL;
    out[0] = AGENT_IDENTITIES_ANSWER;
    size_t wpos = 5;
    uint32_t kept = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: the identities' keys; 1: the others */
        size_t pos = 5;
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
            int id = identity_of(r, blob, blen);
            if ((pass == 0) != (id >= 0) || (pass == 1 && r->only))
                continue;
            if (id >= 0) {
                pthread_mutex_lock(&r->lock);
                r->offered[id] = 1;
                pthread_mutex_unlock(&r->lock);
            }
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

static void *relay_main(void *arg)
{
    struct sc_agent_relay *r = arg;
    for (;;) {
        uint32_t qlen, alen;
        unsigned char *q = read_msg(r->client, &qlen);
        if (!q)
            break;
        unsigned char h[4];
        put32(h, qlen);
        int is_list = q[0] == AGENTC_REQUEST_IDENTITIES;
        int ok = write_full(r->agent, h, 4) == 0 && write_full(r->agent, q, qlen) == 0;
        free(q);
        unsigned char *a = ok ? read_msg(r->agent, &alen) : NULL;
        if (!a)
            break;
        if (is_list && a[0] == AGENT_IDENTITIES_ANSWER) {
            uint32_t flen;
            unsigned char *f = reorder_answer(r, a, alen, &flen);
            free(a);
            if (!f)
                break;
            a = f;
            alen = flen;
        }
        put32(h, alen);
        ok = write_full(r->client, h, 4) == 0 && write_full(r->client, a, alen) == 0;
        free(a);
        if (!ok)
            break;
    }
    /* the fds are closed by sc_agent_relay_close, after this returns */
    return NULL;
}

static void relay_free(struct sc_agent_relay *r)
{
    if (r->client >= 0)
        close(r->client);
    if (r->agent >= 0)
        close(r->agent);
    if (r->lib_fd >= 0)
        close(r->lib_fd);
    for (int i = 0; i < r->n_ids; i++)
        free(r->ids[i].data);
    free(r->ids);
    free(r->offered);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

sc_agent_relay *sc_agent_relay_open(const char *sock_path, const sc_blob *ids, int n, int only,
                                    char *why, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!sock_path || strlen(sock_path) >= sizeof sa.sun_path) {
        snprintf(why, cap, "no agent socket");
        return NULL;
    }
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    struct sc_agent_relay *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    r->lib_fd = r->client = r->agent = -1;
    r->only = only;
    pthread_mutex_init(&r->lock, NULL);
    r->agent = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->agent < 0 || connect(r->agent, (struct sockaddr *)&sa, sizeof sa) < 0) {
        snprintf(why, cap, "cannot reach the agent at %s: %s", sock_path, strerror(errno));
        relay_free(r);
        return NULL;
    }
    r->ids = n > 0 ? calloc((size_t)n, sizeof *r->ids) : NULL;
    r->offered = calloc((size_t)(n > 0 ? n : 1), sizeof *r->offered);
    int sv[2];
    if ((n > 0 && !r->ids) || !r->offered ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(why, cap, "agent relay: %s", strerror(errno));
        relay_free(r);
        return NULL;
    }
    r->lib_fd = sv[0];
    r->client = sv[1];
    for (int i = 0; i < n; i++) { /* an identity that cannot be copied matches nothing */
        if (ids[i].len == 0 || !ids[i].data)
            continue;
        r->ids[i].data = malloc(ids[i].len);
        if (r->ids[i].data) {
            memcpy(r->ids[i].data, ids[i].data, ids[i].len);
            r->ids[i].len = ids[i].len;
        }
    }
    r->n_ids = n;
    int rc = pthread_create(&r->thread, NULL, relay_main, r);
    if (rc != 0) {
        snprintf(why, cap, "agent relay: %s", strerror(rc));
        relay_free(r);
        return NULL;
    }
    r->running = 1;
    return r;
}

int sc_agent_relay_fd(const sc_agent_relay *r) { return r->lib_fd; }

int sc_agent_relay_offered(sc_agent_relay *r, int i)
{
    if (i < 0 || i >= r->n_ids)
        return 0;
    pthread_mutex_lock(&r->lock);
    int o = r->offered[i];
    pthread_mutex_unlock(&r->lock);
    return o;
}

void sc_agent_relay_close(sc_agent_relay *r, ssh_session ssh)
{
    if (!r)
        return;
    if (ssh) /* libssh lets go of its end (it would close it with the session) */
        ssh_set_agent_socket(ssh, SSH_INVALID_SOCKET);
    if (r->lib_fd >= 0) { /* the relay reads its end of file and returns */
        shutdown(r->lib_fd, SHUT_RDWR);
        close(r->lib_fd);
        r->lib_fd = -1;
    }
    if (r->running)
        pthread_join(r->thread, NULL);
    relay_free(r);
}
