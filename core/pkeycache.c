/* pkeycache.c - libssh's raw private key imports, answered with keys libcrypto already made (see
 * pkeycache.h). */
#include "pkeycache.h"

#include "plt.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RAW_LEN       32 /* X25519 and Ed25519 private keys */
#define EPHEMERAL_MAX 64 /* X25519 keys made and not yet imported: exchanges in their round trip */
#define LASTING_MAX   8  /* Ed25519 identities */
#define EPHEMERAL_SECONDS                                                                          \
    30 /* an exchange that has not finished by then (lost) leaves no key here */

typedef struct {
    EVP_PKEY *pkey; /* NULL: a free entry */
    int type;
    unsigned long used; /* when it was last put or given back: the least goes first */
    time_t at;          /* when it was put (the monotonic clock's seconds) */
    unsigned char raw[RAW_LEN];
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry ephemeral[EPHEMERAL_MAX], lasting[LASTING_MAX];
static unsigned long ticks;
static unsigned long n_hits, n_misses; /* atomics */

static int cached_type(int type) { return type == EVP_PKEY_X25519 || type == EVP_PKEY_ED25519; }

static entry *set_of(int type, int *n)
{
    *n = type == EVP_PKEY_X25519 ? EPHEMERAL_MAX : LASTING_MAX;
    return type == EVP_PKEY_X25519 ? ephemeral : lasting;
}

static void entry_clear(entry *e)
{
    EVP_PKEY_free(e->pkey);
    OPENSSL_cleanse(e, sizeof *e);
}

static time_t now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return ts.tv_sec;
}

/* The entry of (type, raw); ephemeral keys too old to be waited for go on the way. */
static entry *find(entry *set, int n, int type, const unsigned char *raw)
{
    if (type == EVP_PKEY_X25519) {
        time_t t = now();
        for (int i = 0; i < n; i++)
            if (set[i].pkey && t - set[i].at > EPHEMERAL_SECONDS)
                entry_clear(&set[i]);
    }
    for (int i = 0; i < n; i++)
        if (set[i].pkey && set[i].type == type && CRYPTO_memcmp(set[i].raw, raw, RAW_LEN) == 0)
            return &set[i];
    return NULL;
}

/* Keeps a reference to pkey under (type, raw), in place of the least used entry if none is free. */
static void keep(int type, const unsigned char *raw, EVP_PKEY *pkey)
{
    int n;
    entry *set = set_of(type, &n);
    pthread_mutex_lock(&lock);
    if (!find(set, n, type, raw) && EVP_PKEY_up_ref(pkey) == 1) {
        entry *e = &set[0];
        for (int i = 0; i < n && e->pkey; i++)
            if (!set[i].pkey || set[i].used < e->used)
                e = &set[i];
        entry_clear(e);
        e->pkey = pkey;
        e->type = type;
        e->used = ++ticks;
        e->at = now();
        memcpy(e->raw, raw, RAW_LEN);
    }
    pthread_mutex_unlock(&lock);
}

EVP_PKEY *sc_pkeycache_new_raw_private_key(int type, ENGINE *eng, const unsigned char *priv,
                                           size_t len)
{
    if (eng || !priv || len != RAW_LEN || !cached_type(type))
        return EVP_PKEY_new_raw_private_key(type, eng, priv, len);
    int n;
    entry *set = set_of(type, &n);
    EVP_PKEY *k = NULL;
    pthread_mutex_lock(&lock);
    entry *e = find(set, n, type, priv);
    if (e && type == EVP_PKEY_X25519) { /* used once: the cache's reference goes to the caller */
        k = e->pkey;
        e->pkey = NULL;
        entry_clear(e);
    } else if (e && EVP_PKEY_up_ref(e->pkey) == 1) {
        k = e->pkey;
        e->used = ++ticks;
    }
    pthread_mutex_unlock(&lock);
    if (k) {
        __atomic_add_fetch(&n_hits, 1, __ATOMIC_RELAXED);
        return k;
    }
    __atomic_add_fetch(&n_misses, 1, __ATOMIC_RELAXED);
    k = EVP_PKEY_new_raw_private_key(type, eng, priv, len);
    if (k && type == EVP_PKEY_ED25519)
        keep(type, priv, k);
    return k;
}

int sc_pkeycache_get_raw_private_key(const EVP_PKEY *pkey, unsigned char *priv, size_t *len)
{
    int rc = EVP_PKEY_get_raw_private_key(pkey, priv, len);
    if (rc == 1 && priv && len && *len == RAW_LEN) {
        int type = EVP_PKEY_is_a(pkey, "X25519")    ? EVP_PKEY_X25519
                   : EVP_PKEY_is_a(pkey, "ED25519") ? EVP_PKEY_ED25519
                                                    : 0;
        if (type)
            keep(type, priv, (EVP_PKEY *)pkey);
    }
    return rc;
}

void sc_pkeycache_clear(void)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < EPHEMERAL_MAX; i++)
        entry_clear(&ephemeral[i]);
    for (int i = 0; i < LASTING_MAX; i++)
        entry_clear(&lasting[i]);
    pthread_mutex_unlock(&lock);
}

void sc_pkeycache_counts(unsigned long *hits, unsigned long *misses)
{
    *hits = __atomic_load_n(&n_hits, __ATOMIC_RELAXED);
    *misses = __atomic_load_n(&n_misses, __ATOMIC_RELAXED);
}

static int installed = -1;

static void install_once(void)
{
    const char *off = getenv("SSHCHAIN_NO_KEYCACHE");
    if (off && *off && strcmp(off, "0") != 0) {
        installed = 0;
        return;
    }
    static const sc_plt_hook hooks[] = {
        {"EVP_PKEY_new_raw_private_key", (void *)sc_pkeycache_new_raw_private_key},
        {"EVP_PKEY_get_raw_private_key", (void *)sc_pkeycache_get_raw_private_key},
    };
    installed = sc_plt_patch(hooks, 2);
}

int sc_pkeycache_install(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_once);
    return installed;
}
