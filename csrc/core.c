/* Batch driver: validation, nonces, invocation counting, thread split, failure
 * handling. The cipher work itself lives in backend_openssl.c / backend_ipsecmb.c. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "internal.h"

/* Which ordinals each module type carries in its AAD (spec: PME §4.4.2):
 * 0 footer: none; 2 data page, 4 data page header: rg, col, page; others: rg, col. */
static int ordinal_count(uint8_t mtype)
{
    if (mtype == 0) return 0;
    if (mtype == 2 || mtype == 4) return 3;
    return 2;
}

size_t pq_module_aad(const pq_batch *b, size_t i, uint8_t *buf)
{
    if (b->aad_mode == PQ_AAD_FIXED) return b->aad_len;
    uint8_t t = pq_mtype(b, i);
    uint8_t *p = buf + b->aad_len;
    int nord = ordinal_count(t);
    *p++ = t;
    if (nord >= 2) {
        int32_t rg = b->rg ? b->rg[i] : b->rg0;
        int32_t col = b->col ? b->col[i] : b->col0;
        *p++ = (uint8_t)rg; *p++ = (uint8_t)(rg >> 8);
        *p++ = (uint8_t)col; *p++ = (uint8_t)(col >> 8);
    }
    if (nord == 3) {
        int32_t pg = b->page ? b->page[i] : b->page0;
        *p++ = (uint8_t)pg; *p++ = (uint8_t)(pg >> 8);
    }
    return (size_t)(p - buf);
}

#ifdef PQ_HAVE_IPSECMB
static int ipsecmb_ok;
#endif
static int init_status = PQ_ERR_INTERNAL;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void do_init(void)
{
    pq_pool_init();
    pq_counters_init();
#ifdef PQ_HAVE_IPSECMB
    ipsecmb_ok = pq_ipsecmb_init() == PQ_OK;
#endif
    pq_fips_check_config();
    init_status = PQ_OK;
}

int pq_init(void)
{
    pthread_once(&init_once, do_init);
    if (init_status != PQ_OK) return init_status;
    return pq_fips_reason() == PQ_FIPS_OK ? PQ_OK : PQ_ERR_FIPS;
}

int pq_backend_available(int backend)
{
    pq_init();
    if (backend == PQ_BACKEND_OPENSSL) return 1;
#ifdef PQ_HAVE_IPSECMB
    /* intel-ipsec-mb is no FIPS module: refused whenever FIPS mode is on or asked for */
    if (backend == PQ_BACKEND_IPSECMB) return ipsecmb_ok && !pq_fips_enabled() && pq_fips_reason() == PQ_FIPS_OK;
#endif
    return 0;
}

#ifndef PQ_HAVE_IPSECMB
const char *pq_ipsecmb_version(void) { return ""; }
const char *pq_ipsecmb_arch(void) { return ""; }
uint64_t pq_ipsecmb_features(void) { return 0; }
#endif

const char *pq_openssl_version(void) { return OpenSSL_version(OPENSSL_VERSION); }
uint64_t pq_gcm_invocation_limit(void) { return PQ_INVOCATION_LIMIT; }

int pq_key_new(const uint8_t *raw, size_t len, pq_key **out)
{
    *out = NULL;
    int st = pq_init();
    if (st != PQ_OK) return st;
    if (len != 16 && len != 24 && len != 32) return PQ_ERR_ARGUMENT;
    pq_key *k = NULL;
    if (posix_memalign((void **)&k, 64, sizeof *k) != 0) return PQ_ERR_INTERNAL;
    memset(k, 0, sizeof *k);
    memcpy(k->raw, raw, len);
    k->len = (int)len;
    st = pq_counter_acquire(raw, len, &k->counter);
#ifdef PQ_HAVE_IPSECMB
    /* in FIPS mode no code outside the FIPS provider touches the key */
    if (st == PQ_OK && ipsecmb_ok && !pq_fips_enabled() && pq_ipsecmb_key_init(k) != PQ_OK) st = PQ_ERR_INTERNAL;
#endif
    if (st != PQ_OK) {
        pq_key_free(k);
        return st;
    }
    *out = k;
    return PQ_OK;
}

void pq_key_free(pq_key *k)
{
    if (!k) return;
    pq_counter_release(k->counter);
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

int pq_key_bits(const pq_key *k) { return k->len * 8; }
uint64_t pq_key_invocations(const pq_key *k) { return atomic_load(&k->counter->invocations); }
void pq_key_set_invocations(pq_key *k, uint64_t v) { atomic_store(&k->counter->invocations, v); }

static void fail(pq_batch *b, int status, size_t i, int *st)
{
    *st = status;
    b->fail_index = i;
}

/* Check everything that can be checked without the cipher, so that a batch either
 * runs whole or writes nothing. */
static int validate(pq_batch *b, int encrypt)
{
    int st = PQ_OK;
    uint64_t ov = pq_overhead(b);
    for (size_t i = 0; i < b->n; i++) {
        uint64_t sl = b->src_len[i];
        if (b->src) {
            if (b->src[i] == NULL && sl) { fail(b, PQ_ERR_ARGUMENT, i, &st); return st; }
        } else if (b->src_off[i] > b->src_size || sl > b->src_size - b->src_off[i]) {
            fail(b, PQ_ERR_ARGUMENT, i, &st); /* module outside the input buffer */
            return st;
        }
        uint64_t need;
        if (encrypt) {
            if (sl > PQ_MAX_PLAINTEXT) { fail(b, PQ_ERR_LENGTH, i, &st); return st; }
            need = sl + ov;
        } else {
            if (sl < ov) { fail(b, PQ_ERR_LENGTH, i, &st); return st; }
            if (b->framing == PQ_FRAME_MODULE && (uint64_t)pq_load_le32(pq_src(b, i)) + PQ_LEN_PREFIX != sl) {
                fail(b, PQ_ERR_LENGTH, i, &st);
                return st;
            }
            need = sl - ov;
        }
        if (b->dst_off[i] > b->dst_size || need > b->dst_size - b->dst_off[i]) {
            fail(b, PQ_ERR_SHORT_BUFFER, i, &st);
            return st;
        }
        if (pq_kidx(b, i) >= b->nkeys || b->keys[pq_kidx(b, i)] == NULL) {
            fail(b, PQ_ERR_KEY_INDEX, i, &st);
            return st;
        }
        if (b->aad_mode == PQ_AAD_MODULE && b->algorithm == PQ_ALG_GCM) {
            uint8_t t = pq_mtype(b, i);
            if (t > PQ_MAX_MODULE_TYPE) { fail(b, PQ_ERR_MODULE_TYPE, i, &st); return st; }
            int nord = ordinal_count(t);
            int32_t rg = b->rg ? b->rg[i] : b->rg0;
            int32_t col = b->col ? b->col[i] : b->col0;
            int32_t pg = b->page ? b->page[i] : b->page0;
            if (nord >= 2 && (rg < 0 || rg > PQ_MAX_ORDINAL || col < 0 || col > PQ_MAX_ORDINAL)) {
                fail(b, PQ_ERR_ORDINAL, i, &st);
                return st;
            }
            if (nord == 3 && (pg < 0 || pg > PQ_MAX_ORDINAL)) { fail(b, PQ_ERR_ORDINAL, i, &st); return st; }
        }
    }
    return st;
}

/* Reserve one invocation per module on each key (one atomic add per key of the
 * batch, on the count shared by every key object of the same bytes); all or nothing. */
static int reserve_invocations(pq_batch *b)
{
    uint64_t counts[256];
    uint64_t *cnt = counts;
    if (b->nkeys > 256) {
        cnt = calloc(b->nkeys, sizeof *cnt);
        if (!cnt) return PQ_ERR_INTERNAL;
    } else {
        memset(counts, 0, sizeof counts);
    }
    for (size_t i = 0; i < b->n; i++) cnt[pq_kidx(b, i)]++;
    uint32_t k;
    int st = PQ_OK;
    for (k = 0; k < b->nkeys; k++) {
        if (!cnt[k]) continue;
        uint64_t before = atomic_fetch_add(&b->keys[k]->counter->invocations, cnt[k]);
        if (before + cnt[k] > PQ_INVOCATION_LIMIT || before + cnt[k] < before) {
            atomic_fetch_sub(&b->keys[k]->counter->invocations, cnt[k]);
            st = PQ_ERR_LIMIT;
            break;
        }
    }
    if (st != PQ_OK) {
        /* roll back what was reserved on earlier keys */
        for (uint32_t j = 0; j < k; j++)
            if (cnt[j]) atomic_fetch_sub(&b->keys[j]->counter->invocations, cnt[j]);
        for (size_t i = 0; i < b->n; i++)
            if (pq_kidx(b, i) == k) { b->fail_index = i; break; }
    }
    if (cnt != counts) free(cnt);
    return st;
}

void pq_run_work(pq_work *w)
{
#ifdef PQ_HAVE_IPSECMB
    if (w->b->backend == PQ_BACKEND_IPSECMB) {
        pq_ipsecmb_run(w);
        return;
    }
#endif
    pq_openssl_run(w);
}
#define PQ_MIN_BYTES_PER_THREAD (64u * 1024u)

static int run_batch(pq_batch *b, int encrypt)
{
    b->fail_index = (size_t)-1;
    int st = pq_init();
    if (st != PQ_OK) return st;
    if (!pq_backend_available(b->backend)) return PQ_ERR_BACKEND;
    if ((b->algorithm != PQ_ALG_GCM && b->algorithm != PQ_ALG_CTR) ||
        (b->framing != PQ_FRAME_MODULE && b->framing != PQ_FRAME_RAW) ||
        (b->aad_mode != PQ_AAD_MODULE && b->aad_mode != PQ_AAD_FIXED) ||
        (b->algorithm == PQ_ALG_CTR && b->framing == PQ_FRAME_RAW) ||
        (b->aad_len && !b->aad) || (b->nkeys && !b->keys))
        return PQ_ERR_ARGUMENT;
    if (b->n == 0) return PQ_OK;
    if ((!b->src && (!b->src_off || (!b->src_base && b->src_size))) || !b->src_len || !b->dst_off ||
        (!b->dst_base && b->dst_size))
        return PQ_ERR_ARGUMENT;

    st = validate(b, encrypt);
    if (st != PQ_OK) return st;

    uint8_t *nonces = NULL;
    if (encrypt) {
        st = reserve_invocations(b);
        if (st != PQ_OK) return st;
        if (b->nonces) {
            nonces = (uint8_t *)b->nonces;
        } else {
            if (b->n > ((size_t)-1) / PQ_NONCE_LEN) return PQ_ERR_ARGUMENT;
            nonces = malloc(b->n * PQ_NONCE_LEN);
            if (!nonces) return PQ_ERR_INTERNAL;
            /* all nonces of the batch in one CSPRNG call */
            if (RAND_bytes(nonces, (int)(b->n * PQ_NONCE_LEN)) != 1) {
                free(nonces);
                return PQ_ERR_RNG;
            }
        }
    }

    /* Split the batch into contiguous slices of about equal bytes. */
    uint64_t total = 0;
    for (size_t i = 0; i < b->n; i++) total += b->src_len[i];
    int nt = b->threads > 1 ? b->threads : 1;
    if (nt > PQ_MAX_THREADS) nt = PQ_MAX_THREADS;
    if ((uint64_t)nt > total / PQ_MIN_BYTES_PER_THREAD) nt = (int)(total / PQ_MIN_BYTES_PER_THREAD);
    if ((size_t)nt > b->n) nt = (int)b->n;
    if (nt < 1) nt = 1;

    _Atomic size_t first_fail;
    atomic_init(&first_fail, (size_t)-1);
    pq_work works[PQ_MAX_THREADS];
    if (nt == 1) {
        works[0] = (pq_work){ .b = b, .lo = 0, .hi = b->n, .nonces = nonces, .encrypt = encrypt,
                              .status = PQ_OK, .fail_index = (size_t)-1, .first_fail = &first_fail };
        pq_run_work(&works[0]);
    } else {
        /* every participant claims ranges of `step` modules: about 8 claims per thread */
        _Atomic size_t next;
        atomic_init(&next, 0);
        size_t step = b->n / ((size_t)nt * 8);
        if (step < 1) step = 1;
        for (int t = 0; t < nt; t++)
            works[t] = (pq_work){ .b = b, .lo = 0, .hi = b->n, .nonces = nonces, .encrypt = encrypt,
                                  .status = PQ_OK, .fail_index = (size_t)-1, .first_fail = &first_fail,
                                  .claim_next = &next, .step = step };
        pq_pool_run(works, nt);
    }

    /* the failure with the lowest module index wins */
    st = PQ_OK;
    for (int t = 0; t < nt; t++) {
        if (works[t].status != PQ_OK && (st == PQ_OK || works[t].fail_index < b->fail_index)) {
            st = works[t].status;
            b->fail_index = works[t].fail_index;
        }
    }
    if (nonces && nonces != b->nonces) free(nonces);
    if (st != PQ_OK) {
        /* nothing of a failed batch may be trusted or leak: wipe every module's output */
        uint64_t ov = pq_overhead(b);
        for (size_t i = 0; i < b->n; i++) {
            uint64_t len = encrypt ? b->src_len[i] + ov : b->src_len[i] - ov;
            if (len) OPENSSL_cleanse(pq_dst(b, i), (size_t)len);
        }
        if (b->out_len) memset(b->out_len, 0, b->n * sizeof *b->out_len);
    } else if (b->out_len) {
        uint64_t ov = pq_overhead(b);
        for (size_t i = 0; i < b->n; i++) b->out_len[i] = encrypt ? b->src_len[i] + ov : b->src_len[i] - ov;
    }
    return st;
}

int pq_encrypt_batch(pq_batch *b) { return run_batch(b, 1); }
int pq_decrypt_batch(pq_batch *b) { return run_batch(b, 0); }
