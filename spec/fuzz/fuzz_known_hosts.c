/* fuzz_known_hosts.c - known_hosts lines and host matching (core/known_hosts.c) on any line. */
#include <stdint.h>
#include <string.h>

#include "../../core/known_hosts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    kh_line l;
    if (kh_parse_line(line, size, &l) != 1)
        return 0;
    if (l.hosts < line || l.hosts + l.hosts_len > line + size || l.key + l.key_len > line + size)
        __builtin_trap();
    static const char *const names[] = {"10.0.0.1", "[10.0.0.1]:2222", "host.example", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int m = kh_host_matches(&l, names[i]);
        if (m < -1 || m > 1)
            __builtin_trap();
    }
    return 0;
}
