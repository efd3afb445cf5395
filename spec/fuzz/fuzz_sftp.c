/* fuzz_sftp.c - the SFTP v3 decoders (core/sftp_wire.c) on any reply: the first byte picks the
 * decoder, as the reply's type would. */
#include <stdint.h>
#include <string.h>

#include "../../core/sftp_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    uint32_t u32;
    uint64_t u64;
    int flag;
    char msg[160];
    const uint8_t *s;
    size_t sl;
    sattrs a;
    sftp_cursor c = {p, n, 0};
    switch (data[0] % 8) {
    case 0:
        if (sftp_packet_length(p, n, &u32) == 1 && (u32 == 0 || u32 > SFTP_MAX_PACKET))
            __builtin_trap();
        break;
    case 1:
        sftp_parse_version(p, n, &u32, &flag);
        break;
    case 2:
        if (sftp_parse_status(p, n, &u32, msg, sizeof msg) == 0 && strlen(msg) >= sizeof msg)
            __builtin_trap();
        break;
    case 3:
        if (sftp_parse_handle(p, n, &s, &sl) == 0 && (sl == 0 || sl > 256 || s + sl > p + n))
            __builtin_trap();
        break;
    case 4:
        if (sftp_parse_data(p, n, 65536, &s, &sl) == 0 && (sl > 65536 || s + sl > p + n))
            __builtin_trap();
        break;
    case 6:
        if (sftp_parse_limits(p, n, &u64, &u64) == 0 && n < 32)
            __builtin_trap();
        break;
    case 5:
        if (sftp_parse_name_count(&c, &u32) == 0) {
            for (uint32_t i = 0; i < u32; i++) {
                if (sftp_parse_name(&c, &s, &sl, &a) < 0)
                    break;
                if (s + sl > p + n)
                    __builtin_trap();
            }
        }
        break;
    default:
        sftp_get_attrs(&c, &a);
        if (c.left > n)
            __builtin_trap();
        break;
    }
    return 0;
}
