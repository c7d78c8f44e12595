/* OpenSSL EVP backend: portable, and the only one allowed in FIPS mode.
 * One EVP_CIPHER_CTX per worker; the key is set once and only the IV is re-set per
 * module (re-fetching the cipher or re-keying per module costs 3-4x at small sizes). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "internal.h"

static const EVP_CIPHER *gcm_cipher(int len)
{
    switch (len) {
    case 16: return EVP_aes_128_gcm();
    case 24: return EVP_aes_192_gcm();
    default: return EVP_aes_256_gcm();
    }
}

static const EVP_CIPHER *ctr_cipher(int len)
{
    switch (len) {
    case 16: return EVP_aes_128_ctr();
    case 24: return EVP_aes_192_ctr();
    default: return EVP_aes_256_ctr();
    }
}

/* EVP takes int lengths; feed large inputs in slices. */
#define SLICE (1 << 30)

static int update(EVP_CIPHER_CTX *ctx, int enc, uint8_t *out, const uint8_t *in, uint64_t len)
{
    int outl;
    while (len) {
        int n = len > SLICE ? SLICE : (int)len;
        if ((enc ? EVP_EncryptUpdate(ctx, out, &outl, in, n) : EVP_DecryptUpdate(ctx, out, &outl, in, n)) != 1)
            return 0;
        out += n; in += n; len -= (uint64_t)n;
    }
    return 1;
}

void pq_openssl_run(pq_work *w)
{
    pq_batch *b = w->b;
    int gcm = b->algorithm == PQ_ALG_GCM;
    int enc = w->encrypt;
    uint64_t hdr = pq_header(b);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    uint8_t aadbuf[256];
    uint8_t *aad = aadbuf;
    if (b->aad_len + PQ_MODULE_AAD_SUFFIX > sizeof aadbuf) aad = malloc(b->aad_len + PQ_MODULE_AAD_SUFFIX);
    if (!ctx || !aad) {
        pq_fail_at(w, PQ_ERR_INTERNAL, w->lo);
        goto done;
    }
    if (b->aad_len) memcpy(aad, b->aad, b->aad_len);

    const pq_key *cur = NULL;
    size_t lo, hi;
    while (pq_next_range(w, &lo, &hi)) {
    for (size_t i = lo; i < hi; i++) {
        if (pq_should_stop(w, i)) goto done;
        const pq_key *k = b->keys[pq_kidx(b, i)];
        const uint8_t *src = pq_src(b, i);
        uint8_t *dst = pq_dst(b, i);
        uint64_t ptlen = enc ? b->src_len[i] : b->src_len[i] - pq_overhead(b);
        const uint8_t *nonce;
        const uint8_t *in;
        uint8_t *out;
        if (enc) {
            nonce = w->nonces + i * PQ_NONCE_LEN;
            if (b->framing == PQ_FRAME_MODULE) pq_store_le32(dst, (uint32_t)(ptlen + pq_overhead(b) - PQ_LEN_PREFIX));
            memcpy(dst + hdr - PQ_NONCE_LEN, nonce, PQ_NONCE_LEN);
            in = src;
            out = dst + hdr;
        } else {
            nonce = src + hdr - PQ_NONCE_LEN;
            in = src + hdr;
            out = dst;
        }
        int ok;
        if (gcm) {
            if (k != cur) {
                ok = enc ? EVP_EncryptInit_ex(ctx, gcm_cipher(k->len), NULL, k->raw, NULL)
                         : EVP_DecryptInit_ex(ctx, gcm_cipher(k->len), NULL, k->raw, NULL);
                if (ok != 1) goto internal;
                cur = k;
            }
            ok = enc ? EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) : EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce);
            if (ok != 1) goto internal;
            size_t alen = pq_module_aad(b, i, aad);
            int outl;
            if (alen && (enc ? EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)alen)
                             : EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)alen)) != 1)
                goto internal;
            if (!update(ctx, enc, out, in, ptlen)) goto internal;
            if (enc) {
                if (EVP_EncryptFinal_ex(ctx, out + ptlen, &outl) != 1) goto internal;
                if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PQ_TAG_LEN, out + ptlen) != 1) goto internal;
            } else {
                if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, PQ_TAG_LEN, (void *)(in + ptlen)) != 1)
                    goto internal;
                if (EVP_DecryptFinal_ex(ctx, out + ptlen, &outl) != 1) {
                    pq_fail_at(w, PQ_ERR_TAG, i);
                    goto done;
                }
            }
        } else {
            uint8_t iv[16];
            memcpy(iv, nonce, PQ_NONCE_LEN);
            iv[12] = 0; iv[13] = 0; iv[14] = 0; iv[15] = 1;
            /* CTR is its own inverse: always run the cipher in the encrypt direction */
            if (k != cur) {
                if (EVP_EncryptInit_ex(ctx, ctr_cipher(k->len), NULL, k->raw, iv) != 1) goto internal;
                cur = k;
            } else if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) {
                goto internal;
            }
            if (!update(ctx, 1, out, in, ptlen)) goto internal;
        }
        continue;
    internal:
        pq_fail_at(w, PQ_ERR_INTERNAL, i);
        goto done;
    }
    }
done:
    if (aad != aadbuf) free(aad);
    EVP_CIPHER_CTX_free(ctx); /* frees and cleanses the key schedule */
}
