/* intel-ipsec-mb backend: VAES/VPCLMULQDQ (AVX-512) GCM and CTR where the CPU has them.
 * Managers (IMB_MGR) are never shared between threads: a worker takes one from a
 * small pool for the length of its slice. Key schedules are precomputed per key. */
#ifdef PQ_HAVE_IPSECMB
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "internal.h"

#define POOL_MAX 64
static IMB_MGR *pool[POOL_MAX];
static int pool_n;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static IMB_ARCH chosen_arch = IMB_ARCH_NONE;
static uint64_t features;

static IMB_MGR *new_mgr(void)
{
    IMB_MGR *m = alloc_mb_mgr(0);
    if (!m) return NULL;
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(m, &arch);
    if (arch == IMB_ARCH_NONE || imb_get_errno(m) != 0) {
        free_mb_mgr(m);
        return NULL;
    }
    chosen_arch = arch;
    features = m->features;
    return m;
}

static IMB_MGR *take_mgr(void)
{
    IMB_MGR *m = NULL;
    pthread_mutex_lock(&pool_lock);
    if (pool_n) m = pool[--pool_n];
    pthread_mutex_unlock(&pool_lock);
    return m ? m : new_mgr();
}

static void give_mgr(IMB_MGR *m)
{
    pthread_mutex_lock(&pool_lock);
    if (pool_n < POOL_MAX) {
        pool[pool_n++] = m;
        m = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    if (m) free_mb_mgr(m);
}

/* After fork() the pool lock may be held by a thread that no longer exists. */
static void after_fork_child(void) { pthread_mutex_init(&pool_lock, NULL); }

int pq_ipsecmb_init(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
    IMB_MGR *m = new_mgr();
    if (!m) return PQ_ERR_BACKEND;
    /* Only worth it (and only tested) on the AES-NI paths. */
    if (chosen_arch < IMB_ARCH_SSE) {
        free_mb_mgr(m);
        chosen_arch = IMB_ARCH_NONE;
        return PQ_ERR_BACKEND;
    }
    give_mgr(m);
    return PQ_OK;
}

const char *pq_ipsecmb_version(void) { return imb_get_version_str(); }

const char *pq_ipsecmb_arch(void)
{
    switch (chosen_arch) {
    case IMB_ARCH_SSE: return "sse";
    case IMB_ARCH_AVX: return "avx";
    case IMB_ARCH_AVX2: return "avx2";
    case IMB_ARCH_AVX512: return "avx512";
    default: return "";
    }
}

uint64_t pq_ipsecmb_features(void) { return features; }

int pq_ipsecmb_key_init(pq_key *k)
{
    IMB_MGR *m = take_mgr();
    if (!m) return PQ_ERR_BACKEND;
    switch (k->len) {
    case 16:
        IMB_AES128_GCM_PRE(m, k->raw, &k->imb_gcm);
        IMB_AES_KEYEXP_128(m, k->raw, k->imb_enc, k->imb_dec);
        break;
    case 24:
        IMB_AES192_GCM_PRE(m, k->raw, &k->imb_gcm);
        IMB_AES_KEYEXP_192(m, k->raw, k->imb_enc, k->imb_dec);
        break;
    default:
        IMB_AES256_GCM_PRE(m, k->raw, &k->imb_gcm);
        IMB_AES_KEYEXP_256(m, k->raw, k->imb_enc, k->imb_dec);
        break;
    }
    give_mgr(m);
    return PQ_OK;
}

/* Large modules go through the init/update/finalize API in pieces, prefetching the next
 * piece while the current one is processed: a module read from memory (not cache), as
 * pages of a file are, otherwise runs at the memory's latency-bound rate, well below the
 * cipher's. */
#ifndef PQ_GCM_PIECE
#define PQ_GCM_PIECE (4 * 1024)
#endif
#ifndef PQ_GCM_PIECE_MIN
#define PQ_GCM_PIECE_MIN (16 * 1024)
#endif
#ifndef PQ_PF_LOCALITY
#define PQ_PF_LOCALITY 3
#endif

static inline void prefetch_range(const uint8_t *p, uint64_t n)
{
    for (uint64_t o = 0; o < n; o += 64)
        __builtin_prefetch(p + o, 0, PQ_PF_LOCALITY);
}

static void gcm_pieces(IMB_MGR *m, const pq_key *k, struct gcm_context_data *ctx, int enc, uint8_t *out,
                       const uint8_t *in, uint64_t len, const uint8_t *iv, const uint8_t *aad, uint64_t alen,
                       uint8_t *tag)
{
    /* the manager's entry points for this key size (what the IMB_AES*_GCM_* macros call) */
    aes_gcm_init_t init;
    aes_gcm_enc_dec_update_t update;
    aes_gcm_enc_dec_finalize_t finalize;
    switch (k->len) {
    case 16:
        init = m->gcm128_init;
        update = enc ? m->gcm128_enc_update : m->gcm128_dec_update;
        finalize = enc ? m->gcm128_enc_finalize : m->gcm128_dec_finalize;
        break;
    case 24:
        init = m->gcm192_init;
        update = enc ? m->gcm192_enc_update : m->gcm192_dec_update;
        finalize = enc ? m->gcm192_enc_finalize : m->gcm192_dec_finalize;
        break;
    default:
        init = m->gcm256_init;
        update = enc ? m->gcm256_enc_update : m->gcm256_dec_update;
        finalize = enc ? m->gcm256_enc_finalize : m->gcm256_dec_finalize;
        break;
    }
    init(&k->imb_gcm, ctx, iv, aad, alen);
    prefetch_range(in, len < PQ_GCM_PIECE ? len : PQ_GCM_PIECE);
    for (uint64_t o = 0; o < len; o += PQ_GCM_PIECE) {
        uint64_t n = len - o < PQ_GCM_PIECE ? len - o : PQ_GCM_PIECE;
        uint64_t ahead = o + n;
        if (ahead < len)
            prefetch_range(in + ahead, len - ahead < PQ_GCM_PIECE ? len - ahead : PQ_GCM_PIECE);
        update(&k->imb_gcm, ctx, out + o, in + o, n);
    }
    finalize(&k->imb_gcm, ctx, tag, PQ_TAG_LEN);
}

static void gcm_one(IMB_MGR *m, const pq_key *k, struct gcm_context_data *ctxp, int enc, uint8_t *out,
                    const uint8_t *in, uint64_t len, const uint8_t *iv, const uint8_t *aad, uint64_t alen,
                    uint8_t *tag)
{
    if (len >= PQ_GCM_PIECE_MIN) {
        gcm_pieces(m, k, ctxp, enc, out, in, len, iv, aad, alen, tag);
        return;
    }
#define ctx (*ctxp)
    if (enc) {
        switch (k->len) {
        case 16: IMB_AES128_GCM_ENC(m, &k->imb_gcm, &ctx, out, in, len, iv, aad, alen, tag, PQ_TAG_LEN); break;
        case 24: IMB_AES192_GCM_ENC(m, &k->imb_gcm, &ctx, out, in, len, iv, aad, alen, tag, PQ_TAG_LEN); break;
        default: IMB_AES256_GCM_ENC(m, &k->imb_gcm, &ctx, out, in, len, iv, aad, alen, tag, PQ_TAG_LEN); break;
        }
    } else {
        switch (k->len) {
        case 16: IMB_AES128_GCM_DEC(m, &k->imb_gcm, &ctx, out, in, len, iv, aad, alen, tag, PQ_TAG_LEN); break;
        case 24: IMB_AES192_GCM_DEC(m, &k->imb_gcm, &ctx, out, in, len, iv, aad, alen, tag, PQ_TAG_LEN); break;
        default: IMB_AES256_GCM_DEC(m, &k->imb_gcm, &ctx, out, in, len, iv, aad, alen, tag, PQ_TAG_LEN); break;
        }
    }
#undef ctx
}

/* CTR through the job API, several jobs in flight (multi-buffer): much faster than
 * one job at a time. IV buffers live until the chunk is flushed. */
#define CTR_CHUNK 16

static int ctr_chunk(IMB_MGR *m, pq_work *w, size_t lo, size_t hi)
{
    pq_batch *b = w->b;
    uint8_t ivs[CTR_CHUNK][16];
    uint64_t hdr = pq_header(b);
    int bad = 0;
    for (size_t i = lo; i < hi; i++) {
        const pq_key *k = b->keys[pq_kidx(b, i)];
        const uint8_t *nonce, *in;
        uint8_t *out;
        uint64_t len;
        if (w->encrypt) {
            len = b->src_len[i];
            nonce = w->nonces + i * PQ_NONCE_LEN;
            pq_store_le32(pq_dst(b, i), (uint32_t)(len + PQ_NONCE_LEN));
            memcpy(pq_dst(b, i) + PQ_LEN_PREFIX, nonce, PQ_NONCE_LEN);
            in = pq_src(b, i);
            out = pq_dst(b, i) + hdr;
        } else {
            len = b->src_len[i] - hdr;
            nonce = pq_src(b, i) + PQ_LEN_PREFIX;
            in = pq_src(b, i) + hdr;
            out = pq_dst(b, i);
        }
        if (len == 0) continue;
        uint8_t *iv = ivs[i - lo];
        memcpy(iv, nonce, PQ_NONCE_LEN);
        iv[12] = 0; iv[13] = 0; iv[14] = 0; iv[15] = 1;
        IMB_JOB *j = IMB_GET_NEXT_JOB(m);
        j->cipher_direction = IMB_DIR_ENCRYPT;
        j->chain_order = IMB_ORDER_CIPHER_HASH;
        j->cipher_mode = IMB_CIPHER_CNTR;
        j->hash_alg = IMB_AUTH_NULL;
        j->enc_keys = k->imb_enc;
        j->dec_keys = k->imb_enc;
        j->key_len_in_bytes = (uint64_t)k->len;
        j->src = in;
        j->dst = out;
        j->cipher_start_src_offset_in_bytes = 0;
        j->msg_len_to_cipher_in_bytes = len;
        j->iv = iv;
        j->iv_len_in_bytes = 16;
        j = IMB_SUBMIT_JOB(m);
        if (j && j->status != IMB_STATUS_COMPLETED_CIPHER && j->status != IMB_STATUS_COMPLETED) bad = 1;
    }
    IMB_JOB *j;
    while ((j = IMB_FLUSH_JOB(m)) != NULL)
        if (j->status != IMB_STATUS_COMPLETED_CIPHER && j->status != IMB_STATUS_COMPLETED) bad = 1;
    return bad ? PQ_ERR_INTERNAL : PQ_OK;
}

void pq_ipsecmb_run(pq_work *w)
{
    pq_batch *b = w->b;
    IMB_MGR *m = take_mgr();
    if (!m) {
        pq_fail_at(w, PQ_ERR_BACKEND, w->lo);
        return;
    }
    if (b->algorithm == PQ_ALG_CTR) {
        size_t rlo, rhi;
        while (pq_next_range(w, &rlo, &rhi)) {
            for (size_t lo = rlo; lo < rhi; lo += CTR_CHUNK) {
                size_t hi = lo + CTR_CHUNK < rhi ? lo + CTR_CHUNK : rhi;
                if (ctr_chunk(m, w, lo, hi) != PQ_OK) {
                    pq_fail_at(w, PQ_ERR_INTERNAL, lo);
                    give_mgr(m);
                    return;
                }
            }
        }
        give_mgr(m);
        return;
    }

    uint8_t aadbuf[256];
    uint8_t *aad = aadbuf;
    if (b->aad_len + PQ_MODULE_AAD_SUFFIX > sizeof aadbuf) aad = malloc(b->aad_len + PQ_MODULE_AAD_SUFFIX);
    if (!aad) {
        give_mgr(m);
        pq_fail_at(w, PQ_ERR_INTERNAL, w->lo);
        return;
    }
    if (b->aad_len) memcpy(aad, b->aad, b->aad_len);
    uint64_t hdr = pq_header(b);
    uint64_t ov = pq_overhead(b);
    struct gcm_context_data ctx; /* per-message state (no key material); wiped once at the end */
    size_t rlo, rhi;
    while (pq_next_range(w, &rlo, &rhi)) {
    for (size_t i = rlo; i < rhi; i++) {
        if (pq_should_stop(w, i)) goto out;
        const pq_key *k = b->keys[pq_kidx(b, i)];
        size_t alen = pq_module_aad(b, i, aad);
        if (w->encrypt) {
            uint64_t len = b->src_len[i];
            uint8_t *dst = pq_dst(b, i);
            const uint8_t *nonce = w->nonces + i * PQ_NONCE_LEN;
            if (b->framing == PQ_FRAME_MODULE) pq_store_le32(dst, (uint32_t)(len + ov - PQ_LEN_PREFIX));
            memcpy(dst + hdr - PQ_NONCE_LEN, nonce, PQ_NONCE_LEN);
            gcm_one(m, k, &ctx, 1, dst + hdr, pq_src(b, i), len, nonce, aad, alen, dst + hdr + len);
        } else {
            const uint8_t *src = pq_src(b, i);
            uint64_t len = b->src_len[i] - ov;
            uint8_t tag[PQ_TAG_LEN];
            gcm_one(m, k, &ctx, 0, pq_dst(b, i), src + hdr, len, src + hdr - PQ_NONCE_LEN, aad, alen, tag);
            if (CRYPTO_memcmp(tag, src + hdr + len, PQ_TAG_LEN) != 0) {
                pq_fail_at(w, PQ_ERR_TAG, i);
                goto out;
            }
        }
    }
    }
out:
    OPENSSL_cleanse(&ctx, sizeof ctx);
    if (aad != aadbuf) free(aad);
    give_mgr(m);
}
#endif
