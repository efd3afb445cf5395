/* plt.c - libssh's calls to a few imported functions, pointed at ours (see plt.h).
 *
 * libssh is found among the loaded objects (dl_iterate_phdr); its PLT relocations (DT_JMPREL)
 * name the slots through which it calls each import; a slot is made writable for the moment of
 * the write (full RELRO leaves it read-only) and pointed at ours. */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include "plt.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#define JUMP_SLOT R_X86_64_JUMP_SLOT
#elif defined(__aarch64__)
#define JUMP_SLOT R_AARCH64_JUMP_SLOT
#endif

#if defined(JUMP_SLOT) && defined(__LP64__)
typedef struct {
    const sc_plt_hook *hooks;
    size_t n;
    void **slot[SC_PLT_MAX];
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
        for (size_t h = 0; h < plan->n; h++)
            if (strcmp(sname, plan->hooks[h].name) == 0)
                plan->slot[h] = (void **)(base + rel[i].r_offset);
    }
    return 1;
}

/* A slot is 8 bytes, aligned: it lies in one page. The loader makes read-only the pages of
 * RELRO from its first page to the last one it covers whole (a last page it covers in part is
 * shared with writable data and stays writable): such a page goes back to read-only; any other
 * (lazy binding, that last page) stays writable, as the loader left it. */
static int write_slot(const patch_plan *plan, void **slot, void *to)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t mask = ~(uintptr_t)(pg - 1);
    uintptr_t page = (uintptr_t)slot & mask;
    int relro = page >= (plan->relro & mask) && page < (plan->relro_end & mask);
    if (relro && mprotect((void *)page, (size_t)pg, PROT_READ | PROT_WRITE) != 0)
        return -1;
    __atomic_store_n(slot, to, __ATOMIC_SEQ_CST);
    if (relro)
        mprotect((void *)page, (size_t)pg, PROT_READ);
    return 0;
}

int sc_plt_patch(const sc_plt_hook *hooks, size_t n)
{
    if (n == 0 || n > SC_PLT_MAX)
        return 0;
    patch_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.hooks = hooks;
    plan.n = n;
    dl_iterate_phdr(find_libssh, &plan);
    for (size_t h = 0; h < n; h++)
        if (!plan.slot[h])
            return 0;
    /* the slots will point into this object: it stays loaded for as long as libssh may (a Lua
     * state closing unloads its C modules, while the application may hold libssh itself) */
    Dl_info self;
    struct link_map *map = NULL;
    if (!dladdr1((void *)sc_plt_patch, &self, (void **)&map, RTLD_DL_LINKMAP) || !map)
        return 0;
    if (map->l_name[0] != '\0' && !dlopen(map->l_name, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE))
        return 0; /* (the program itself, named "", is never unloaded) */
    for (size_t h = 0; h < n; h++)
        if (write_slot(&plan, plan.slot[h], hooks[h].to) != 0)
            return 0;
    return 1;
}
#else
int sc_plt_patch(const sc_plt_hook *hooks, size_t n)
{
    (void)hooks;
    (void)n;
    return 0;
}
#endif
