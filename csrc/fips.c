/* FIPS mode: every cipher call and every random byte from OpenSSL's FIPS provider.
 *
 * pq_enable_fips() loads the "fips" and "base" providers into OpenSSL's default library
 * context and sets its default properties to fips=yes, so that the implicit fetches of
 * the OpenSSL backend (EVP_aes_*_gcm/ctr) and RAND_bytes resolve to FIPS
 * implementations. It then checks what it asked for: every algorithm pqseal uses is
 * offered with fips=yes, and the DRBG in use comes from the FIPS provider (a DRBG that
 * was instantiated before the switch keeps its provider, so FIPS mode must be asked for
 * before the first random byte is drawn).
 *
 * A failed request is sticky: pq_init() then reports PQ_ERR_FIPS and every entry point
 * refuses to work, so nothing runs outside FIPS mode after FIPS mode was asked for. The
 * same holds when OpenSSL's configuration already sets default_properties = fips=yes but
 * no FIPS implementation is there (otherwise every call would fail later, in the DRBG,
 * with nothing saying why). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/conf.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "internal.h"

static pthread_mutex_t fips_lock = PTHREAD_MUTEX_INITIALIZER;
static OSSL_PROVIDER *fips_prov, *base_prov;
static _Atomic int fips_reason = PQ_FIPS_OK;
static _Atomic int fips_on; /* default properties fips=yes and every algorithm offered so */

/* Everything pqseal fetches: the backend's ciphers, the DRBG, and HMAC-SHA-256 of the
 * invocation registry (keyreg.c). */
static const char *const CIPHERS[] = { "AES-128-GCM", "AES-192-GCM", "AES-256-GCM",
                                       "AES-128-CTR", "AES-192-CTR", "AES-256-CTR" };

static int approved_algorithms_offered(void)
{
    for (size_t i = 0; i < sizeof CIPHERS / sizeof *CIPHERS; i++) {
        EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, CIPHERS[i], "fips=yes");
        if (!c) return 0;
        EVP_CIPHER_free(c);
    }
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA2-256", "fips=yes");
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", "fips=yes");
    EVP_RAND *rand = EVP_RAND_fetch(NULL, "CTR-DRBG", "fips=yes");
    int ok = md && mac && rand;
    EVP_MD_free(md);
    EVP_MAC_free(mac);
    EVP_RAND_free(rand);
    return ok;
}

/* Is this DRBG an implementation offered with fips=yes? */
static int drbg_is_fips(EVP_RAND_CTX *ctx)
{
    if (!ctx) return 0;
    EVP_RAND *in_use = EVP_RAND_CTX_get0_rand(ctx);
    EVP_RAND *approved = EVP_RAND_fetch(NULL, EVP_RAND_get0_name(in_use), "fips=yes");
    int ok = approved && EVP_RAND_get0_provider(approved) == EVP_RAND_get0_provider(in_use);
    EVP_RAND_free(approved);
    return ok;
}

void pq_fips_check_config(void)
{
    if (!EVP_default_properties_is_fips_enabled(NULL)) return;
    if (approved_algorithms_offered())
        atomic_store(&fips_on, 1);
    else
        atomic_store(&fips_reason, PQ_FIPS_CONFIG);
}

int pq_fips_reason(void) { return atomic_load(&fips_reason); }
int pq_fips_enabled(void) { return atomic_load(&fips_on); }

int pq_enable_fips(void)
{
    pq_init();
    pthread_mutex_lock(&fips_lock);
    if (atomic_load(&fips_on) && fips_prov && base_prov) {
        pthread_mutex_unlock(&fips_lock);
        return PQ_FIPS_OK;
    }
    int reason = PQ_FIPS_OK;
    int was_fips = EVP_default_properties_is_fips_enabled(NULL);
    ERR_clear_error(); /* so that pq_openssl_error() tells about this attempt only */
    if (!fips_prov && !(fips_prov = OSSL_PROVIDER_load(NULL, "fips"))) {
        reason = PQ_FIPS_NO_PROVIDER;
    } else if (!base_prov && !(base_prov = OSSL_PROVIDER_load(NULL, "base"))) {
        reason = PQ_FIPS_NO_BASE;
    } else if (!EVP_default_properties_enable_fips(NULL, 1) || !approved_algorithms_offered()) {
        reason = PQ_FIPS_NOT_APPROVED;
    } else if (!drbg_is_fips(RAND_get0_primary(NULL)) || !drbg_is_fips(RAND_get0_public(NULL)) ||
               !drbg_is_fips(RAND_get0_private(NULL))) {
        reason = PQ_FIPS_DRBG_IN_USE;
    }
    if (reason != PQ_FIPS_OK && !was_fips) EVP_default_properties_enable_fips(NULL, 0);
    atomic_store(&fips_on, reason == PQ_FIPS_OK);
    atomic_store(&fips_reason, reason);
    pthread_mutex_unlock(&fips_lock);
    return reason;
}

const char *pq_openssl_modules_dir(void)
{
    const char *env = getenv("OPENSSL_MODULES");
    return env && *env ? env : OPENSSL_info(OPENSSL_INFO_MODULES_DIR);
}

static char config_file[4096];
static pthread_once_t config_once = PTHREAD_ONCE_INIT;

static void find_config_file(void)
{
    char *p = CONF_get1_default_config_file(); /* OPENSSL_CONF, or the build's default */
    if (p) {
        strncpy(config_file, p, sizeof config_file - 1);
        OPENSSL_free(p);
    }
}

const char *pq_openssl_config_file(void)
{
    pthread_once(&config_once, find_config_file);
    return config_file;
}
