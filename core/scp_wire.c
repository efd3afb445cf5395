/* scp_wire.c - SCP records, parsed (see scp_wire.h). */
#include "scp_wire.h"

#include "sc.h"

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int scp_parse_times(const char *line, size_t len, int64_t *mtime, int64_t *atime)
{
    const char *p = line + 1, *end = line + len;
    uint64_t v[4];
    if (len < 1 || line[0] != 'T')
        return -1;
    for (int i = 0; i < 4; i++) {
        if (p >= end || !is_digit(*p))
            return -1;
        uint64_t n = 0;
        while (p < end && is_digit(*p)) {
            if (n > (UINT64_C(1) << 62) / 10)
                return -1;
            n = n * 10 + (uint64_t)(*p++ - '0');
        }
        v[i] = n;
        if (i < 3) {
            if (p >= end || *p != ' ')
                return -1;
            p++;
        } else if (p != end) {
            return -1;
        }
    }
    if (v[1] > 999999 || v[3] > 999999 || v[0] > INT64_MAX / 2 || v[2] > INT64_MAX / 2)
        return -1;
    *mtime = (int64_t)v[0];
    *atime = (int64_t)v[2];
    return 0;
}

int scp_parse_record(const char *line, size_t len, scp_record *rec, const char **why)
{
    const char *p = line + 1, *end = line + len;
    if (len < 1 || (line[0] != 'C' && line[0] != 'D')) {
        *why = "not a file or directory record";
        return -1;
    }
    unsigned mode = 0;
    for (int i = 0; i < 4; i++, p++) {
        if (p >= end || *p < '0' || *p > '7') {
            *why = "bad mode";
            return -1;
        }
        mode = (mode << 3) | (unsigned)(*p - '0');
    }
    if (p >= end || *p++ != ' ') {
        *why = "mode not delimited";
        return -1;
    }
    if (p >= end || !is_digit(*p)) {
        *why = "size missing";
        return -1;
    }
    uint64_t size = 0;
    while (p < end && is_digit(*p)) {
        if (size > (uint64_t)INT64_MAX / 10) {
            *why = "size out of range";
            return -1;
        }
        size = size * 10 + (uint64_t)(*p++ - '0');
    }
    if (size > (uint64_t)INT64_MAX) {
        *why = "size out of range";
        return -1;
    }
    if (p >= end || *p++ != ' ') {
        *why = "size not delimited";
        return -1;
    }
    rec->is_dir = line[0] == 'D';
    rec->mode = mode;
    rec->size = size;
    rec->name = p;
    rec->name_len = (size_t)(end - p);
    if (!sc_name_ok(rec->name, rec->name_len)) {
        *why = "unsafe name";
        return -1;
    }
    return 0;
}
