/* A small persistent worker pool for splitting batches across cores.
 *
 * Creating threads per call costs tens of microseconds, which is a sizeable part of a
 * multi-MiB batch. Workers are created on demand (never more than asked for) and live
 * for the life of the process. A caller queues all but the first slice, runs the first
 * itself, then takes back every slice no worker has started and runs those too, so a
 * busy pool never makes a batch wait behind other batches' work. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

/* Batches come back to back (one per column chunk): a worker that just finished spins
 * this long for the next task before sleeping, and a caller spins this long for its
 * workers before sleeping, which saves the futex wake-up latency (tens of microseconds
 * on virtual machines) on every batch. */
#define SPIN_NS 200000L

static _Atomic int queued; /* tasks in the queue, readable without the lock */

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spin until *flag says so or SPIN_NS pass; returns whether the condition came true. */
static int spin_until_nonzero(_Atomic int *v)
{
    long end = now_ns() + SPIN_NS;
    for (int i = 0;; i++) {
        if (atomic_load_explicit(v, memory_order_acquire)) return 1;
        cpu_relax();
        if ((i & 255) == 255 && now_ns() > end) return 0;
    }
}

static int spin_until_zero(_Atomic int *v)
{
    long end = now_ns() + SPIN_NS;
    for (int i = 0;; i++) {
        if (!atomic_load_explicit(v, memory_order_acquire)) return 1;
        cpu_relax();
        if ((i & 255) == 255 && now_ns() > end) return 0;
    }
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static pq_work *head, *tail;
static int nworkers;

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        spin_until_nonzero(&queued);
        pthread_mutex_lock(&lock);
        while (!head) pthread_cond_wait(&work_cv, &lock);
        pq_work *w = head;
        head = w->next;
        if (!head) tail = NULL;
        atomic_fetch_sub(&queued, 1);
        pthread_mutex_unlock(&lock);

        pq_run_work(w);

        pthread_mutex_lock(&lock);
        atomic_fetch_sub(w->pending, 1);
        pthread_cond_broadcast(&done_cv);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* After fork() only the forking thread exists in the child: forget the workers. */
static void after_fork_child(void)
{
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&work_cv, NULL);
    pthread_cond_init(&done_cv, NULL);
    head = tail = NULL;
    nworkers = 0;
    atomic_store(&queued, 0);
}

void pq_pool_init(void) { pthread_atfork(NULL, NULL, after_fork_child); }

void pq_pool_run(pq_work *works, int nt)
{
    _Atomic int pending;
    atomic_init(&pending, 0);
    int want = nt - 1;
    pthread_mutex_lock(&lock);
    while (nworkers < want && nworkers < PQ_MAX_THREADS) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break; /* fewer workers: the caller runs the rest itself */
        nworkers++;
    }
    for (int i = 1; i < nt; i++) {
        pq_work *w = &works[i];
        w->next = NULL;
        w->pending = &pending;
        if (tail) tail->next = w; else head = w;
        tail = w;
        atomic_fetch_add(&pending, 1);
        atomic_fetch_add(&queued, 1);
    }
    pthread_cond_broadcast(&work_cv);
    pthread_mutex_unlock(&lock);

    pq_run_work(&works[0]);

    /* take back what nobody started */
    pthread_mutex_lock(&lock);
    pq_work *mine[PQ_MAX_THREADS];
    int nmine = 0;
    pq_work **pp = &head;
    tail = NULL;
    while (*pp) {
        pq_work *w = *pp;
        if (w->pending == &pending) {
            *pp = w->next;
            atomic_fetch_sub(&pending, 1);
            atomic_fetch_sub(&queued, 1);
            mine[nmine++] = w;
        } else {
            tail = w;
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nmine; i++) pq_run_work(mine[i]);

    if (spin_until_zero(&pending)) return;
    pthread_mutex_lock(&lock);
    while (atomic_load(&pending) > 0) pthread_cond_wait(&done_cv, &lock);
    pthread_mutex_unlock(&lock);
}
