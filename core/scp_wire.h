/* scp_wire.h - the records of the legacy SCP protocol (as `scp -f` sends them), parsed from one
 * line alone (spec/fuzz feed it anything): "T<mtime> <usec> <atime> <usec>" and
 * "C<mode> <size> <name>" / "D<mode> 0 <name>". The checks of the CVE-2019-6111 /
 * CVE-2018-20685 class that need only the record are made here (octal permission digits, sizes
 * and times in range, a name that is one plain path component); the ones that need the
 * transfer's state (the name asked for, recursion) are scp.c's. */
#ifndef SC_SCP_WIRE_H
#define SC_SCP_WIRE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int is_dir;
    unsigned mode;    /* the four octal digits as sent */
    uint64_t size;    /* at most INT64_MAX */
    const char *name; /* into the line; not NUL-terminated */
    size_t name_len;
} scp_record;

/* A T record (line[0] == 'T', len bytes, no newline): 0 with the times, -1 when malformed or
 * out of range. */
int scp_parse_times(const char *line, size_t len, int64_t *mtime, int64_t *atime);

/* A C or D record: 0 with rec filled, -1 with *why saying what is wrong ("bad mode", ...). */
int scp_parse_record(const char *line, size_t len, scp_record *rec, const char **why);

#endif
