/* pool.c - a small fixed pool of worker threads running parallel-fors.
 *
 * Why a hand-rolled pool instead of OpenMP: the library must not impose a
 * runtime on its host program, its threads must be joined by destroy, and
 * the thread count comes from the context's options. Tasks are handed out
 * by an atomic counter so uneven tasks balance themselves. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "exec/cpu/cpu_ops.h"
#include "util/error.h"
#include "util/fault.h"

struct ds_cpu_pool {
    uint32_t threads;
    pthread_t *tids;         /* threads - 1 workers */
    float **scratch;         /* per worker */
    uint32_t n_scratch;
    pthread_mutex_t run_lock; /* one job at a time */
    pthread_mutex_t mu;
    pthread_cond_t wake, idle;
    uint64_t generation;     /* bumped per job */
    bool stop;
    /* the current job */
    ds_cpu_task_fn fn;
    void *ctx;
    uint32_t n_tasks;
    atomic_uint next;
    uint32_t busy;           /* workers still inside the job */
};

typedef struct worker_arg {
    ds_cpu_pool *pool;
    uint32_t index;
} worker_arg;

static void drain(ds_cpu_pool *p, uint32_t worker)
{
    for (;;) {
        uint32_t t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks)
            break;
        p->fn(p->ctx, t, worker);
    }
}

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    ds_cpu_pool *p = wa.pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        drain(p, wa.index);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0)
            pthread_cond_signal(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

dstack_status ds_cpu_pool_create(uint32_t threads, ds_cpu_pool **out)
{
    if (threads == 0)
        threads = 1;
    ds_cpu_pool *p = ds_calloc(1, sizeof *p);
    if (!p)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for the worker pool");
    p->threads = threads;
    p->n_scratch = threads;
    p->scratch = ds_calloc(threads, sizeof *p->scratch);
    p->tids = ds_calloc(threads, sizeof *p->tids);
    if (!p->scratch || !p->tids)
        goto oom;
    for (uint32_t i = 0; i < threads; i++) {
        p->scratch[i] = ds_aligned_alloc(64, DS_SGEMM_SCRATCH_FLOATS * sizeof(float));
        if (!p->scratch[i])
            goto oom;
    }
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    atomic_init(&p->next, 0);
    uint32_t started = 1;
    for (; started < threads; started++) {
        worker_arg *wa = ds_malloc(sizeof *wa);
        if (!wa)
            break;
        wa->pool = p;
        wa->index = started;
        if (ds_thread_create(&p->tids[started], NULL, worker_main, wa) != 0) {
            free(wa);
            break;
        }
    }
    if (started < threads) {
        p->threads = started; /* join what started, then fail */
        ds_cpu_pool_destroy(p);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: could not start worker thread %u of %u",
                       started, threads);
    }
    *out = p;
    return DSTACK_OK;
oom:
    if (p->scratch)
        for (uint32_t i = 0; i < threads; i++)
            free(p->scratch[i]);
    free(p->scratch);
    free(p->tids);
    free(p);
    return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for %u workers", threads);
}

void ds_cpu_pool_destroy(ds_cpu_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 1; i < p->threads; i++)
        pthread_join(p->tids[i], NULL);
    for (uint32_t i = 0; i < p->n_scratch; i++)
        free(p->scratch[i]);
    pthread_mutex_destroy(&p->run_lock);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->idle);
    free(p->scratch);
    free(p->tids);
    free(p);
}

uint32_t ds_cpu_pool_threads(const ds_cpu_pool *p) { return p->threads; }

float *ds_cpu_pool_scratch(ds_cpu_pool *p, uint32_t worker) { return p->scratch[worker]; }

void ds_cpu_pool_run(ds_cpu_pool *p, uint32_t n_tasks, ds_cpu_task_fn fn, void *ctx)
{
    if (n_tasks == 0)
        return;
    pthread_mutex_lock(&p->run_lock);
    if (p->threads == 1 || n_tasks == 1) {
        for (uint32_t t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        pthread_mutex_unlock(&p->run_lock);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->busy = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->run_lock);
}
