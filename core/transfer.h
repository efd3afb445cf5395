/* transfer.h - file transfers: upload, download and server-to-server copy, over SCP or SFTP.
 *
 * A transfer streams entries (files, directories) from a source to a sink. Either end is this
 * machine's filesystem (session NULL) or a session of the tree speaking SCP (`scp -f` / `scp -t`
 * over an exec channel) or SFTP v3 (the sftp subsystem). Data moves through one fixed buffer with
 * back-pressure from the channel windows: memory stays bounded whatever the size. */
#ifndef SC_TRANSFER_H
#define SC_TRANSFER_H

#include "session.h"

enum { SC_PROTO_SCP = 0, SC_PROTO_SFTP = 1 };

typedef struct {
    sc_session *session; /* NULL: this machine's filesystem */
    const char *path;
} sc_xfer_end;

typedef struct {
    sc_xfer_end src, dst;
    int protocol;          /* SC_PROTO_SCP or SC_PROTO_SFTP, for the remote ends */
    int recursive;         /* directories are copied with their contents */
    int preserve;          /* modes and times are kept */
    int hash;              /* SHA-256 of every file as it streams (sc_xfer_file) */
    int verify;            /* with hash: before a file is kept, its digest is compared with the
                              remote side's (sc_xfer_verify_request); a mismatch fails EIO and
                              nothing takes the final name */
    double idle_timeout;   /* seconds without any progress: ETIMEDOUT; 0: none */
    double progress_every; /* seconds between progress news (default 0.25) */
    uint64_t total_hint;   /* bytes expected, when the caller knows better than the source */
    const char *verb;      /* "upload", "download", "copy": names the stage in messages */
    int resume;            /* the sink writes each file to its partial name (sc_xfer_partial_name,
                              mode 0600), kept when the transfer fails, for a later run */
    uint64_t offset;       /* with resume: the top file's first `offset` bytes are in its partial
                              already (checked by the caller): the source starts there and the
                              sink appends. SFTP or this machine only (SCP has no offsets) */
} sc_xfer_opts;

/* Starts a transfer; the op completes when every entry has been moved (or it failed: the first
 * hard error, or EIO naming how many files failed and the first reason). A sink on this machine
 * writes each file to a temporary name in the target directory and renames it only when complete,
 * never follows a symlink out of the target, and refuses unsafe names. NULL: out of memory. */
sc_op *sc_xfer_start(const sc_xfer_opts *o);

/* Progress: bytes moved, bytes expected (0: unknown), the current file (relative path), files
 * done. The op is notified as news at most every progress_every seconds. */
void sc_xfer_progress(sc_op *op, uint64_t *done, uint64_t *total, const char **name, long *files);
/* Takes the progress news (1 if there was some since the last take). */
int sc_xfer_take_news(sc_op *op);

/* Files moved (with hash on): path relative to the transfer's top entry's parent (the first
 * component is the top entry's name as the source sent it), size, SHA-256 as 64 hex digits.
 * Returns 0 past the end. */
int sc_xfer_file(sc_op *op, size_t i, const char **path, uint64_t *size, const char **sha256);

/* Verification before commit (opts.verify). When a file's data is complete, the transfer asks
 * for the digest of the remote copies it can check before keeping the file: the source's
 * (side 0: path relative as in sc_xfer_file) and, when the sink writes to a temporary name
 * first (SFTP), the sink's (side 1: that remote path). The op is notified; the embedder reads
 * the requests and answers each (hex digits, or NULL with a message when it could not be had).
 * Returns 1 and fills *path for each side that awaits an answer not yet asked for. */
int sc_xfer_verify_request(sc_op *op, int side, const char **path);
void sc_xfer_verify_answer(sc_op *op, int side, const char *sha256, const char *why);
/* Whether the sink is one that keeps nothing under the final name before the verify (local,
 * SFTP); an SCP sink writes in place, and is checked afterwards. */
int sc_xfer_sink_verifies_first(sc_op *op);

/* SHA-256 of the first `limit` bytes of a file of this machine (limit < 0: all of it), as 64
 * hex digits into hex: 0; or -1 with why (cap bytes) said. Reads in place. */
int sc_sha256_file(const char *path, int64_t limit, char hex[65], char *why, size_t cap);

/* The name a resumable transfer writes `name` under until it is complete, beside it:
 * ".NAME.sshchain-partial" (NAME cut to 200 bytes), into out (cap bytes). */
void sc_xfer_partial_name(char *out, size_t cap, const char *name);

/* Where the top entry landed on the sink, when the sink knows it (this machine, SFTP): a path,
 * or NULL. */
const char *sc_xfer_dest_root(sc_op *op);

#endif
