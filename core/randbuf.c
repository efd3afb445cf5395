/* randbuf.c - libssh's random bytes, drawn from libcrypto in 4 KiB at a time (see randbuf.h). */
#include "randbuf.h"

#include "plt.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define POOL_SIZE 4096
#define POOL_MAX  256 /* the largest request served from a pool */

typedef struct {
    unsigned char bytes[POOL_SIZE];
    size_t used; /* bytes[used..] are not given out yet; the rest is zero */
    int filled;  /* 0: bytes holds nothing (a new thread, a forked child, a failed fill) */
} pool;

static __thread pool mine;
static unsigned long n_given, n_fills; /* atomics */

static void empty(pool *p)
{
    OPENSSL_cleanse(p->bytes, sizeof p->bytes);
    p->used = POOL_SIZE;
    p->filled = 0;
}

/* in the child, the thread that forked is the only one, and its pool is a copy of the
 * parent's: bytes the parent will give out too */
static void on_fork_child(void) { empty(&mine); }

int sc_randbuf_bytes(unsigned char *buf, int num)
{
    if (num <= 0 || num > POOL_MAX)
        return RAND_bytes(buf, num);
    pool *p = &mine;
    if (!p->filled || POOL_SIZE - p->used < (size_t)num) {
        if (RAND_bytes(p->bytes, POOL_SIZE) != 1) {
            empty(p);
            return RAND_bytes(buf, num); /* its own error, as libssh would have had it */
        }
        p->used = 0;
        p->filled = 1;
        __atomic_add_fetch(&n_fills, 1, __ATOMIC_RELAXED);
    }
    memcpy(buf, p->bytes + p->used, (size_t)num);
    OPENSSL_cleanse(p->bytes + p->used, (size_t)num);
    p->used += (size_t)num;
    __atomic_add_fetch(&n_given, (unsigned long)num, __ATOMIC_RELAXED);
    return 1;
}

void sc_randbuf_counts(unsigned long *given, unsigned long *fills)
{
    *given = __atomic_load_n(&n_given, __ATOMIC_RELAXED);
    *fills = __atomic_load_n(&n_fills, __ATOMIC_RELAXED);
}

static int installed = -1;

static void install_once(void)
{
    const char *off = getenv("SSHCHAIN_NO_RANDBUF");
    if ((off && *off && strcmp(off, "0") != 0) || pthread_atfork(NULL, NULL, on_fork_child) != 0) {
        installed = 0;
        return;
    }
    static const sc_plt_hook hooks[] = {{"RAND_bytes", (void *)sc_randbuf_bytes}};
    installed = sc_plt_patch(hooks, 1);
}

int sc_randbuf_install(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_once);
    return installed;
}
