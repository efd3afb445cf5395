/* xfer.h - inside transfers: the endpoint interface the driver (transfer.c) moves entries through,
 * and the helpers endpoints share. Endpoints: this machine's filesystem (xfer_local.c), SCP
 * (scp.c), SFTP (sftp.c). Every step is non-blocking: XF_AGAIN means "call me again when the
 * session has been serviced", never "I waited". */
#ifndef SC_XFER_H
#define SC_XFER_H

#include "transfer.h"

#include <sys/types.h>

enum { XF_OK = 0, XF_AGAIN, XF_DONE, XF_SKIP, XF_ERR };

enum { XE_FILE = 1, XE_DIR, XE_END_DIR };

#define XF_NAME_MAX 255

/* One record of the stream: a file (followed by its data), a directory entered, or left. */
typedef struct {
    int type;
    char name[XF_NAME_MAX + 1]; /* one path component (none for XE_END_DIR) */
    unsigned mode;              /* permission bits only */
    uint64_t size;
    int has_times;
    int64_t mtime, atime;
} xf_entry;

typedef struct sc_xfer sc_xfer;
typedef struct xf_end xf_end;

typedef struct {
    /* Both: set up (open the channel, look at the path); XF_OK when ready. */
    int (*start)(xf_end *e);
    /* Source: the next entry (XF_OK), XF_DONE at the end. */
    int (*next)(xf_end *e, xf_entry *ent);
    /* Source: whether the sink took the entry (a refused directory is skipped whole). */
    int (*accept)(xf_end *e, const xf_entry *ent, int ok);
    /* Source: up to len bytes of the current file's data into buf (*got > 0 with XF_OK). */
    int (*read)(xf_end *e, char *buf, size_t len, size_t *got);
    /* Source: all data was read; XF_OK if it is good, XF_SKIP if the source says it is not. */
    int (*data_end)(xf_end *e);
    /* Source: the file ended on the sink (ok: kept). */
    int (*file_done)(xf_end *e, int ok);
    /* Sink: make the entry (XF_SKIP: this one refused, the transfer goes on). */
    int (*begin)(xf_end *e, const xf_entry *ent);
    /* Sink: take up to len bytes (*took may be less; XF_AGAIN when it takes none now). */
    int (*write)(xf_end *e, const char *buf, size_t len, size_t *took);
    /* Sink: the file's data is complete: keep it (commit) or throw it away. */
    int (*end_file)(xf_end *e, int commit);
    /* Both: everything was moved: flush, close, check the remote exit status. */
    int (*finish)(xf_end *e);
    /* Both: the transfer failed or was canceled: remove temporary files, close. Idempotent. */
    void (*abort)(xf_end *e);
    void (*destroy)(xf_end *e);
} xf_ops;

struct xf_end {
    const xf_ops *ops;
    sc_xfer *x;
    sc_session *session; /* NULL: this machine */
    char *path;
    int is_src;
    char *dest_root; /* sink: where the top entry lands, when known */
};

/* A session channel running a command or subsystem, for the remote endpoints. */
typedef struct {
    ssh_channel ch;
    sc_exit exit;
    int phase;
    int eof_sent;
    char err_tail[400]; /* the end of what the remote side wrote on stderr */
    size_t err_len;
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
/* The remote side's stderr, sanitized, for messages ("" if none). */
const char *xf_chan_stderr(xf_chan *c);

/* Sets the transfer's error (hard: it stops) naming e's hop and the stage; returns XF_ERR. */
int xf_fail(xf_end *e, sc_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Records a per-file failure (soft: the transfer goes on, and fails at the end); returns XF_SKIP. */
int xf_soft(xf_end *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Per-file failures so far, and the first one's message (without its CODE). */
long xf_soft_count(sc_xfer *x);
const char *xf_soft_message(sc_xfer *x);
/* Something moved (records or bytes): resets the idle deadline. */
void xf_activity(sc_xfer *x);
/* Asks for another round of the transfer soon. */
void xf_wake(sc_xfer *x);
/* The options the transfer was started with. */
const sc_xfer_opts *xf_opts(sc_xfer *x);
/* Adds to the expected total. */
void xf_add_total(sc_xfer *x, uint64_t bytes);
/* A name as a source may send it: not empty, ".", "..", no '/', no NUL, short enough. */
int xf_name_ok(const char *name, size_t len);
/* path with a leading "~/" (or "~") made relative: both a remote shell and an SFTP server start
 * in the home directory. A pointer into path, or to ".". */
const char *xf_home_relative(const char *path);
/* path quoted for a POSIX shell ('...'), with a leading "~/" left to the shell's home; NULL if
 * the path holds a newline (or out of memory). */
char *xf_shell_path(const char *path);

xf_end *xf_local_new(sc_xfer *x, const char *path, int is_src);
xf_end *xf_scp_new(sc_xfer *x, sc_session *s, const char *path, int is_src);
xf_end *xf_sftp_new(sc_xfer *x, sc_session *s, const char *path, int is_src);

#endif
