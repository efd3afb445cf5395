/* sftp.h - inside the SFTP endpoint (sftp.c: the session with its requests in flight;
 * sftp_source.c, sftp_sink.c: the two directions). Not for use elsewhere. */
#ifndef SC_SFTP_H
#define SC_SFTP_H

#include "sftp_wire.h"
#include "xfer.h"

#define SF_CHUNK 65536
/* the largest READ or WRITE: OpenSSH's servers take 255 KiB when they say so
 * (limits@openssh.com), which costs them less per byte than SF_CHUNK; other servers get SF_CHUNK.
 * Reads keep SF_PIPE * SF_CHUNK bytes in flight whatever their size. */
#define SF_BIG_MAX (255 * 1024)
#define SF_PIPE    64
#define SF_MAX_REQ (SF_PIPE + 4)

/* Where a call that takes several requests is (calls are retried until done). */
typedef enum {
    SF_IDLE = 0,
    /* sink, a directory */
    SF_DIR_CHECK, /* MKDIR failed: LSTAT tells whether it exists as a directory */
    SF_DIR_MADE,  /* made (or there): push the frame */
    /* sink, the end of a file */
    SF_END_SETSTAT, /* modes and times */
    SF_END_CLOSE,   /* close, to keep */
    SF_END_RENAME,  /* into place */
    SF_END_DISCARD, /* close, to throw away */
    SF_END_REMOVE,  /* remove the temporary file */
} sf_step;

/* A request slot. */
typedef enum { RQ_FREE = 0, RQ_SENT, RQ_DONE, RQ_DISCARD } sreq_state;

typedef struct {
    uint32_t id;
    sreq_state state;
    uint8_t type;    /* the reply's type */
    uint32_t status; /* FXP_STATUS code */
    char msg[160];
    uint8_t *data; /* the reply after its id */
    size_t len;
    size_t used;     /* FXP_DATA: bytes already handed on */
    uint64_t offset; /* READ/WRITE: where */
    uint32_t want;   /* READ: bytes asked */
} sreq;

typedef struct {
    char *name;
    sattrs a;
} sname;

typedef struct {
    char *path;
    char *handle;
    size_t hlen;
    sname *names; /* the last READDIR batch */
    int n_names, next_name;
    int eof;
    sattrs a; /* sink: applied when the directory is left */
} sframe;

typedef struct {
    xf_end e;
    xf_chan c;
    int ready; /* INIT/VERSION done */
    int init_sent;
    sf_step step; /* where the current multi-call operation is */
    int cur;      /* the request the current single call waits for, -1 none */
    sc_buf out;
    sc_buf in;
    sreq req[SF_MAX_REQ];
    uint32_t next_id;
    int posix_rename;
    int limits;    /* the server offers limits@openssh.com: asked once, at the start */
    int limits_rq; /* its request, -1 before */
    size_t wchunk; /* the largest WRITE sent */
    size_t rchunk; /* the largest READ asked */
    int rpipe;     /* READs in flight at most */
    /* the current file */
    char *fpath; /* its path */
    char *tmp;   /* sink: its temporary path */
    char *handle;
    size_t hlen;
    uint64_t size, next_off, delivered;
    int ring[SF_MAX_REQ]; /* in-flight READ/WRITE requests, in offset order */
    int ring_head, ring_n;
    /* source: the reply at the ring's head was handed on whole; it is let go at the next call
     * (the bytes may still be on their way out), short: it held less than was asked */
    int head_spent, head_short;
    /* sink: bytes of the last WRITE's data still to send after its header, straight from the
     * transfer's buffer; nothing else may go on the channel before them */
    size_t wr_left;
    int wr_cut; /* a WRITE was completed with zeros: the file is not kept */
    xf_entry cur_ent;
    /* walking (source) / making (sink) directories */
    sframe *stack;
    int depth, cap;
    int top_seen;
    char *top_name; /* source: the name of the top entry */
    sattrs top;
    char *root;   /* sink: the directory the top entry goes into, or NULL */
    char *top_as; /* sink: the top entry's own path when the target is that entry */
    int sink_started;
    int old_removed; /* sink: the rename step removed the file it replaces */
} xf_sftp;

/* ---- the requests (sftp.c) ---- */

/* Begins a request of type; returns its slot (the id is written), or -1 if none is free. */
int sf_req_begin(xf_sftp *sf, uint8_t type, size_t *len_at);
void sf_req_end(xf_sftp *sf, size_t len_at);
/* Ends a request whose last `more` bytes are sent after it, from elsewhere (a WRITE's data). */
void sf_req_end_with(xf_sftp *sf, size_t len_at, size_t more);
void sf_req_free(xf_sftp *sf, int slot);
/* A request with one path (and attributes), or one handle: its slot, or -1. */
int sf_req_path(xf_sftp *sf, uint8_t type, const char *path, const sattrs *a);
int sf_req_handle(xf_sftp *sf, uint8_t type, const char *h, size_t hlen, const sattrs *a);
/* Sends what is queued. */
int sf_flush(xf_sftp *sf);
/* Sends what is queued and takes every reply that has arrived. */
int sf_pump(xf_sftp *sf);
/* Waits for the reply to the request in slot; XF_OK once it is there. */
int sf_wait_reply(xf_sftp *sf, int slot);

/* For a single call: sends the request made by `make` once, then waits for its reply. The
 * reply stays in sf->req[sf->cur] until sf_call_done. */
#define CALL(sf, make)                                                                             \
    do {                                                                                           \
        if ((sf)->cur < 0) {                                                                       \
            (sf)->cur = (make);                                                                    \
            if ((sf)->cur < 0)                                                                     \
                return xf_fail(&(sf)->e, SC_EIO, "too many SFTP requests");                        \
        }                                                                                          \
        int call_r_ = sf_wait_reply((sf), (sf)->cur);                                              \
        if (call_r_ != XF_OK)                                                                      \
            return call_r_;                                                                        \
    } while (0)

static inline sreq *sf_reply(xf_sftp *sf) { return &sf->req[sf->cur]; }
void sf_call_done(xf_sftp *sf);
/* The reply must be `type` (or a STATUS, reported as failure, soft: for this entry only). */
int sf_expect(xf_sftp *sf, uint8_t type, const char *what, const char *path, int soft);
int sf_take_handle(xf_sftp *sf, char **h, size_t *hlen);
int sf_take_attrs(xf_sftp *sf, sattrs *a);
/* A STAT/LSTAT reply: its attributes, or all zero when the server said it has none (no such
 * file); the call is done either way. XF_OK, or XF_ERR on bad attributes. */
int sf_stat_done(xf_sftp *sf, sattrs *a);

/* ---- shared by both directions (sftp.c) ---- */

char *sf_join(const char *dir, const char *name); /* dir + "/" + name, new */
int sf_attrs_is_dir(const sattrs *a);
int sf_attrs_is_reg(const sattrs *a);
int sf_push_frame(xf_sftp *sf, sframe f);
void sf_close_frame(sframe *f);
void sf_drop_file(xf_sftp *sf);
int sf_ring_at(xf_sftp *sf, int i);
void sf_ring_pop(xf_sftp *sf);
int sf_start(xf_end *e); /* the channel, INIT and VERSION */
int sf_finish(xf_end *e);
void sf_abort(xf_end *e);
/* A WRITE cut short (the file is thrown away): zeros complete it, so that requests can follow. */
void sf_write_pad(xf_sftp *sf);
void sf_destroy(xf_end *e);

extern const xf_source_ops sftp_source;
extern const xf_sink_ops sftp_sink;

#endif
