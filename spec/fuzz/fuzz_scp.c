/* fuzz_scp.c - SCP records and times (core/scp_wire.c) on any line. */
#include <stdint.h>
#include <string.h>

#include "../../core/scp_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    int64_t mt, at;
    if (scp_parse_times(line, size, &mt, &at) == 0 && (mt < 0 || at < 0))
        __builtin_trap();
    scp_record rec;
    const char *why = NULL;
    if (scp_parse_record(line, size, &rec, &why) == 0) {
        /* what the parser accepts must be safe to create below a directory */
        if (rec.name < line || rec.name + rec.name_len != line + size || rec.name_len == 0 ||
            memchr(rec.name, '/', rec.name_len) || memchr(rec.name, 0, rec.name_len) ||
            rec.mode > 07777)
            __builtin_trap();
    } else if (!why) {
        __builtin_trap();
    }
    return 0;
}
