/* pqseal native cipher core: public declarations.
 *
 * This header is read both by the C compiler and by the cffi builder
 * (csrc/build_ffi.py), so it must stay free of preprocessor logic other than
 * the include guard, which the builder strips.
 */
#ifndef PQSEAL_H
#define PQSEAL_H

typedef struct pq_key pq_key;

/* Backends. */
#define PQ_BACKEND_OPENSSL 1
#define PQ_BACKEND_IPSECMB 2

/* Algorithms for one batch. */
#define PQ_ALG_GCM 0
#define PQ_ALG_CTR 1

/* Framing: PME module (len(4 LE) || nonce || ct [|| tag]) or raw (nonce || ct || tag),
 * the latter for local key wrapping. */
#define PQ_FRAME_MODULE 0
#define PQ_FRAME_RAW 1

/* AAD: built per module from the file AAD, module type and ordinals, or one fixed
 * AAD for every module of the batch (key wrapping; empty = no AAD). */
#define PQ_AAD_MODULE 0
#define PQ_AAD_FIXED 1

/* Status codes. */
#define PQ_OK 0
#define PQ_ERR_TAG 1          /* authentication tag mismatch */
#define PQ_ERR_LENGTH 2       /* module too short/long, length field inconsistent */
#define PQ_ERR_SHORT_BUFFER 3 /* destination capacity too small */
#define PQ_ERR_ORDINAL 4      /* ordinal outside 0..32767 */
#define PQ_ERR_KEY_INDEX 5    /* key index outside the key table */
#define PQ_ERR_LIMIT 6        /* per-key invocation limit (2^32) reached */
#define PQ_ERR_RNG 7          /* CSPRNG failure */
#define PQ_ERR_INTERNAL 8     /* library failure or out of memory */
#define PQ_ERR_BACKEND 9      /* backend not available in this build / mode */
#define PQ_ERR_MODULE_TYPE 10 /* unknown module type */
#define PQ_ERR_ARGUMENT 11    /* inconsistent batch arguments */
#define PQ_ERR_FIPS 12        /* FIPS mode was asked for but is unusable: see pq_fips_reason() */

#define PQ_NONCE_LEN 12
#define PQ_TAG_LEN 16
#define PQ_LEN_PREFIX 4

typedef struct {
    /* batch-wide settings */
    int backend;
    int algorithm;
    int framing;
    int aad_mode;
    const uint8_t *aad;          /* file AAD (PQ_AAD_MODULE) or the AAD (PQ_AAD_FIXED) */
    size_t aad_len;
    pq_key *const *keys;         /* key table */
    uint32_t nkeys;
    int threads;                 /* <= 1: run on the calling thread */

    /* modules: arrays of n entries; NULL metadata arrays mean "use the scalar".
     * Input: per-module pointers `src`, or (src == NULL) src_base + src_off[i] with
     * every module inside src_size bytes. Output: always dst_base + dst_off[i], each
     * module's output inside dst_size bytes. */
    size_t n;
    const uint8_t *const *src;
    const uint8_t *src_base;
    uint64_t src_size;
    const uint64_t *src_off;
    const uint64_t *src_len;
    uint8_t *dst_base;
    uint64_t dst_size;
    const uint64_t *dst_off;
    uint64_t *out_len;           /* optional: bytes written per module */
    const uint8_t *mtype;
    const int32_t *rg;
    const int32_t *col;
    const int32_t *page;
    const uint16_t *key_index;
    uint8_t mtype0;
    int32_t rg0, col0, page0;
    uint16_t key_index0;

    /* test hook: n * 12 nonce bytes to use instead of the CSPRNG (encryption only) */
    const uint8_t *nonces;

    /* out: index of the first failing module (valid when status != PQ_OK and
     * the failure is tied to a module; otherwise (size_t)-1) */
    size_t fail_index;
} pq_batch;

/* Library set-up; safe to call more than once. Returns PQ_OK, PQ_ERR_INTERNAL, or
 * PQ_ERR_FIPS while FIPS mode is asked for but unusable (every entry point then refuses). */
int pq_init(void);

/* FIPS mode (fips.c): OpenSSL's "fips" and "base" providers loaded, default properties
 * fips=yes, the OpenSSL backend only. pq_enable_fips() returns one of the reasons below
 * (PQ_FIPS_OK on success); a failure is sticky until a later call succeeds. */
#define PQ_FIPS_OK 0
#define PQ_FIPS_NO_PROVIDER 1  /* the "fips" provider did not load */
#define PQ_FIPS_NO_BASE 2      /* the "base" provider did not load */
#define PQ_FIPS_NOT_APPROVED 3 /* an algorithm pqseal uses is not offered with fips=yes */
#define PQ_FIPS_DRBG_IN_USE 4  /* the DRBG already in use is not a FIPS implementation */
#define PQ_FIPS_CONFIG 5       /* OpenSSL's config sets fips=yes but nothing offers pqseal's algorithms so */
int pq_enable_fips(void);
int pq_fips_reason(void);     /* PQ_FIPS_OK, or why FIPS mode is unusable */
int pq_fips_enabled(void);    /* 1 when OpenSSL's default properties are fips=yes and usable */
const char *pq_openssl_modules_dir(void);  /* where OpenSSL looks for providers */
const char *pq_openssl_config_file(void);  /* the OpenSSL config file OpenSSL reads */

/* Keys: the raw key is copied into the key object (len 16, 24 or 32); the caller may
 * wipe its copy. pq_key_free wipes the key material. pq_key_new returns PQ_OK (*out
 * set), PQ_ERR_ARGUMENT (bad length), PQ_ERR_RNG, PQ_ERR_INTERNAL (out of memory) or
 * what pq_init() reports.
 * Invocations are counted per key per process: every key object holding the same key
 * bytes shares one count (see keyreg.c for how long an unused key's count is kept). */
int pq_key_new(const uint8_t *raw, size_t len, pq_key **out);
void pq_key_free(pq_key *key);
int pq_key_bits(const pq_key *key);
uint64_t pq_key_invocations(const pq_key *key);
void pq_key_set_invocations(pq_key *key, uint64_t value); /* test hook: sets the shared count */

/* The batch entry points. The GIL is released around them by cffi. */
int pq_encrypt_batch(pq_batch *batch);
int pq_decrypt_batch(pq_batch *batch);

/* Backend information. */
int pq_backend_available(int backend);
const char *pq_openssl_version(void);
const char *pq_ipsecmb_version(void);  /* "" if not built with intel-ipsec-mb */
const char *pq_ipsecmb_arch(void);     /* architecture path chosen at init, "" if none */
uint64_t pq_ipsecmb_features(void);    /* IMB_FEATURE_* bit mask, 0 if none */
uint64_t pq_gcm_invocation_limit(void);

/* Random bytes from OpenSSL's DRBG (RAND_bytes), the source of every key, salt, file
 * AAD and nonce. Returns PQ_OK, PQ_ERR_RNG, or what pq_init() reports. */
int pq_random_bytes(uint8_t *out, size_t n);
/* Drain the calling thread's OpenSSL error queue into buf as one line of text
 * (NUL-terminated, cut at cap); returns its length. */
size_t pq_openssl_error(char *buf, size_t cap);

#endif
