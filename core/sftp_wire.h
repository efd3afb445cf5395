/* sftp_wire.h - the SFTP version 3 wire format (draft-ietf-secsh-filexfer-02): packet types,
 * status codes, attributes, and a codec that needs nothing but a buffer. Every decoder checks
 * lengths against what is there, so the parsers can be fed anything (spec/fuzz). */
#ifndef SC_SFTP_WIRE_H
#define SC_SFTP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "sc.h"

typedef enum {
    FXP_INIT = 1,
    FXP_VERSION = 2,
    FXP_OPEN = 3,
    FXP_CLOSE = 4,
    FXP_READ = 5,
    FXP_WRITE = 6,
    FXP_LSTAT = 7,
    FXP_FSTAT = 8,
    FXP_SETSTAT = 9,
    FXP_FSETSTAT = 10,
    FXP_OPENDIR = 11,
    FXP_READDIR = 12,
    FXP_REMOVE = 13,
    FXP_MKDIR = 14,
    FXP_STAT = 17,
    FXP_RENAME = 18,
    FXP_STATUS = 101,
    FXP_HANDLE = 102,
    FXP_DATA = 103,
    FXP_NAME = 104,
    FXP_ATTRS = 105,
    FXP_EXTENDED = 200,
    FXP_EXTENDED_REPLY = 201,
} sftp_type;

typedef enum {
    FX_OK = 0,
    FX_EOF = 1,
    FX_NO_SUCH_FILE = 2,
    FX_PERMISSION_DENIED = 3,
    FX_FAILURE = 4,
    FX_BAD_MESSAGE = 5,
    FX_NO_CONNECTION = 6,
    FX_CONNECTION_LOST = 7,
    FX_OP_UNSUPPORTED = 8,
} sftp_status;

enum { FXF_READ = 1, FXF_WRITE = 2, FXF_CREAT = 8, FXF_TRUNC = 0x10, FXF_EXCL = 0x20 };

enum {
    ATTR_SIZE = 1,
    ATTR_UIDGID = 2,
    ATTR_PERMISSIONS = 4,
    ATTR_ACMODTIME = 8,
    ATTR_EXTENDED = 0x80000000u,
};

#define SFTP_MAX_PACKET (256 * 1024 + 1024) /* OpenSSH's limit; larger packets are refused */

typedef struct {
    uint32_t flags;
    uint64_t size;
    uint32_t perm;
    uint32_t atime, mtime;
} sattrs;

/* Encoding: appends to b (out of memory shows as a short buffer, caught when sent). */
void sftp_put_u8(sc_buf *b, uint8_t v);
void sftp_put_u32(sc_buf *b, uint32_t v);
void sftp_put_u64(sc_buf *b, uint64_t v);
void sftp_put_str(sc_buf *b, const void *s, size_t n);
void sftp_put_attrs(sc_buf *b, const sattrs *a);

/* Decoding: a cursor over untrusted bytes; a read past the end sets bad and yields zeros. */
typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
} sftp_cursor;

uint32_t sftp_get_u32(sftp_cursor *c);
uint64_t sftp_get_u64(sftp_cursor *c);
/* A string (its bytes stay in the buffer): its start and *n, or "" with bad set. */
const uint8_t *sftp_get_str(sftp_cursor *c, size_t *n);
void sftp_get_attrs(sftp_cursor *c, sattrs *a);

/* The length of the packet at the start of p (avail bytes there): 1 with *n set once its 4
 * length bytes are there, 0 when they are not yet, -1 when the length is 0 or past
 * SFTP_MAX_PACKET. */
int sftp_packet_length(const uint8_t *p, size_t avail, uint32_t *n);

/* the extensions of OpenSSH's that the client uses, as FXP_VERSION names them */
enum { SFTP_EXT_POSIX_RENAME = 1, SFTP_EXT_LIMITS = 2 };

/* FXP_VERSION's body (after the type byte): 0 with the version and the SFTP_EXT_ bits of the
 * extensions the server offers, -1 when malformed. */
int sftp_parse_version(const uint8_t *p, size_t n, uint32_t *version, int *exts);

/* The reply to limits@openssh.com (FXP_EXTENDED_REPLY's body after the id): 0 with the largest
 * READ and WRITE the server takes (0: it names none), -1 when malformed. */
int sftp_parse_limits(const uint8_t *p, size_t n, uint64_t *max_read, uint64_t *max_write);

/* FXP_STATUS's body after the id: the code and its message, sanitized (the standard text when
 * the server sent none); 0, or -1 when malformed. */
int sftp_parse_status(const uint8_t *p, size_t n, uint32_t *code, char *msg, size_t msglen);

/* The standard text of a status code. */
const char *sftp_status_text(uint32_t code);

/* FXP_HANDLE's body after the id: the handle (1..256 bytes); 0, or -1. */
int sftp_parse_handle(const uint8_t *p, size_t n, const uint8_t **h, size_t *hlen);

/* FXP_DATA's body after the id: the data, at most `want` bytes and at least one; 0, or -1. */
int sftp_parse_data(const uint8_t *p, size_t n, uint32_t want, const uint8_t **d, size_t *dl);

/* FXP_NAME's body after the id: the count (at most 100000), then call sftp_parse_name that many
 * times on the cursor; each gives a name (not checked: the caller's policy) and its attributes.
 * 0, or -1 when malformed. */
int sftp_parse_name_count(sftp_cursor *c, uint32_t *count);
int sftp_parse_name(sftp_cursor *c, const uint8_t **name, size_t *nlen, sattrs *a);

#endif
