/* fuzz_socks5.c - a SOCKS5 client's greeting and request (core/socks5.c) on any bytes. */
#include <stdint.h>
#include <string.h>

#include "../../core/socks5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t used = 0;
    int noauth;
    if (socks5_parse_greeting(data, size, &used, &noauth) != SOCKS5_OK)
        return 0;
    if (used > size)
        __builtin_trap();
    char dest[256];
    int port, rep;
    size_t used2 = 0;
    if (socks5_parse_request(data + used, size - used, &used2, dest, sizeof dest, &port, &rep) ==
        SOCKS5_OK) {
        if (used2 > size - used || port < 0 || port > 65535 || strlen(dest) == 0 ||
            strlen(dest) > 255)
            __builtin_trap();
    }
    return 0;
}
