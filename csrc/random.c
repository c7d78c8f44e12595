/* Random bytes from OpenSSL's DRBG: the one source of every key, key id, salt, file
 * AAD and nonce pqseal makes (nonces are drawn in the batch driver, core.c). In FIPS
 * mode this is the FIPS provider's DRBG. */
#include <openssl/err.h>
#include <openssl/rand.h>

#include "internal.h"

/* RAND_bytes takes an int length: draw large requests in slices. */
#define RAND_SLICE (1 << 30)

int pq_random_bytes(uint8_t *out, size_t n)
{
    int st = pq_init();
    if (st != PQ_OK) return st;
    ERR_clear_error(); /* so that pq_openssl_error() reports this failure only */
    while (n) {
        int chunk = n > RAND_SLICE ? RAND_SLICE : (int)n;
        if (RAND_bytes(out, chunk) != 1) return PQ_ERR_RNG;
        out += chunk;
        n -= (size_t)chunk;
    }
    return PQ_OK;
}

size_t pq_openssl_error(char *buf, size_t cap)
{
    size_t used = 0;
    unsigned long e, prev = 0;
    if (!buf || !cap) return 0;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        /* drain the whole queue; repeats and what does not fit are left out */
        if (e == prev || used + 3 >= cap) continue;
        prev = e;
        if (used) {
            buf[used++] = ';';
            buf[used++] = ' ';
        }
        ERR_error_string_n(e, buf + used, cap - used);
        while (used < cap - 1 && buf[used]) used++;
    }
    return used;
}
