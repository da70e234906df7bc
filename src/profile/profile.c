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

/* Zeroed host buffers for a batch of `batch` samples of g: one block
 * (*mem), with the per-sample input and output pointer arrays. */
typedef struct batch_mem {
    char *mem;
    const void **in;
    void **out;
    ds_exec_batch b;
} batch_mem;

static void batch_mem_free(batch_mem *m)
{
    free(m->mem);
    free(m->in);
    free(m->out);
}

static dstack_status batch_mem_make(const ds_graph *g, uint32_t batch, batch_mem *m)
{
    uint32_t nin = g->n_inputs, nout = g->n_outputs;
    size_t per_sample = 0;
    for (uint32_t j = 0; j < nin; j++)
        per_sample += tensor_bytes(g, g->inputs[j]);
    for (uint32_t j = 0; j < nout; j++)
        per_sample += tensor_bytes(g, g->outputs[j]);
    m->mem = ds_calloc((size_t)batch, per_sample ? per_sample : 1);
    m->in = ds_calloc((size_t)batch * (nin ? nin : 1), sizeof *m->in);
    m->out = ds_calloc((size_t)batch * (nout ? nout : 1), sizeof *m->out);
    if (!m->mem || !m->in || !m->out) {
        batch_mem_free(m);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory to profile a batch of %u", batch);
    }
    char *p = m->mem;
    for (uint32_t i = 0; i < batch; i++) {
        for (uint32_t j = 0; j < nin; p += tensor_bytes(g, g->inputs[j]), j++)
            m->in[i * nin + j] = p;
        for (uint32_t j = 0; j < nout; p += tensor_bytes(g, g->outputs[j]), j++)
            m->out[i * nout + j] = p;
    }
    m->b = (ds_exec_batch){batch, m->in, (void *const *)m->out};
    return DSTACK_OK;
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
    batch_mem bm = {0};
    double *t = ds_calloc(reps, sizeof *t);
    if (!t)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory to profile a batch of %u", batch);
    if ((st = batch_mem_make(g, batch, &bm)) != DSTACK_OK) {
        free(t);
        return st;
    }
    const ds_exec_batch b = bm.b;
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
    batch_mem_free(&bm);
    free(t);
    return st;
}

dstack_status ds_profile_kernels(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, uint32_t batch,
                                 ds_profile_trace *out)
{
    if (!ex || !plan || !g || !out || batch == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "profile kernels: NULL argument or batch 0");
    memset(out, 0, sizeof *out);
    if (!ex->ops->trace_begin || !ex->ops->trace_end)
        return ds_fail(DSTACK_ERR_UNSUPPORTED, "profile kernels: the %s backend has no kernel tracer", ex->ops->name);
    uint32_t units = ex->device.n_units ? ex->device.n_units : 1;
    ds_partition part;
    dstack_status st = ex->ops->partition_get(ex, 0, units, &part);
    if (st != DSTACK_OK)
        return st;
    batch_mem bm = {0};
    if ((st = batch_mem_make(g, batch, &bm)) != DSTACK_OK)
        return st;
    double warm_us = 0, traced_us = 0, us = 0;
    st = run_once(ex, plan, &bm.b, &part, &warm_us); /* plans, graphs and lazy loads stay out of the trace */
    if (st == DSTACK_OK && (st = ex->ops->trace_begin(ex)) == DSTACK_OK) {
        dstack_status run_st = run_once(ex, plan, &bm.b, &part, &traced_us);
        st = ex->ops->trace_end(ex, &out->kernels, &out->n_kernels);
        if (run_st != DSTACK_OK)
            st = run_st;
    }
    /* the batch's time is taken untraced: tracing itself added 2-3 ms per
     * batch on the H200 (resnet50 b1: 5.4 ms traced, 2.7 ms not), which the
     * curve would count as time outside the kernels */
    if (st == DSTACK_OK)
        st = run_once(ex, plan, &bm.b, &part, &us);
    if (st != DSTACK_OK) {
        free(out->kernels);
        out->kernels = NULL;
        out->n_kernels = 0;
    }
    batch_mem_free(&bm);
    if (st != DSTACK_OK)
        return st;
    if (out->n_kernels == 0)
        return ds_fail(DSTACK_ERR_UNSUPPORTED, "profile kernels: the tracer saw no kernel of a batch of %u", batch);
    out->batch = batch;
    out->sm_count = part.sm_count;
    out->total_us = us;
    return DSTACK_OK;
}
