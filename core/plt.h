/* plt.h - libssh's calls to a few imported functions, pointed at ours.
 *
 * libssh has no hooks for its socket I/O (readahead.c) or its random bytes (randbuf.c). Where it
 * is loaded as a shared object on x86_64 or aarch64, its calls to an imported function go
 * through a slot of its PLT relocations; this points such slots at our functions. Nothing of
 * libssh is copied or changed but those pointers, and calls from anywhere else go to the C
 * library (or libcrypto) as before. */
#ifndef SC_PLT_H
#define SC_PLT_H

#include <stddef.h>

typedef struct {
    const char *name; /* an imported function of libssh: "recv", "RAND_bytes" */
    void *to;         /* ours, with the same signature */
} sc_plt_hook;

#define SC_PLT_MAX 8 /* hooks in one call */

/* Points libssh's slot for each hook's name at its function: 1 when all were written; 0 when
 * none was because libssh is not loaded as a shared object, one of the names is not among its
 * imports, there are more than SC_PLT_MAX, or this platform is not one of the two. A write that
 * fails part way (mprotect refused) also gives 0 with the earlier slots written: each function
 * must behave as the one it stands in for whenever its own work is not wanted. The caller calls
 * it once (pthread_once): the slots are written while other threads may be calling them. */
int sc_plt_patch(const sc_plt_hook *hooks, size_t n);

#endif
