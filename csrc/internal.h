/* Internal declarations shared by the batch driver and the backends. */
#ifndef PQSEAL_INTERNAL_H
#define PQSEAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include "pqseal.h"
#ifdef PQ_HAVE_IPSECMB
#include <intel-ipsec-mb.h>
#endif

#define PQ_MAX_ORDINAL 32767
#define PQ_MAX_MODULE_TYPE 9
#define PQ_MODULE_AAD_SUFFIX 7 /* type(1) + rg(2) + col(2) + page(2) */
/* Largest plaintext that still fits the uint32 length prefix with GCM framing. */
#define PQ_MAX_PLAINTEXT ((uint64_t)0xFFFFFFFFu - PQ_NONCE_LEN - PQ_TAG_LEN)
#define PQ_INVOCATION_LIMIT ((uint64_t)1 << 32)

/* One key's invocation count, shared by every pq_key with the same bytes (keyreg.c). */
#define PQ_TAG_HMAC 32
typedef struct pq_counter {
    _Atomic uint64_t invocations;
    uint8_t tag[PQ_TAG_HMAC];             /* HMAC-SHA-256(process secret, key) */
    uint64_t users;                       /* key objects using it (under the table's lock) */
    struct pq_counter *chain;             /* hash bucket */
    struct pq_counter *older, *newer;     /* idle list (users == 0), oldest first */
} pq_counter;

void pq_counters_init(void);
/* The counter of this key (made at 0 if new); PQ_OK, PQ_ERR_RNG or PQ_ERR_INTERNAL. */
int pq_counter_acquire(const uint8_t *raw, size_t len, pq_counter **out);
void pq_counter_release(pq_counter *c);

struct pq_key {
    /* backend-specific precomputed state comes first for alignment */
#ifdef PQ_HAVE_IPSECMB
    struct gcm_key_data imb_gcm __attribute__((aligned(64)));
    uint32_t imb_enc[60] __attribute__((aligned(16)));
    uint32_t imb_dec[60] __attribute__((aligned(16)));
#endif
    uint8_t raw[32];
    int len;
    pq_counter *counter; /* shared with every pq_key of the same bytes */
};

/* One worker's slice of a batch. */
typedef struct pq_work {
    pq_batch *b;
    size_t lo, hi;
    const uint8_t *nonces; /* encryption: 12 bytes per module of the whole batch */
    int encrypt;
    int status;
    size_t fail_index;
    _Atomic size_t *first_fail; /* lowest failing module index seen by any worker */
    /* dynamic split (threads > 1): participants claim `step` modules at a time from
     * *claim_next until lo..hi is used up, so a late or preempted thread delays nobody */
    _Atomic size_t *claim_next;
    size_t step;
    int claimed_static;     /* static mode: lo..hi handed out once */
    /* worker pool bookkeeping (pool.c) */
    struct pq_work *next;
    _Atomic int *pending;
} pq_work;

/* Module AAD for module i into buf (which already holds the file AAD in its first
 * aad_len bytes); returns the AAD length. */
size_t pq_module_aad(const pq_batch *b, size_t i, uint8_t *buf);

#define PQ_MAX_THREADS 64

/* Run one slice on the calling thread (dispatches to the batch's backend). */
void pq_run_work(pq_work *w);
/* Worker pool: run works[0] here and works[1..nt-1] on pool workers; returns when all are done. */
void pq_pool_init(void);
void pq_pool_run(pq_work *works, int nt);

/* At init: note when OpenSSL's config asks for FIPS but offers no FIPS implementations. */
void pq_fips_check_config(void);

/* Backends process modules lo..hi of a batch whose framing was validated. */
void pq_openssl_run(pq_work *w);
#ifdef PQ_HAVE_IPSECMB
int pq_ipsecmb_init(void);
int pq_ipsecmb_key_init(pq_key *key);
void pq_ipsecmb_run(pq_work *w);
#endif

/* Record a failure at module i; the batch reports the lowest failing index. */
static inline void pq_fail_at(pq_work *w, int status, size_t i)
{
    w->status = status;
    w->fail_index = i;
    size_t cur = atomic_load(w->first_fail);
    while (i < cur && !atomic_compare_exchange_weak(w->first_fail, &cur, i)) {
    }
}
/* The next range of modules for this participant; 0 when there is none left. */
static inline int pq_next_range(pq_work *w, size_t *lo, size_t *hi)
{
    if (!w->claim_next) {
        if (w->claimed_static) return 0;
        w->claimed_static = 1;
        *lo = w->lo;
        *hi = w->hi;
        return *lo < *hi;
    }
    size_t s = atomic_fetch_add(w->claim_next, w->step);
    if (s >= w->hi) return 0;
    *lo = s;
    *hi = s + w->step < w->hi ? s + w->step : w->hi;
    return 1;
}

/* Stop once a module before i has failed: nothing after it can change the outcome. */
static inline int pq_should_stop(pq_work *w, size_t i)
{
    return atomic_load_explicit(w->first_fail, memory_order_relaxed) < i;
}

/* Small helpers. */
static inline uint32_t pq_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void pq_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static inline const uint8_t *pq_src(const pq_batch *b, size_t i)
{
    return b->src ? b->src[i] : b->src_base + b->src_off[i];
}
static inline uint8_t *pq_dst(const pq_batch *b, size_t i) { return b->dst_base + b->dst_off[i]; }

static inline uint8_t pq_mtype(const pq_batch *b, size_t i) { return b->mtype ? b->mtype[i] : b->mtype0; }
static inline uint16_t pq_kidx(const pq_batch *b, size_t i) { return b->key_index ? b->key_index[i] : b->key_index0; }

/* Overhead of the framing: bytes added to the plaintext. */
static inline uint64_t pq_overhead(const pq_batch *b)
{
    uint64_t o = PQ_NONCE_LEN;
    if (b->algorithm == PQ_ALG_GCM) o += PQ_TAG_LEN;
    if (b->framing == PQ_FRAME_MODULE) o += PQ_LEN_PREFIX;
    return o;
}
static inline uint64_t pq_header(const pq_batch *b)
{
    return (b->framing == PQ_FRAME_MODULE ? PQ_LEN_PREFIX : 0) + PQ_NONCE_LEN;
}

#endif
