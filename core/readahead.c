/* readahead.c - libssh's socket reads, made larger (see readahead.h).
 *
 * The patch: libssh is found among the loaded objects (dl_iterate_phdr); its PLT relocations
 * name the slots through which it calls recv, poll and close; each slot is made writable for the
 * moment of the write (full RELRO leaves them read-only) and pointed here. Nothing of libssh is
 * copied or changed but those three pointers; if any of them is missing, none is patched.
 *
 * The buffer: an attached fd gets one only once a read of libssh's has filled what it asked
 * (more was probably waiting), so sessions that only ever see small packets (1000 idle ones)
 * never hold one; it goes again after a run of refills that each fit in one of libssh's reads. */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include "readahead.h"

#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define SMALL_REFILLS_BEFORE_FREE 8

typedef struct {
    void (*wake)(void *);
    void *arg;
    char *buf; /* SC_RA_SIZE bytes, or NULL */
    size_t off, len;
    int small; /* refills in a row that fit in one of libssh's reads */
} ra_fd;

/* fd -> entry; the entries of one session are used by the thread that runs its loop, the table
 * by every thread (libssh runs in each thread that has a loop) */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ra_fd **table;
static int table_len;
static int installed = -1;
static unsigned long n_reads, n_kernel; /* libssh's reads of attached fds; recv()s for them */

static ra_fd *lookup(int fd)
{
    ra_fd *e = NULL;
    if (fd < 0)
        return NULL;
    pthread_mutex_lock(&lock);
    if (fd < table_len)
        e = table[fd];
    pthread_mutex_unlock(&lock);
    return e;
}

static void drop(int fd, void *arg, int any)
{
    ra_fd *e = NULL;
    pthread_mutex_lock(&lock);
    if (fd >= 0 && fd < table_len && table[fd] && (any || table[fd]->arg == arg)) {
        e = table[fd];
        table[fd] = NULL;
    }
    pthread_mutex_unlock(&lock);
    if (e) {
        free(e->buf);
        free(e);
    }
}

void sc_readahead_attach(int fd, void (*wake)(void *), void *arg)
{
    if (fd < 0 || sc_readahead_install() != 1)
        return;
    ra_fd *e = calloc(1, sizeof *e);
    if (!e)
        return; /* libssh then reads fd as it always did */
    e->wake = wake;
    e->arg = arg;
    ra_fd *old = NULL;
    pthread_mutex_lock(&lock);
    if (fd >= table_len) {
        int n = table_len ? table_len : 64;
        while (n <= fd)
            n *= 2;
        ra_fd **t = realloc(table, (size_t)n * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&lock);
            free(e);
            return;
        }
        memset(t + table_len, 0, (size_t)(n - table_len) * sizeof *t);
        table = t;
        table_len = n;
    }
    old = table[fd]; /* an fd closed by someone else and reused: what it held is not this one's */
    table[fd] = e;
    pthread_mutex_unlock(&lock);
    if (old) {
        free(old->buf);
        free(old);
    }
}

void sc_readahead_detach(int fd, void *arg) { drop(fd, arg, 0); }

size_t sc_readahead_held(int fd)
{
    ra_fd *e = lookup(fd);
    return e ? e->len - e->off : 0;
}

void sc_readahead_counts(unsigned long *reads, unsigned long *kernel)
{
    pthread_mutex_lock(&lock);
    *reads = n_reads;
    *kernel = n_kernel;
    pthread_mutex_unlock(&lock);
}

static void count(int kernel)
{
    pthread_mutex_lock(&lock);
    n_reads++;
    n_kernel += kernel;
    pthread_mutex_unlock(&lock);
}

/* Hands out held bytes; wakes the owner when some are left. */
static ssize_t serve(ra_fd *e, void *buf, size_t len, int flags)
{
    size_t n = e->len - e->off;
    if (n > len)
        n = len;
    memcpy(buf, e->buf + e->off, n);
    if (!(flags & MSG_PEEK))
        e->off += n;
    if (e->off == e->len) {
        e->off = e->len = 0;
        if (e->small >= SMALL_REFILLS_BEFORE_FREE) {
            free(e->buf);
            e->buf = NULL;
            e->small = 0;
        }
    } else if (e->wake) {
        e->wake(e->arg);
    }
    return (ssize_t)n;
}

ssize_t sc_ra_recv(int fd, void *buf, size_t len, int flags)
{
    ra_fd *e = lookup(fd);
    if (!e || len == 0)
        return recv(fd, buf, len, flags);
    if (e->off < e->len) {
        count(0);
        return serve(e, buf, len, flags);
    }
    count(1);
    if (flags || len >= SC_RA_SIZE)
        return recv(fd, buf, len, flags);
    if (!e->buf) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n == (ssize_t)len)
            e->buf = malloc(SC_RA_SIZE); /* without it, reads stay as they were */
        return n;
    }
    ssize_t n = recv(fd, e->buf, SC_RA_SIZE, 0);
    if (n <= 0)
        return n;
    e->len = (size_t)n;
    e->off = 0;
    e->small = (size_t)n <= len ? e->small + 1 : 0;
    return serve(e, buf, len, 0);
}

#define POLL_SET_MAX 16 /* libssh's sets here hold one fd (a context per session) */

/* An fd with bytes held is reported readable without asking the kernel. Whatever else it waits
 * for waits for the next poll, once the held bytes are gone (at most a round of the session
 * later): that is POLLOUT, which libssh asks for after each of its writes, queueing its next ones
 * until a poll says writable. Asking the kernel about it each time cost a poll() per 4 KiB. */
int sc_ra_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    int hidden[POLL_SET_MAX];
    nfds_t held = 0, others = 0;
    if (n > POLL_SET_MAX)
        return poll(fds, n, timeout);
    for (nfds_t i = 0; i < n; i++) {
        hidden[i] = -1;
        fds[i].revents = 0;
        if (fds[i].fd < 0 || fds[i].events == 0)
            continue;
        if ((fds[i].events & POLLIN) && sc_readahead_held(fds[i].fd) > 0) {
            hidden[i] = fds[i].fd;
            fds[i].fd = -1; /* the kernel skips it */
            held++;
        } else {
            others++;
        }
    }
    if (held == 0)
        return poll(fds, n, timeout);
    int rc = others > 0 ? poll(fds, n, 0) : 0;
    int ready = 0;
    for (nfds_t i = 0; i < n; i++) {
        if (hidden[i] >= 0) {
            fds[i].fd = hidden[i];
            fds[i].revents = POLLIN;
        }
        ready += fds[i].revents != 0;
    }
    return rc < 0 ? -1 : ready;
}

int sc_ra_close(int fd)
{
    drop(fd, NULL, 1);
    return close(fd);
}

/* ---- the patch ---- */

#if defined(__x86_64__)
#define JUMP_SLOT R_X86_64_JUMP_SLOT
#elif defined(__aarch64__)
#define JUMP_SLOT R_AARCH64_JUMP_SLOT
#endif

#if defined(JUMP_SLOT) && defined(__LP64__)
static const struct {
    const char *name;
    void *to;
} hooks[] = {
    {"recv", (void *)sc_ra_recv},
    {"poll", (void *)sc_ra_poll},
    {"close", (void *)sc_ra_close},
};
#define N_HOOKS (sizeof hooks / sizeof hooks[0])

typedef struct {
    void **slot[N_HOOKS];
    uintptr_t relro, relro_end; /* read-only after relocation (full RELRO) */
} patch_plan;

/* glibc relocates the dynamic section's addresses in place; some loaders do not */
static uintptr_t dyn_addr(uintptr_t base, uintptr_t v) { return v < base ? base + v : v; }

static int find_libssh(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    patch_plan *plan = data;
    const char *name = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    name = name ? name + 1 : info->dlpi_name;
    if (!name || strncmp(name, "libssh.so", 9) != 0)
        return 0;
    uintptr_t base = info->dlpi_addr;
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(base + ph->p_vaddr);
        if (ph->p_type == PT_GNU_RELRO) {
            plan->relro = base + ph->p_vaddr;
            plan->relro_end = plan->relro + ph->p_memsz;
        }
    }
    if (!dyn)
        return 1;
    const ElfW(Rela) *rel = NULL;
    const ElfW(Sym) *sym = NULL;
    const char *str = NULL;
    size_t relsz = 0;
    int rela = 0;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_JMPREL:
            rel = (const ElfW(Rela) *)dyn_addr(base, dyn->d_un.d_ptr);
            break;
        case DT_PLTRELSZ:
            relsz = dyn->d_un.d_val;
            break;
        case DT_PLTREL:
            rela = dyn->d_un.d_val == DT_RELA;
            break;
        case DT_SYMTAB:
            sym = (const ElfW(Sym) *)dyn_addr(base, dyn->d_un.d_ptr);
            break;
        case DT_STRTAB:
            str = (const char *)dyn_addr(base, dyn->d_un.d_ptr);
            break;
        default:
            break;
        }
    }
    if (!rel || !sym || !str || !rela)
        return 1;
    for (size_t i = 0; i < relsz / sizeof *rel; i++) {
        if (ELF64_R_TYPE(rel[i].r_info) != JUMP_SLOT)
            continue;
        const char *sname = str + sym[ELF64_R_SYM(rel[i].r_info)].st_name;
        for (size_t h = 0; h < N_HOOKS; h++)
            if (strcmp(sname, hooks[h].name) == 0)
                plan->slot[h] = (void **)(base + rel[i].r_offset);
    }
    return 1;
}

/* A slot is 8 bytes, aligned: it lies in one page. In RELRO the page goes back to read-only;
 * outside it (lazy binding) the loader writes the page itself, so it stays writable. */
static int write_slot(const patch_plan *plan, void **slot, void *to)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t page = (uintptr_t)slot & ~(uintptr_t)(pg - 1);
    int relro = (uintptr_t)slot >= plan->relro && (uintptr_t)slot < plan->relro_end;
    if (relro && mprotect((void *)page, (size_t)pg, PROT_READ | PROT_WRITE) != 0)
        return -1;
    __atomic_store_n(slot, to, __ATOMIC_SEQ_CST);
    if (relro)
        mprotect((void *)page, (size_t)pg, PROT_READ);
    return 0;
}

static int patch(void)
{
    const char *off = getenv("SSHCHAIN_NO_READAHEAD");
    if (off && *off && strcmp(off, "0") != 0)
        return 0;
    patch_plan plan;
    memset(&plan, 0, sizeof plan);
    dl_iterate_phdr(find_libssh, &plan);
    for (size_t h = 0; h < N_HOOKS; h++)
        if (!plan.slot[h])
            return 0;
    for (size_t h = 0; h < N_HOOKS; h++)
        if (write_slot(&plan, plan.slot[h], hooks[h].to) != 0)
            return 0; /* the ones written behave as the C library's for every fd not attached */
    return 1;
}
#else
static int patch(void) { return 0; }
#endif

static void install_once(void) { installed = patch(); }

int sc_readahead_install(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_once);
    return installed;
}
