/* xfer_local.c - this machine's filesystem as a transfer endpoint.
 *
 * As a source it walks the path (following symlinks, as scp does, but never around a loop) and
 * reads each file. As a sink it works below one directory fd: every name goes through *at()
 * calls with O_NOFOLLOW, so nothing is ever written outside the target, whatever a server sends;
 * a file is written to a temporary name next to its final one and renamed into place only when
 * complete; on failure the temporary file is removed. Local file I/O is done in place (regular
 * files do not block the way sockets do), in bounded chunks per round. */
#include "xfer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 512

typedef struct {
    DIR *d;    /* source: the directory being listed (NULL: its listing failed) */
    int fd;    /* sink: the directory's fd */
    dev_t dev; /* source: for loop detection */
    ino_t ino;
    unsigned mode; /* sink: applied when the directory is left */
    int has_times, created;
    int64_t mtime, atime;
} lframe;

typedef struct {
    xf_end e;
    lframe *stack;
    int depth, cap;
    int root_fd;  /* sink: the directory the top entry goes into */
    char *top_as; /* sink: the top entry's name when the target itself is that entry */
    int top_seen;
    char top_name[XF_NAME_MAX + 1];
    struct stat top_st;
    int fd;        /* the current file */
    uint64_t left; /* source: bytes of the current file still to read */
    char tmp[XF_NAME_MAX + 1];
    char final[XF_NAME_MAX + 1];
    int keep_mode; /* sink: an existing file's mode (-1: none) */
    xf_entry cur;  /* sink: the file being written */
    mode_t umask;
} xf_local;

static int dir_fd(xf_local *l) { return l->depth ? l->stack[l->depth - 1].fd : l->root_fd; }

static int push(xf_local *l, lframe f)
{
    if (l->depth >= MAX_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    if (l->depth == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        lframe *s = realloc(l->stack, (size_t)cap * sizeof *s);
        if (!s)
            return -1;
        l->stack = s;
        l->cap = cap;
    }
    l->stack[l->depth++] = f;
    return 0;
}

static void close_frames(xf_local *l)
{
    while (l->depth > 0) {
        lframe *f = &l->stack[--l->depth];
        if (f->d)
            closedir(f->d);
        else if (f->fd >= 0)
            close(f->fd);
    }
}

/* path without trailing slashes (but "/" stays), in a new string */
static char *trimmed(const char *path)
{
    char *p = sc_strdup(path);
    if (!p)
        return NULL;
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    return p;
}

/* ---- source ---- */

/* Bytes in regular files under dir fd (following symlinks as the walk does, never around a
 * loop), for the progress total: an estimate, given up (0: unknown) past `budget` entries, since
 * it runs in the loop before anything moves. */
typedef struct {
    dev_t dev[64];
    ino_t ino[64];
    int depth;
    long budget;
} tree_walk;

static uint64_t tree_bytes(int fd, tree_walk *w)
{
    uint64_t sum = 0;
    struct stat self;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return 0;
    }
    if (fstat(fd, &self) != 0 || w->depth >= 64) {
        closedir(d);
        return 0;
    }
    for (int i = 0; i < w->depth; i++) {
        if (w->dev[i] == self.st_dev && w->ino[i] == self.st_ino) { /* a symlink loop */
            closedir(d);
            return 0;
        }
    }
    w->dev[w->depth] = self.st_dev;
    w->ino[w->depth] = self.st_ino;
    w->depth++;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && w->budget > 0) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        w->budget--;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) != 0)
            continue;
        if (S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
        else if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub >= 0)
                sum += tree_bytes(sub, w);
        }
    }
    w->depth--;
    closedir(d);
    return w->budget > 0 ? sum : 0;
}

static void fill_entry(xf_entry *ent, const char *name, const struct stat *st)
{
    ent->type = S_ISDIR(st->st_mode) ? XE_DIR : XE_FILE;
    snprintf(ent->name, sizeof ent->name, "%s", name);
    ent->mode = (unsigned)st->st_mode & 0777;
    ent->size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
    ent->has_times = 1;
    ent->mtime = (int64_t)st->st_mtime;
    ent->atime = (int64_t)st->st_atime;
}

static int src_start(xf_end *e)
{
    xf_local *l = (xf_local *)e;
    const xf_options *o = &e->x->o;
    if (stat(e->path, &l->top_st) != 0)
        return xf_fail(e, SC_EIO, "local %s: %s", e->path, strerror(errno));
    if (S_ISDIR(l->top_st.st_mode) && !o->recursive)
        return xf_fail(e, SC_EIO, "local %s: is a directory (set recursive)", e->path);
    if (!S_ISDIR(l->top_st.st_mode) && !S_ISREG(l->top_st.st_mode))
        return xf_fail(e, SC_EIO, "local %s: not a regular file", e->path);
    const char *b = xf_base_name(e->path);
    if (!xf_name_ok(b, strlen(b))) {
        char *real = realpath(e->path, NULL);
        const char *rb = real ? xf_base_name(real) : "";
        if (!xf_name_ok(rb, strlen(rb))) {
            free(real);
            return xf_fail(e, SC_EIO, "local %s: cannot be sent as a whole (no name)", e->path);
        }
        snprintf(l->top_name, sizeof l->top_name, "%s", rb);
        free(real);
    } else {
        snprintf(l->top_name, sizeof l->top_name, "%s", b);
    }
    if (S_ISREG(l->top_st.st_mode)) {
        l->fd = open(e->path, O_RDONLY | O_CLOEXEC);
        if (l->fd < 0)
            return xf_fail(e, SC_EIO, "local %s: %s", e->path, strerror(errno));
        if (fstat(l->fd, &l->top_st) != 0)
            return xf_fail(e, SC_EIO, "local %s: %s", e->path, strerror(errno));
        if (o->total_hint == 0)
            e->x->total += (uint64_t)l->top_st.st_size;
    } else if (o->total_hint == 0) {
        int fd = open(e->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        tree_walk w = {.budget = 200000};
        if (fd >= 0)
            e->x->total += tree_bytes(fd, &w);
    }
    return XF_OK;
}

static int on_stack(xf_local *l, const struct stat *st)
{
    for (int i = 0; i < l->depth; i++)
        if (l->stack[i].dev == st->st_dev && l->stack[i].ino == st->st_ino)
            return 1;
    return l->top_st.st_dev == st->st_dev && l->top_st.st_ino == st->st_ino;
}

static int src_next(xf_end *e, xf_entry *ent)
{
    xf_local *l = (xf_local *)e;
    if (!l->top_seen) {
        l->top_seen = 1;
        fill_entry(ent, l->top_name, &l->top_st);
        l->left = ent->size;
        return XF_OK;
    }
    while (l->depth > 0) {
        lframe *f = &l->stack[l->depth - 1];
        struct dirent *de = f->d ? readdir(f->d) : NULL;
        if (!de) {
            if (f->d)
                closedir(f->d);
            l->depth--;
            ent->type = XE_END_DIR;
            return XF_OK;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(f->d), de->d_name, &st, 0) != 0) {
            xf_soft(e, "local %s: %s", de->d_name, strerror(errno));
            continue;
        }
        if (S_ISREG(st.st_mode)) {
            l->fd = openat(dirfd(f->d), de->d_name, O_RDONLY | O_CLOEXEC);
            if (l->fd < 0 || fstat(l->fd, &st) != 0) {
                xf_soft(e, "local %s: %s", de->d_name, strerror(errno));
                if (l->fd >= 0)
                    close(l->fd);
                l->fd = -1;
                continue;
            }
        } else if (S_ISDIR(st.st_mode)) {
            if (on_stack(l, &st)) {
                xf_soft(e, "local %s: directory loop through a symlink, skipped", de->d_name);
                continue;
            }
        } else {
            xf_soft(e, "local %s: not a regular file, skipped", de->d_name);
            continue;
        }
        fill_entry(ent, de->d_name, &st);
        l->left = ent->size;
        return XF_OK;
    }
    return XF_DONE;
}

static int src_accept(xf_end *e, const xf_entry *ent, int ok)
{
    xf_local *l = (xf_local *)e;
    if (ent->type == XE_FILE && !ok && l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    if (ent->type == XE_FILE && ok && e->x->start_at > 0) { /* resume: the rest only */
        if (lseek(l->fd, (off_t)e->x->start_at, SEEK_SET) < 0)
            return xf_fail(e, SC_EIO, "local seek %s: %s", ent->name, strerror(errno));
        l->left = ent->size - e->x->start_at;
    }
    if (ent->type != XE_DIR || !ok)
        return XF_OK;
    int fd = l->depth ? openat(dirfd(l->stack[l->depth - 1].d), ent->name,
                               O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                      : open(e->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    lframe f = {.fd = -1};
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        f.dev = st.st_dev;
        f.ino = st.st_ino;
        f.d = fdopendir(fd);
    }
    if (!f.d) {
        xf_soft(e, "local %s: %s", ent->name, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (push(l, f) < 0) {
        if (f.d)
            closedir(f.d);
        return xf_fail(e, SC_EIO, "local %s: %s", ent->name, strerror(errno));
    }
    return XF_OK;
}

static int src_read(xf_end *e, char *buf, size_t len, size_t *got)
{
    xf_local *l = (xf_local *)e;
    ssize_t n;
    do
        n = read(l->fd, buf, len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return xf_fail(e, SC_EIO, "local read: %s", strerror(errno));
    if (n == 0)
        return xf_fail(e, SC_EIO, "local file shrank while being read (%llu bytes missing)",
                       (unsigned long long)l->left);
    *got = (size_t)n;
    l->left -= (uint64_t)n < l->left ? (uint64_t)n : l->left;
    return XF_OK;
}

static int local_prefix(xf_end *e, uint64_t n, void (*feed)(void *, const void *, size_t),
                        void *arg)
{
    xf_local *l = (xf_local *)e;
    if (l->fd < 0)
        return xf_fail(e, SC_EIO, "local: no file open for its first bytes");
    return xf_fd_prefix(e, l->fd, n, feed, arg);
}

static int src_file_done(xf_end *e, int ok)
{
    (void)ok;
    xf_local *l = (xf_local *)e;
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    return XF_OK;
}

/* ---- sink ---- */

static int sink_start(xf_end *e)
{
    xf_local *l = (xf_local *)e;
    mode_t m = umask(0);
    umask(m);
    l->umask = m;
    struct stat st;
    int r = stat(e->path, &st);
    if (r == 0 && S_ISDIR(st.st_mode)) {
        l->root_fd = open(e->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (l->root_fd < 0)
            return xf_fail(e, SC_EIO, "local %s: %s", e->path, strerror(errno));
        return XF_OK;
    }
    if (r != 0 && errno != ENOENT)
        return xf_fail(e, SC_EIO, "local %s: %s", e->path, strerror(errno));
    if (r == 0 && !S_ISREG(st.st_mode))
        return xf_fail(e, SC_EIO, "local %s: not a regular file or directory", e->path);
    /* the target is the top entry itself: work in its parent directory */
    const char *b = xf_base_name(e->path);
    if (!xf_name_ok(b, strlen(b)))
        return xf_fail(e, SC_EIO, "local %s: not a usable target name", e->path);
    l->top_as = sc_strdup(b);
    char *parent = sc_strdup(e->path);
    if (!l->top_as || !parent) {
        free(parent);
        return xf_fail(e, SC_EIO, "out of memory");
    }
    char *slash = strrchr(parent, '/');
    const char *pdir = ".";
    if (slash == parent)
        pdir = "/";
    else if (slash) {
        *slash = '\0';
        pdir = parent;
    }
    l->root_fd = open(pdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->root_fd < 0)
        r = xf_fail(e, SC_EIO, "local %s: %s", pdir, strerror(errno));
    else
        r = XF_OK;
    free(parent);
    return r;
}

static void set_dest_root(xf_local *l, const char *name)
{
    if (l->e.dest_root)
        return;
    if (l->top_as) {
        l->e.dest_root = sc_strdup(l->e.path);
        return;
    }
    size_t n = strlen(l->e.path) + strlen(name) + 2;
    l->e.dest_root = malloc(n);
    if (l->e.dest_root)
        snprintf(l->e.dest_root, n, "%s%s%s", l->e.path,
                 l->e.path[strlen(l->e.path) - 1] == '/' ? "" : "/", name);
}

/* resume: the file's partial, ours alone (a regular file of this user, nobody else's bits),
 * made (mode 0600) or emptied when nothing of it is kept, else cut to the kept prefix and
 * appended to. Never followed through a symlink. */
static int open_partial(xf_local *l, int dfd, const char *name)
{
    xf_end *e = &l->e;
    uint64_t keep = e->x->start_at;
    xf_partial_name(l->tmp, sizeof l->tmp, name);
    l->fd = openat(dfd, l->tmp, O_RDWR | O_NOFOLLOW | O_CLOEXEC | (keep ? 0 : O_CREAT), 0600);
    if (l->fd < 0) {
        int er = errno;
        l->tmp[0] = '\0';
        return xf_fail(e, SC_EIO, "local partial of %s: %s", name, strerror(er));
    }
    struct stat st;
    const char *bad = NULL;
    if (fstat(l->fd, &st) != 0)
        bad = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        bad = "not a regular file";
    else if (st.st_uid != geteuid())
        bad = "owned by another user";
    else if ((uint64_t)st.st_size < keep)
        bad = "shorter than when it was checked";
    if (bad) {
        close(l->fd); /* not ours to remove */
        l->fd = -1;
        char shown[XF_NAME_MAX + 1];
        snprintf(shown, sizeof shown, "%s", l->tmp);
        l->tmp[0] = '\0';
        return xf_fail(e, SC_EIO, "local %s: %s (remove it to start again)", shown, bad);
    }
    if (fchmod(l->fd, 0600) != 0 || ftruncate(l->fd, (off_t)keep) != 0 ||
        lseek(l->fd, (off_t)keep, SEEK_SET) < 0)
        return xf_fail(e, SC_EIO, "local %s: %s", l->tmp, strerror(errno));
    return XF_OK;
}

static int sink_begin(xf_end *e, const xf_entry *ent)
{
    xf_local *l = (xf_local *)e;
    if (ent->type == XE_END_DIR) {
        if (l->depth == 0)
            return xf_fail(e, SC_EPROTO, "end of a directory that was never entered");
        lframe *f = &l->stack[l->depth - 1];
        if (e->x->o.preserve) {
            fchmod(f->fd, f->mode);
            if (f->has_times) {
                struct timespec ts[2] = {{(time_t)f->atime, 0}, {(time_t)f->mtime, 0}};
                futimens(f->fd, ts);
            }
        } else if (f->created) {
            fchmod(f->fd, f->mode & ~l->umask);
        }
        close(f->fd);
        l->depth--;
        return XF_OK;
    }
    const char *name = ent->name;
    if (l->depth == 0) {
        if (l->top_seen)
            return xf_fail(e, SC_EPROTO, "more than one top-level entry");
        l->top_seen = 1;
        if (l->top_as)
            name = l->top_as;
    }
    if (!xf_name_ok(name, strlen(name)))
        return xf_fail(e, SC_EPROTO, "refusing the name \"%s\"", name);
    int dfd = dir_fd(l);
    struct stat st;
    int exists = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (ent->type == XE_DIR) {
        if (!e->x->o.recursive)
            return xf_fail(e, SC_EPROTO, "directory %s sent, recursive not asked", name);
        lframe f = {.d = NULL,
                    .mode = ent->mode,
                    .has_times = ent->has_times,
                    .mtime = ent->mtime,
                    .atime = ent->atime};
        if (!exists) {
            if (mkdirat(dfd, name, 0700) != 0)
                return xf_fail(e, SC_EIO, "local mkdir %s: %s", name, strerror(errno));
            f.created = 1;
        } else if (S_ISLNK(st.st_mode)) {
            return xf_fail(e, SC_EIO, "local %s: is a symlink (not followed)", name);
        } else if (!S_ISDIR(st.st_mode)) {
            return xf_fail(e, SC_EIO, "local %s: exists and is not a directory", name);
        }
        f.fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (f.fd < 0)
            return xf_fail(e, SC_EIO, "local %s: %s", name, strerror(errno));
        if (push(l, f) < 0) {
            close(f.fd);
            return xf_fail(e, SC_EIO, "local %s: %s", name, strerror(errno));
        }
        if (l->depth == 1)
            set_dest_root(l, name);
        return XF_OK;
    }
    if (exists && S_ISDIR(st.st_mode))
        return xf_fail(e, SC_EIO, "local %s: is a directory", name);
    /* an existing file's permissions stay, never its setuid/setgid bits: the content is new */
    l->keep_mode = exists && S_ISREG(st.st_mode) ? (int)(st.st_mode & 0777) : -1;
    l->cur = *ent;
    snprintf(l->final, sizeof l->final, "%s", name);
    if (e->x->o.resume) {
        if (open_partial(l, dfd, name) != XF_OK)
            return XF_ERR;
        if (l->depth == 0)
            set_dest_root(l, name);
        return XF_OK;
    }
    for (int attempt = 0; attempt < 100; attempt++) {
        xf_temp_name(l->tmp, sizeof l->tmp, name);
        l->fd = openat(dfd, l->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (l->fd >= 0 || errno != EEXIST)
            break;
    }
    if (l->fd < 0) {
        l->tmp[0] = '\0';
        return xf_fail(e, SC_EIO, "local %s: %s", name, strerror(errno));
    }
    if (l->depth == 0)
        set_dest_root(l, name);
    return XF_OK;
}

static int sink_write(xf_end *e, const char *buf, size_t len, size_t *took)
{
    xf_local *l = (xf_local *)e;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(l->fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return xf_fail(e, SC_EIO, "local write %s: %s", l->final,
                           n < 0 ? strerror(errno) : "nothing written");
        done += (size_t)n;
    }
    *took = done;
    return XF_OK;
}

static void drop_tmp(xf_local *l)
{
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    if (l->tmp[0]) {
        unlinkat(dir_fd(l), l->tmp, 0);
        l->tmp[0] = '\0';
    }
}

static int sink_end_file(xf_end *e, int commit)
{
    xf_local *l = (xf_local *)e;
    if (!commit) {
        drop_tmp(l);
        return XF_OK;
    }
    const xf_options *o = &e->x->o;
    mode_t mode = l->cur.mode & ~l->umask;
    if (o->preserve)
        mode = l->cur.mode;
    else if (l->keep_mode >= 0)
        mode = (mode_t)l->keep_mode;
    if (fchmod(l->fd, mode) != 0)
        return xf_fail(e, SC_EIO, "local chmod %s: %s", l->final, strerror(errno));
    if (o->preserve && l->cur.has_times) {
        struct timespec ts[2] = {{(time_t)l->cur.atime, 0}, {(time_t)l->cur.mtime, 0}};
        if (futimens(l->fd, ts) != 0)
            return xf_fail(e, SC_EIO, "local set times %s: %s", l->final, strerror(errno));
    }
    int rc = close(l->fd);
    l->fd = -1;
    if (rc != 0)
        return xf_fail(e, SC_EIO, "local write %s: %s", l->final, strerror(errno));
    int dfd = dir_fd(l);
    if (renameat(dfd, l->tmp, dfd, l->final) != 0)
        return xf_fail(e, SC_EIO, "local rename to %s: %s", l->final, strerror(errno));
    l->tmp[0] = '\0';
    return XF_OK;
}

static int sink_finish(xf_end *e)
{
    xf_local *l = (xf_local *)e;
    if (l->depth != 0)
        return xf_fail(e, SC_EPROTO, "the stream ended inside a directory");
    if (l->root_fd >= 0) {
        close(l->root_fd);
        l->root_fd = -1;
    }
    return XF_OK;
}

/* ---- both ---- */

static void local_abort(xf_end *e)
{
    xf_local *l = (xf_local *)e;
    struct stat st;
    if (e->sink && e->x->o.resume && l->fd >= 0 && fstat(l->fd, &st) == 0 && st.st_size > 0) {
        close(l->fd); /* the partial stays for the next run */
        l->fd = -1;
        l->tmp[0] = '\0';
    }
    if (e->sink)
        drop_tmp(l);
    else if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    close_frames(l);
    if (l->root_fd >= 0) {
        close(l->root_fd);
        l->root_fd = -1;
    }
}

static void local_destroy(xf_end *e)
{
    xf_local *l = (xf_local *)e;
    local_abort(e);
    free(l->stack);
    free(l->top_as);
    free(e->path);
    free(e->dest_root);
    free(l);
}

/* No data_end (a local file is good when read) and no finish (nothing to flush). */
static const xf_source_ops local_source = {
    .start = src_start,
    .next = src_next,
    .accept = src_accept,
    .read = src_read,
    .file_done = src_file_done,
    .abort = local_abort,
    .destroy = local_destroy,
    .prefix = local_prefix,
};

static const xf_sink_ops local_sink = {
    .start = sink_start,
    .begin = sink_begin,
    .write = sink_write,
    .end_file = sink_end_file,
    .finish = sink_finish,
    .abort = local_abort,
    .destroy = local_destroy,
    .prefix = local_prefix,
};

xf_end *xf_local_new(xf_ctx *x, const char *path, int is_src)
{
    xf_local *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    if (is_src)
        l->e.src = &local_source;
    else
        l->e.sink = &local_sink;
    l->e.x = x;
    l->e.path = trimmed(path);
    l->fd = -1;
    l->root_fd = -1;
    l->keep_mode = -1;
    if (!l->e.path) {
        free(l);
        return NULL;
    }
    return &l->e;
}
