/* Process-wide invocation counts, one per distinct key.
 *
 * The 2^32 limit on GCM invocations (random 96-bit nonces, NIST SP 800-38D §8.3) is a
 * property of the key, not of a key object: a file engine makes a fresh pq_key per
 * file, so every pq_key holding the same key bytes shares one counter here. Counters
 * are found by HMAC-SHA-256(secret, key): the secret is drawn from the DRBG when the
 * first key is made and never leaves the process, so nothing in the table identifies a
 * key outside this process.
 *
 * A counter stays while a key object uses it, and after that while fewer than
 * PQ_IDLE_MAX other counters have fallen idle since (the least recently released are
 * forgotten first), so that a long-running process making a fresh key per file keeps a
 * bounded table. The counters themselves are atomics: a batch reserves its invocations
 * with one atomic add per key, without the table's lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "internal.h"

#define PQ_BUCKETS 4096
#define PQ_IDLE_MAX 65536

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t secret[32];
static int have_secret;
static pq_counter *buckets[PQ_BUCKETS];
static pq_counter *idle_oldest, *idle_newest;
static size_t idle_count;

/* After fork() only the forking thread exists in the child: the lock may be held by a
 * thread that is gone. The child keeps the parent's counts. */
static void after_fork_child(void) { pthread_mutex_init(&lock, NULL); }

void pq_counters_init(void) { pthread_atfork(NULL, NULL, after_fork_child); }

static size_t bucket_of(const uint8_t *tag)
{
    size_t h;
    memcpy(&h, tag, sizeof h);
    return h % PQ_BUCKETS;
}

static void idle_unlink(pq_counter *c)
{
    if (c->older) c->older->newer = c->newer; else idle_oldest = c->newer;
    if (c->newer) c->newer->older = c->older; else idle_newest = c->older;
    c->older = c->newer = NULL;
    idle_count--;
}

static void forget(pq_counter *c)
{
    pq_counter **pp = &buckets[bucket_of(c->tag)];
    while (*pp != c) pp = &(*pp)->chain;
    *pp = c->chain;
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

int pq_counter_acquire(const uint8_t *raw, size_t len, pq_counter **out)
{
    uint8_t tag[PQ_TAG_HMAC];
    unsigned int taglen = 0;
    int st = PQ_OK;
    *out = NULL;
    pthread_mutex_lock(&lock);
    if (!have_secret) {
        if (RAND_bytes(secret, (int)sizeof secret) != 1) {
            st = PQ_ERR_RNG;
            goto done;
        }
        have_secret = 1;
    }
    if (!HMAC(EVP_sha256(), secret, (int)sizeof secret, raw, len, tag, &taglen) || taglen != sizeof tag) {
        st = PQ_ERR_INTERNAL;
        goto done;
    }
    pq_counter *c = buckets[bucket_of(tag)];
    while (c && CRYPTO_memcmp(c->tag, tag, sizeof tag) != 0) c = c->chain;
    if (c) {
        if (c->users == 0) idle_unlink(c);
    } else {
        c = calloc(1, sizeof *c);
        if (!c) {
            st = PQ_ERR_INTERNAL;
            goto done;
        }
        memcpy(c->tag, tag, sizeof tag);
        atomic_init(&c->invocations, 0);
        size_t b = bucket_of(tag);
        c->chain = buckets[b];
        buckets[b] = c;
    }
    c->users++;
    *out = c;
done:
    pthread_mutex_unlock(&lock);
    OPENSSL_cleanse(tag, sizeof tag);
    return st;
}

void pq_counter_release(pq_counter *c)
{
    if (!c) return;
    pthread_mutex_lock(&lock);
    if (--c->users == 0) {
        c->older = idle_newest;
        c->newer = NULL;
        if (idle_newest) idle_newest->newer = c; else idle_oldest = c;
        idle_newest = c;
        if (++idle_count > PQ_IDLE_MAX) {
            pq_counter *old = idle_oldest;
            idle_unlink(old);
            forget(old);
        }
    }
    pthread_mutex_unlock(&lock);
}
