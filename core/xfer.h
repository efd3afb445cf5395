/* xfer.h - inside transfers: the endpoint interfaces the driver (transfer.c) moves entries
 * through, the context every endpoint reports to, and the helpers endpoints share (xfer.c).
 * Endpoints: this machine's filesystem (xfer_local.c), SCP (scp.c), SFTP (sftp.c with
 * sftp_source.c and sftp_sink.c). Every step is non-blocking: XF_AGAIN means "call me again when
 * the session has been serviced", never "I waited". */
#ifndef SC_XFER_H
#define SC_XFER_H

#include "channel.h"

#include <sys/types.h>

typedef enum { XF_OK = 0, XF_AGAIN, XF_DONE, XF_SKIP, XF_ERR } xf_status;

typedef enum { XE_FILE = 1, XE_DIR, XE_END_DIR } xf_entry_type;

#define XF_NAME_MAX SC_NAME_MAX

/* One record of the stream: a file (followed by its data), a directory entered, or left. */
typedef struct {
    xf_entry_type type;
    char name[XF_NAME_MAX + 1]; /* one path component (none for XE_END_DIR) */
    unsigned mode;              /* permission bits only */
    uint64_t size;
    int has_times;
    int64_t mtime, atime;
} xf_entry;

/* The options endpoints follow (the driver's others are its own). */
typedef struct {
    int recursive;       /* directories are copied with their contents */
    int preserve;        /* modes and times are kept */
    uint64_t total_hint; /* the caller knows the total: sources add nothing to it */
    int resume;          /* sinks write to the partial name and keep it on failure */
} xf_options;

/* What the endpoints of one transfer share with its driver: the options, the errors, the
 * expected total, the idle clock. The driver embeds it and registers `wake`. */
typedef struct xf_ctx {
    xf_options o;
    const char *verb; /* "upload", "download", "copy": the stage of its messages */
    char label[300];  /* the hop that names the transfer when an end has no session */
    sc_err err;       /* the hard error, once set */
    sc_err soft;      /* the first per-file failure */
    long n_soft;
    uint64_t total;
    double last_activity;
    uint64_t start_at; /* the entry being opened starts at this offset (resume; 0 otherwise) */
    void (*wake)(struct xf_ctx *x); /* another round soon, on every session involved */
} xf_ctx;

typedef struct xf_end xf_end;

/* A source of entries. */
typedef struct {
    /* Set up (open the channel, look at the path); XF_OK when ready. */
    int (*start)(xf_end *e);
    /* The next entry (XF_OK), XF_DONE at the end. */
    int (*next)(xf_end *e, xf_entry *ent);
    /* Whether the sink took the entry (a refused directory is skipped whole); XF_SKIP: the
     * source cannot give this file after all (recorded). */
    int (*accept)(xf_end *e, const xf_entry *ent, int ok);
    /* Up to len bytes of the current file's data into buf (*got > 0 with XF_OK). */
    int (*read)(xf_end *e, char *buf, size_t len, size_t *got);
    /* May be NULL: like read, but gives up to len bytes where they are (*p, valid until the next
     * call on this end) instead of copying them. */
    int (*peek)(xf_end *e, const char **p, size_t len, size_t *got);
    /* All data was read; XF_OK if it is good, XF_SKIP if the source says it is not. */
    int (*data_end)(xf_end *e);
    /* May be NULL: the file ended on the sink (ok: kept). */
    int (*file_done)(xf_end *e, int ok);
    /* Everything was moved: flush, close, check the remote exit status. */
    int (*finish)(xf_end *e);
    /* The transfer failed or was canceled: close. Idempotent. */
    void (*abort)(xf_end *e);
    void (*destroy)(xf_end *e);
    /* May be NULL (remote ends): feeds the current file's first n bytes (resume). */
    int (*prefix)(xf_end *e, uint64_t n, void (*feed)(void *, const void *, size_t), void *arg);
} xf_source_ops;

/* A sink of entries. */
typedef struct {
    int (*start)(xf_end *e);
    /* Make the entry (XF_SKIP: this one refused, the transfer goes on). */
    int (*begin)(xf_end *e, const xf_entry *ent);
    /* Take up to len bytes (*took may be less; XF_AGAIN when it takes none now). */
    int (*write)(xf_end *e, const char *buf, size_t len, size_t *took);
    /* May be NULL (nothing kept under the final name before end_file, or nothing to say): waits
     * until the file's data is written on the remote side, not yet in place; *path is then the
     * remote path holding it (a temporary name), for a digest before it is kept. */
    int (*settle)(xf_end *e, const char **path);
    /* The file's data is complete: keep it (commit) or throw it away. */
    int (*end_file)(xf_end *e, int commit);
    /* end_file(e, 0) may also come in the middle of a file's data, when the source failed (or the
     * verification did): the sink throws the file away as always, and the transfer fails after
     * it has (a remote temporary file is removed before the failure is told). */
    int cut_discard;
    int (*finish)(xf_end *e);
    /* The transfer failed or was canceled: remove temporary files (with resume: keep the
     * partial), close. Idempotent. */
    void (*abort)(xf_end *e);
    void (*destroy)(xf_end *e);
    /* May be NULL: as the source's prefix, from the partial file begun. */
    int (*prefix)(xf_end *e, uint64_t n, void (*feed)(void *, const void *, size_t), void *arg);
} xf_sink_ops;

struct xf_end {
    const xf_source_ops *src; /* one of the two is set */
    const xf_sink_ops *sink;
    xf_ctx *x;
    sc_session *session; /* NULL: this machine */
    char *path;
    char *dest_root; /* sink: where the top entry lands, when known */
};

/* A session channel running a command or subsystem, for the remote endpoints: the channel
 * layer's channel, and the tail of what the remote side wrote on stderr. */
typedef struct {
    sc_channel chan;
    int started, closed;
    char err_tail[400];
    size_t err_len;
    char err_clean[400];
} xf_chan;

/* Opens a session channel on e's session and starts cmd (or the subsystem). */
int xf_chan_open(xf_end *e, xf_chan *c, const char *what, int subsystem);
/* XF_OK (*got > 0), XF_AGAIN, XF_DONE (EOF) or XF_ERR. */
int xf_chan_read(xf_end *e, xf_chan *c, char *buf, size_t len, size_t *got);
/* Queues what the window and the session's output budget allow; XF_OK (*took > 0) or XF_AGAIN. */
int xf_chan_write(xf_end *e, xf_chan *c, const char *buf, size_t len, size_t *took);
/* Sends EOF and waits for the remote command to end; XF_OK with its exit status recorded. */
int xf_chan_finish(xf_end *e, xf_chan *c);
void xf_chan_close(xf_end *e, xf_chan *c);
int xf_chan_is_open(const xf_chan *c);
/* The remote side's stderr, sanitized, for messages ("" if none). */
const char *xf_chan_stderr(xf_chan *c);

/* Sets the transfer's error (hard: it stops) naming e's hop and the stage; returns XF_ERR. */
int xf_fail(xf_end *e, sc_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Records a per-file failure (soft: the transfer goes on, and fails at the end); returns XF_SKIP. */
int xf_soft(xf_end *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The first per-file failure's detail (its message without label and stage). */
const char *xf_soft_detail(xf_ctx *x);
/* Something moved (records or bytes): resets the idle deadline. */
void xf_activity(xf_ctx *x);
/* Asks for another round of the transfer soon. */
void xf_wake(xf_ctx *x);
/* The label that names e in messages: its session's, else the transfer's. */
const char *xf_label(const xf_end *e);
/* A name as a source may send it: not empty, ".", "..", no '/', no NUL, short enough. */
int xf_name_ok(const char *name, size_t len);
/* path with a leading "~/" (or "~") made relative: both a remote shell and an SFTP server start
 * in the home directory. A pointer into path, or to ".". */
const char *xf_home_relative(const char *path);
/* path quoted for a POSIX shell ('...'), with a leading "~/" left to the shell's home; NULL if
 * the path holds a newline (or out of memory). */
char *xf_shell_path(const char *path);
/* The last component of p (after the last '/'). */
const char *xf_base_name(const char *p);
/* A temporary name for a file being written beside `name`: ".NAME.XXXXXX.part" with six random
 * hex digits, into out (cap bytes). */
void xf_temp_name(char *out, size_t cap, const char *name);
/* ".NAME.sshchain-partial" (sc_xfer_partial_name). */
void xf_partial_name(char *out, size_t cap, const char *name);
/* The sink's name for a file being written: with resume its partial name, else a temporary one (xf_temp_name). */
void xf_sink_name(const xf_ctx *x, char *out, size_t cap, const char *name);
/* Feeds the first n bytes of the open file fd (pread: its offset stays) to feed; XF_OK, or
 * XF_ERR (e's transfer failed) when they cannot be read. */
int xf_fd_prefix(xf_end *e, int fd, uint64_t n, void (*feed)(void *, const void *, size_t),
                 void *arg);

xf_end *xf_local_new(xf_ctx *x, const char *path, int is_src);
xf_end *xf_scp_new(xf_ctx *x, sc_session *s, const char *path, int is_src);
xf_end *xf_sftp_new(xf_ctx *x, sc_session *s, const char *path, int is_src);

#endif
