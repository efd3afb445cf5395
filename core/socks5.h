/* socks5.h - the SOCKS5 handshake a client sends (RFC 1928: no authentication, CONNECT), parsed
 * from a buffer alone (spec/fuzz feed it anything). */
#ifndef SC_SOCKS5_H
#define SC_SOCKS5_H

#include <stddef.h>
#include <stdint.h>

typedef enum { SOCKS5_MORE = 0, SOCKS5_OK = 1, SOCKS5_BAD = -1 } socks5_result;

/* Reply codes (RFC 1928 section 6). */
enum {
    SOCKS5_REP_OK = 0,
    SOCKS5_REP_FAILURE = 1,
    SOCKS5_REP_REFUSED = 5,
    SOCKS5_REP_COMMAND = 7,
    SOCKS5_REP_ADDRESS = 8,
};

/* The greeting (VER NMETHODS METHODS...): SOCKS5_OK with *used bytes and whether "no
 * authentication" is offered; SOCKS5_MORE; SOCKS5_BAD (not version 5). */
socks5_result socks5_parse_greeting(const uint8_t *b, size_t len, size_t *used, int *noauth);

/* The request (VER CMD RSV ATYP DST.ADDR DST.PORT): SOCKS5_OK with the destination (an IPv4 or
 * IPv6 address as text, or a name of 1..255 bytes without NUL), its port and *used bytes (what
 * follows is the client's first data); SOCKS5_MORE; SOCKS5_BAD with *rep the reply code to send
 * (0xff: none, just close). */
socks5_result socks5_parse_request(const uint8_t *b, size_t len, size_t *used, char *dest,
                                   size_t destlen, int *port, int *rep);

#endif
