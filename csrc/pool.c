/* A small persistent worker pool for splitting batches across cores.
 *
 * Creating threads per call costs tens of microseconds, which is a sizeable part of a
 * multi-MiB batch. Workers are created on demand (never more than asked for) and live
 * for the life of the process. A caller queues all but the first slice, runs the first
 * itself, then takes back every slice no worker has started and runs those too, so a
 * busy pool never makes a batch wait behind other batches' work. */
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static pq_work *head, *tail;
static int nworkers;

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (!head) pthread_cond_wait(&work_cv, &lock);
        pq_work *w = head;
        head = w->next;
        if (!head) tail = NULL;
        pthread_mutex_unlock(&lock);

        pq_run_work(w);

        pthread_mutex_lock(&lock);
        (*w->pending)--;
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
}

void pq_pool_init(void) { pthread_atfork(NULL, NULL, after_fork_child); }

void pq_pool_run(pq_work *works, int nt)
{
    int pending = 0;
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
        pending++;
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
                pending--;
            mine[nmine++] = w;
        } else {
            tail = w;
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nmine; i++) pq_run_work(mine[i]);

    pthread_mutex_lock(&lock);
    while (pending > 0) pthread_cond_wait(&done_cv, &lock);
    pthread_mutex_unlock(&lock);
}
