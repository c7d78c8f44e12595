/* Walking length-prefixed PME modules (4-byte little-endian length, then that many bytes). */
#include <stddef.h>
#include <stdint.h>

#include "pqio.h"

int64_t pq_walk_modules(const uint8_t *buf, uint64_t start, uint64_t end, uint64_t *offs, uint64_t *lens,
                        uint64_t cap, uint64_t *next)
{
    uint64_t pos = start, n = 0;
    if (!buf || !offs || !lens || !next || start > end)
        return -1;
    while (pos < end && n < cap) {
        if (end - pos < 4)
            return -1;
        uint64_t len = (uint64_t)buf[pos] | (uint64_t)buf[pos + 1] << 8 | (uint64_t)buf[pos + 2] << 16 |
                       (uint64_t)buf[pos + 3] << 24;
        len += 4;
        if (len > end - pos)
            return -1;
        offs[n] = pos;
        lens[n] = len;
        n++;
        pos += len;
    }
    *next = pos;
    return (int64_t)n;
}
