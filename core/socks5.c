/* socks5.c - the SOCKS5 client handshake, parsed (see socks5.h). */
#include "socks5.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

socks5_result socks5_parse_greeting(const uint8_t *b, size_t len, size_t *used, int *noauth)
{
    if (len < 2)
        return SOCKS5_MORE;
    if (b[0] != 5)
        return SOCKS5_BAD;
    size_t need = 2 + (size_t)b[1];
    if (len < need)
        return SOCKS5_MORE;
    *noauth = 0;
    for (size_t i = 2; i < need; i++)
        *noauth |= b[i] == 0;
    *used = need;
    return SOCKS5_OK;
}

socks5_result socks5_parse_request(const uint8_t *b, size_t len, size_t *used, char *dest,
                                   size_t destlen, int *port, int *rep)
{
    *rep = 0xff;
    if (len < 5)
        return SOCKS5_MORE;
    if (b[0] != 5)
        return SOCKS5_BAD;
    if (b[1] != 1) {
        *rep = SOCKS5_REP_COMMAND; /* only CONNECT */
        return SOCKS5_BAD;
    }
    size_t need;
    uint8_t atyp = b[3];
    if (atyp == 1)
        need = 4 + 4 + 2;
    else if (atyp == 4)
        need = 4 + 16 + 2;
    else if (atyp == 3)
        need = 5 + (size_t)b[4] + 2;
    else {
        *rep = SOCKS5_REP_ADDRESS;
        return SOCKS5_BAD;
    }
    if (len < need)
        return SOCKS5_MORE;
    if (destlen < 256) {
        *rep = SOCKS5_REP_FAILURE;
        return SOCKS5_BAD;
    }
    if (atyp == 1) {
        inet_ntop(AF_INET, b + 4, dest, (socklen_t)destlen);
    } else if (atyp == 4) {
        inet_ntop(AF_INET6, b + 4, dest, (socklen_t)destlen);
    } else {
        size_t n = b[4];
        if (n == 0 || memchr(b + 5, '\0', n)) {
            *rep = SOCKS5_REP_FAILURE;
            return SOCKS5_BAD;
        }
        memcpy(dest, b + 5, n);
        dest[n] = '\0';
    }
    *port = (b[need - 2] << 8) | b[need - 1];
    *used = need;
    return SOCKS5_OK;
}
