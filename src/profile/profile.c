/* profile.c - see profile.h. */
#include "profile/profile.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"
#include "util/error.h"
#include "util/fault.h"

typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool done;
    dstack_status status;
} waiter;

static void on_done(void *arg, dstack_status status)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    w->done = true;
    w->status = status;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->lock);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One run, timed from run() to done. */
static dstack_status run_once(ds_executor *ex, ds_exec_plan *plan, const ds_exec_batch *b, const ds_partition *part,
                              double *us)
{
    waiter w = {.done = false};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cv, NULL);
    uint64_t t0 = ds_monotonic_ns();
    dstack_status st = ex->ops->run(ex, plan, b, part, on_done, &w);
    if (st == DSTACK_OK) {
        pthread_mutex_lock(&w.lock);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.lock);
        pthread_mutex_unlock(&w.lock);
        st = w.status;
    }
    *us = (double)(ds_monotonic_ns() - t0) / 1e3;
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cv);
    return st;
}

static size_t tensor_bytes(const ds_graph *g, uint32_t t)
{
    return (size_t)ds_tensor_numel(&g->tensors[t]) * sizeof(float);
}

dstack_status ds_profile_measure(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, uint32_t batch,
                                 uint32_t units, uint32_t warmup, uint32_t reps, ds_profile_point *out)
{
    if (batch == 0 || units == 0 || reps == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "profile: batch, units and reps must be positive");
    memset(out, 0, sizeof *out);
    out->batch = batch;
    out->units = units;
    if (ex->ops->model_time_ns) {
        uint64_t ns = 0;
        dstack_status st = ex->ops->model_time_ns(ex, plan, batch, units, &ns);
        if (st != DSTACK_OK)
            return st;
        out->median_us = (double)ns / 1e3;
        out->reps = 1;
        out->modeled = true;
        return DSTACK_OK;
    }
    ds_partition part;
    dstack_status st = ex->ops->partition_get(ex, 0, units, &part);
    if (st != DSTACK_OK)
        return st;
    uint32_t nin = g->n_inputs, nout = g->n_outputs;
    size_t per_sample = 0;
    for (uint32_t j = 0; j < nin; j++)
        per_sample += tensor_bytes(g, g->inputs[j]);
    for (uint32_t j = 0; j < nout; j++)
        per_sample += tensor_bytes(g, g->outputs[j]);
    char *mem = ds_calloc((size_t)batch, per_sample ? per_sample : 1);
    const void **in = ds_calloc((size_t)batch * (nin ? nin : 1), sizeof *in);
    void **outp = ds_calloc((size_t)batch * (nout ? nout : 1), sizeof *outp);
    double *t = ds_calloc(reps, sizeof *t);
    if (!mem || !in || !outp || !t) {
        free(mem);
        free(in);
        free(outp);
        free(t);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory to profile a batch of %u", batch);
    }
    char *p = mem;
    for (uint32_t i = 0; i < batch; i++) {
        for (uint32_t j = 0; j < nin; j++, p += tensor_bytes(g, g->inputs[j - 0]))
            in[i * nin + j] = p;
        for (uint32_t j = 0; j < nout; j++, p += tensor_bytes(g, g->outputs[j]))
            outp[i * nout + j] = p;
    }
    ds_exec_batch b = {batch, in, (void *const *)outp};
    double us;
    for (uint32_t i = 0; i < warmup && st == DSTACK_OK; i++)
        st = run_once(ex, plan, &b, &part, &us);
    for (uint32_t i = 0; i < reps && st == DSTACK_OK; i++)
        st = run_once(ex, plan, &b, &part, &t[i]);
    if (st == DSTACK_OK) {
        qsort(t, reps, sizeof *t, cmp_double);
        out->median_us = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
        out->spread_us = t[reps - 1] - t[0];
        out->reps = reps;
    }
    free(mem);
    free(in);
    free(outp);
    free(t);
    return st;
}
