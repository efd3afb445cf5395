/* sftp_wire.c - the SFTP v3 codec (see sftp_wire.h): pure functions on buffers. */
#include "sftp_wire.h"

#include <stdio.h>
#include <string.h>

/* ---- encoding ---- */

void sftp_put_u8(sc_buf *b, uint8_t v) { sc_buf_append(b, &v, 1); }

void sftp_put_u32(sc_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    sc_buf_append(b, p, 4);
}

void sftp_put_u64(sc_buf *b, uint64_t v)
{
    sftp_put_u32(b, (uint32_t)(v >> 32));
    sftp_put_u32(b, (uint32_t)v);
}

void sftp_put_str(sc_buf *b, const void *s, size_t n)
{
    sftp_put_u32(b, (uint32_t)n);
    sc_buf_append(b, s, n);
}

void sftp_put_attrs(sc_buf *b, const sattrs *a)
{
    sftp_put_u32(b, a->flags);
    if (a->flags & ATTR_SIZE)
        sftp_put_u64(b, a->size);
    if (a->flags & ATTR_PERMISSIONS)
        sftp_put_u32(b, a->perm);
    if (a->flags & ATTR_ACMODTIME) {
        sftp_put_u32(b, a->atime);
        sftp_put_u32(b, a->mtime);
    }
}

/* ---- decoding ---- */

uint32_t sftp_get_u32(sftp_cursor *c)
{
    if (c->left < 4) {
        c->bad = 1;
        c->left = 0;
        return 0;
    }
    uint32_t v =
        (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 | c->p[3];
    c->p += 4;
    c->left -= 4;
    return v;
}

uint64_t sftp_get_u64(sftp_cursor *c)
{
    uint64_t hi = sftp_get_u32(c);
    return hi << 32 | sftp_get_u32(c);
}

const uint8_t *sftp_get_str(sftp_cursor *c, size_t *n)
{
    uint32_t len = sftp_get_u32(c);
    if (c->bad || len > c->left) {
        c->bad = 1;
        c->left = 0;
        *n = 0;
        return (const uint8_t *)"";
    }
    const uint8_t *s = c->p;
    c->p += len;
    c->left -= len;
    *n = len;
    return s;
}

void sftp_get_attrs(sftp_cursor *c, sattrs *a)
{
    memset(a, 0, sizeof *a);
    a->flags = sftp_get_u32(c);
    if (a->flags & ATTR_SIZE)
        a->size = sftp_get_u64(c);
    if (a->flags & ATTR_UIDGID) {
        sftp_get_u32(c);
        sftp_get_u32(c);
    }
    if (a->flags & ATTR_PERMISSIONS)
        a->perm = sftp_get_u32(c);
    if (a->flags & ATTR_ACMODTIME) {
        a->atime = sftp_get_u32(c);
        a->mtime = sftp_get_u32(c);
    }
    if (a->flags & ATTR_EXTENDED) {
        uint32_t n = sftp_get_u32(c);
        for (uint32_t i = 0; i < n && !c->bad; i++) {
            size_t l;
            sftp_get_str(c, &l);
            sftp_get_str(c, &l);
        }
    }
}

/* ---- packets ---- */

int sftp_packet_length(const uint8_t *p, size_t avail, uint32_t *n)
{
    if (avail < 4)
        return 0;
    *n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return *n == 0 || *n > SFTP_MAX_PACKET ? -1 : 1;
}

int sftp_parse_version(const uint8_t *p, size_t n, uint32_t *version, int *exts)
{
    sftp_cursor c = {p, n, 0};
    *version = sftp_get_u32(&c);
    *exts = 0;
    while (!c.bad && c.left > 0) {
        size_t nl, dl;
        const uint8_t *name = sftp_get_str(&c, &nl);
        sftp_get_str(&c, &dl);
        if (c.bad)
            break;
        if (nl == 24 && memcmp(name, "posix-rename@openssh.com", 24) == 0)
            *exts |= SFTP_EXT_POSIX_RENAME;
        if (nl == 18 && memcmp(name, "limits@openssh.com", 18) == 0)
            *exts |= SFTP_EXT_LIMITS;
    }
    return c.bad ? -1 : 0;
}

int sftp_parse_limits(const uint8_t *p, size_t n, uint64_t *max_read, uint64_t *max_write)
{
    sftp_cursor c = {p, n, 0};
    sftp_get_u64(&c); /* the largest packet */
    *max_read = sftp_get_u64(&c);
    *max_write = sftp_get_u64(&c);
    sftp_get_u64(&c); /* open handles */
    return c.bad ? -1 : 0;
}

const char *sftp_status_text(uint32_t code)
{
    switch (code) {
    case FX_OK:
        return "ok";
    case FX_EOF:
        return "end of file";
    case FX_NO_SUCH_FILE:
        return "No such file or directory";
    case FX_PERMISSION_DENIED:
        return "Permission denied";
    case FX_FAILURE:
        return "failure";
    case FX_BAD_MESSAGE:
        return "bad message";
    case FX_NO_CONNECTION:
        return "no connection";
    case FX_CONNECTION_LOST:
        return "connection lost";
    case FX_OP_UNSUPPORTED:
        return "operation unsupported";
    default:
        return "error";
    }
}

int sftp_parse_status(const uint8_t *p, size_t n, uint32_t *code, char *msg, size_t msglen)
{
    sftp_cursor c = {p, n, 0};
    *code = sftp_get_u32(&c);
    if (c.bad)
        return -1;
    size_t ml;
    const uint8_t *m = sftp_get_str(&c, &ml); /* optional in practice: servers omit it */
    char raw[256];
    if (c.bad)
        ml = 0;
    if (ml >= sizeof raw)
        ml = sizeof raw - 1;
    memcpy(raw, m, ml);
    raw[ml] = '\0';
    if (msglen == 0)
        return 0;
    sc_sanitize(msg, msglen, raw);
    if (msglen > 0 && !msg[0])
        snprintf(msg, msglen, "%s", sftp_status_text(*code));
    return 0;
}

int sftp_parse_handle(const uint8_t *p, size_t n, const uint8_t **h, size_t *hlen)
{
    sftp_cursor c = {p, n, 0};
    *h = sftp_get_str(&c, hlen);
    return c.bad || *hlen == 0 || *hlen > 256 ? -1 : 0;
}

int sftp_parse_data(const uint8_t *p, size_t n, uint32_t want, const uint8_t **d, size_t *dl)
{
    sftp_cursor c = {p, n, 0};
    *d = sftp_get_str(&c, dl);
    return c.bad || *dl > want || *dl == 0 ? -1 : 0;
}

int sftp_parse_name_count(sftp_cursor *c, uint32_t *count)
{
    *count = sftp_get_u32(c);
    return c->bad || *count > 100000 ? -1 : 0;
}

int sftp_parse_name(sftp_cursor *c, const uint8_t **name, size_t *nlen, sattrs *a)
{
    size_t ll;
    *name = sftp_get_str(c, nlen);
    sftp_get_str(c, &ll); /* the longname, for people */
    sftp_get_attrs(c, a);
    return c->bad ? -1 : 0;
}
