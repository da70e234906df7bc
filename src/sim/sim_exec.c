/* sim_exec.c - the `sim` executor: ds_executor_ops over the event engine.
 *
 * A plan caches the kernel list of its graph per batch size, built on the
 * first run at that size. run() zeroes the batch's output buffers (it
 * computes nothing: the backend exists to size and compare scheduling,
 * not to infer), then starts the batch in the engine at the current time.
 *
 * Real clock (default): engine time is CLOCK_MONOTONIC minus the moment the
 * executor was created. One timer thread, started with the first run,
 * sleeps until the engine's next batch end and calls `done` for every batch
 * that has ended, without holding the executor lock; run() never calls
 * done (a batch that ends while run() moves the engine forward is queued
 * for the thread), so a caller may hold its own lock around run().
 *
 * Virtual clock (ds_sim_exec_set_virtual): no thread; run() reads the
 * driver's clock; ds_sim_exec_advance calls the dones from the caller's
 * thread, in end-time order.
 *
 * destroy: on the real clock waits until every batch has ended and its
 * done has been called; on the virtual clock runs the engine to the end of
 * every running batch and calls their dones. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim/engine.h"
#include "sim/sim.h"
#include "util/error.h"
#include "util/units.h"

typedef struct sim_run {
    ds_exec_done_fn done;
    void *arg;
    ds_exec_plan *plan;
    uint64_t end_ns;
    struct sim_run *next;
} sim_run;

struct ds_exec_plan {
    const ds_graph *g;
    uint32_t max_batch;
    ds_sim_kernel **k; /* [batch - 1], NULL until first used */
    uint32_t *n;
    uint32_t running;  /* batches in the engine (under the executor lock) */
};

typedef struct sim_executor {
    ds_executor base; /* first */
    ds_sim_device dev;
    ds_sim_engine *eng;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_started, stop;
    bool virtual_mode, ideal;
    const ds_clock *vclock;
    uint64_t epoch_ns;
    sim_run *ready_head, *ready_tail; /* ended, done not yet called */
} sim_executor;

/* ---- plans ---- */

static dstack_status sim_plan_create(ds_executor *ex, const ds_graph *g, const ds_plan_options *o,
                                     ds_exec_plan **out)
{
    if (!ex || !g || !o || !out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim plan_create: NULL argument");
    if (!g->finalized || o->max_batch == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "sim plan_create: graph '%s' not finalized or max_batch 0", g->name);
    ds_exec_plan *p = calloc(1, sizeof *p);
    if (p) {
        p->k = calloc(o->max_batch, sizeof *p->k);
        p->n = calloc(o->max_batch, sizeof *p->n);
    }
    if (!p || !p->k || !p->n) {
        if (p) {
            free(p->k);
            free(p->n);
        }
        free(p);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim: no memory for a plan of '%s'", g->name);
    }
    p->g = g;
    p->max_batch = o->max_batch;
    *out = p;
    return DSTACK_OK;
}

static void sim_plan_destroy(ds_executor *ex, ds_exec_plan *p)
{
    sim_executor *se = (sim_executor *)ex;
    if (!p)
        return;
    if (se) { /* the engine borrows the kernel lists: wait for this plan's runs */
        pthread_mutex_lock(&se->mu);
        while (p->running && !se->virtual_mode)
            pthread_cond_wait(&se->cv, &se->mu);
        pthread_mutex_unlock(&se->mu);
    }
    for (uint32_t i = 0; i < p->max_batch; i++)
        free(p->k[i]);
    free(p->k);
    free(p->n);
    free(p);
}

/* ---- completions ---- */

/* Engine callback (executor lock held): queue the run for its done. */
static void collect(void *arg, void *user, uint64_t end_ns)
{
    sim_executor *se = arg;
    sim_run *r = user;
    r->end_ns = end_ns;
    r->next = NULL;
    r->plan->running--;
    if (se->ready_tail)
        se->ready_tail->next = r;
    else
        se->ready_head = r;
    se->ready_tail = r;
}

static sim_run *take_ready(sim_executor *se)
{
    sim_run *r = se->ready_head;
    se->ready_head = se->ready_tail = NULL;
    return r;
}

/* Call every done of the list, in order, and free it (no lock held). */
static void deliver(sim_run *r)
{
    while (r) {
        sim_run *next = r->next;
        r->done(r->arg, DSTACK_OK);
        free(r);
        r = next;
    }
}

static uint64_t engine_now_ns(sim_executor *se)
{
    if (se->virtual_mode)
        return ds_clock_now_ns(se->vclock);
    uint64_t t = ds_monotonic_ns();
    return t > se->epoch_ns ? t - se->epoch_ns : 0;
}

static void *timer_main(void *arg)
{
    sim_executor *se = arg;
    pthread_mutex_lock(&se->mu);
    for (;;) {
        ds_sim_engine_advance(se->eng, engine_now_ns(se), collect, se);
        if (se->ready_head) {
            sim_run *r = take_ready(se);
            pthread_cond_broadcast(&se->cv); /* plan_destroy waits on running */
            pthread_mutex_unlock(&se->mu);
            deliver(r);
            pthread_mutex_lock(&se->mu);
            continue;
        }
        if (se->stop && ds_sim_engine_running(se->eng) == 0)
            break;
        uint64_t next = ds_sim_engine_next_end_ns(se->eng);
        if (next == UINT64_MAX) {
            pthread_cond_wait(&se->cv, &se->mu);
        } else {
            uint64_t abs_ns = se->epoch_ns + next;
            struct timespec ts = {(time_t)(abs_ns / 1000000000u), (long)(abs_ns % 1000000000u)};
            pthread_cond_timedwait(&se->cv, &se->mu, &ts);
        }
    }
    pthread_mutex_unlock(&se->mu);
    return NULL;
}

/* ---- run ---- */

static dstack_status check_batch(const ds_exec_plan *p, const ds_exec_batch *b)
{
    const ds_graph *g = p->g;
    if (b->batch == 0 || b->batch > p->max_batch)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim run: batch %u outside 1..%u of graph '%s'",
                       b->batch, p->max_batch, g->name);
    if ((g->n_inputs && !b->inputs) || (g->n_outputs && !b->outputs))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim run: NULL buffer table");
    for (uint32_t i = 0; i < b->batch * g->n_inputs; i++)
        if (!b->inputs[i])
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim run: request %u input %u is NULL",
                           i / g->n_inputs, i % g->n_inputs);
    for (uint32_t i = 0; i < b->batch * g->n_outputs; i++)
        if (!b->outputs[i])
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim run: request %u output %u is NULL",
                           i / g->n_outputs, i % g->n_outputs);
    return DSTACK_OK;
}

static dstack_status sim_run_batch(ds_executor *ex, ds_exec_plan *p, const ds_exec_batch *b,
                                   const ds_partition *part, ds_exec_done_fn done,
                                   void *done_arg)
{
    sim_executor *se = (sim_executor *)ex;
    if (!ex || !p || !b || !done)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim run: NULL argument");
    dstack_status st = check_batch(p, b);
    if (st)
        return st;
    uint32_t first = part ? part->first_unit : 0, units = part ? part->unit_count : se->dev.n_units;
    if (units == 0 || first >= se->dev.n_units || units > se->dev.n_units - first)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "sim run: partition (%u, %u) does not fit the %u units of the device", first,
                       units, se->dev.n_units);
    uint32_t bi = b->batch - 1;
    if (!p->k[bi]) { /* a plan runs one batch at a time: no lock needed */
        if ((st = ds_sim_kernels(p->g, b->batch, &se->dev, &p->k[bi], &p->n[bi])))
            return st;
    }
    const ds_graph *g = p->g;
    for (uint32_t r = 0; r < b->batch; r++)
        for (uint32_t j = 0; j < g->n_outputs; j++)
            memset(b->outputs[r * g->n_outputs + j], 0,
                   (size_t)ds_tensor_numel(&g->tensors[g->outputs[j]]) * sizeof(float));
    sim_run *run = calloc(1, sizeof *run);
    if (!run)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim run: no memory");
    run->done = done;
    run->arg = done_arg;
    run->plan = p;
    pthread_mutex_lock(&se->mu);
    if (!se->virtual_mode && !se->thread_started) {
        if (pthread_create(&se->thread, NULL, timer_main, se) != 0) {
            pthread_mutex_unlock(&se->mu);
            free(run);
            return ds_fail(DSTACK_ERR_INTERNAL, "sim: cannot start the timer thread");
        }
        se->thread_started = true;
    }
    uint64_t now = engine_now_ns(se);
    ds_sim_engine_advance(se->eng, now, collect, se);
    st = ds_sim_engine_start(se->eng, now, p->k[bi], p->n[bi], first, units,
                             ds_sim_host_bytes(g, b->batch), run);
    if (st == DSTACK_OK)
        p->running++;
    pthread_cond_broadcast(&se->cv);
    pthread_mutex_unlock(&se->mu);
    if (st)
        free(run);
    return st;
}

static dstack_status sim_partition_get(ds_executor *ex, uint32_t first_unit, uint32_t unit_count,
                                       ds_partition *out)
{
    sim_executor *se = (sim_executor *)ex;
    if (!ex || !out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim partition_get: NULL argument");
    if (unit_count == 0 || first_unit >= se->dev.n_units ||
        unit_count > se->dev.n_units - first_unit)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "sim: partition (%u, %u) does not fit the device: it has %u units",
                       first_unit, unit_count, se->dev.n_units);
    out->first_unit = first_unit;
    out->unit_count = unit_count;
    out->sm_count = ds_units_span_sms(se->dev.partitioning, se->dev.sm_count, se->dev.unit_sms, se->dev.n_units,
                                      se->dev.tail_leftover, first_unit, unit_count);
    out->handle = NULL;
    return DSTACK_OK;
}

static void sim_destroy(ds_executor *ex)
{
    sim_executor *se = (sim_executor *)ex;
    if (!se)
        return;
    pthread_mutex_lock(&se->mu);
    se->stop = true;
    pthread_cond_broadcast(&se->cv);
    bool joined = se->thread_started;
    pthread_mutex_unlock(&se->mu);
    if (joined)
        pthread_join(se->thread, NULL);
    /* virtual clock, or runs queued by run() after the thread left: finish */
    pthread_mutex_lock(&se->mu);
    ds_sim_engine_drain(se->eng, collect, se);
    sim_run *r = take_ready(se);
    pthread_mutex_unlock(&se->mu);
    deliver(r);
    ds_sim_engine_destroy(se->eng);
    pthread_cond_destroy(&se->cv);
    pthread_mutex_destroy(&se->mu);
    free(se);
}

dstack_status ds_sim_alone_ns(const ds_sim_device *dev, const ds_sim_kernel *k, uint32_t n, uint32_t units,
                              double host_bytes, uint64_t *out_ns)
{
    ds_sim_engine *e = ds_sim_engine_create(dev, false);
    if (!e)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim: no memory for an engine");
    int tag = 0;
    dstack_status st = ds_sim_engine_start(e, 0, k, n, 0, units, host_bytes, &tag);
    if (st == DSTACK_OK)
        *out_ns = ds_sim_engine_next_end_ns(e);
    ds_sim_engine_destroy(e);
    return st;
}

/* The simulator's own answer for a batch alone on a partition: what the
 * engine gives with nothing else running (ds_sim_batch_time_ns). */
static dstack_status sim_model_time_ns(ds_executor *ex, ds_exec_plan *p, uint32_t batch, uint32_t units,
                                       uint64_t *out_ns)
{
    sim_executor *se = (sim_executor *)ex;
    if (!ex || !p || !out_ns || batch == 0 || batch > p->max_batch || units == 0 || units > se->dev.n_units)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim model_time: batch %u or units %u out of range", batch,
                       units);
    dstack_status st = DSTACK_OK;
    pthread_mutex_lock(&se->mu);
    if (!p->k[batch - 1])
        st = ds_sim_kernels(p->g, batch, &se->dev, &p->k[batch - 1], &p->n[batch - 1]);
    pthread_mutex_unlock(&se->mu);
    if (st != DSTACK_OK)
        return st;
    /* The engine's own time for the batch alone: the measurement the
     * profile wants is what the simulator will do, and the closed form of
     * ds_sim_batch_time_ns differs from the engine by up to 15% on deep
     * nets of many small kernels (resnet152 b5 on 6 units: 12.26 against
     * 14.13 ms), which would make every prediction short. */
    return ds_sim_alone_ns(&se->dev, p->k[batch - 1], p->n[batch - 1], units, ds_sim_host_bytes(p->g, batch),
                           out_ns);
}

static const ds_executor_ops sim_ops = {
    .model_time_ns = sim_model_time_ns,
    .name = "sim",
    .plan_create = sim_plan_create,
    .plan_destroy = sim_plan_destroy,
    .run = sim_run_batch,
    .partition_get = sim_partition_get,
    .destroy = sim_destroy,
};

dstack_status ds_exec_sim_create(const ds_executor_config *cfg, ds_executor **out)
{
    if (!out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_exec_sim_create: out is NULL");
    dstack_partitioning part = cfg ? cfg->partitioning : DSTACK_PARTITION_AUTO;
    uint32_t sms = cfg ? cfg->sim_sm_count : 0;
    if (sms > 65536)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim: %u SMs is too many (at most 65536)", sms);
    sim_executor *se = calloc(1, sizeof *se);
    if (!se)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim: no memory for the executor");
    ds_sim_device_default(&se->dev, part, sms);
    se->eng = ds_sim_engine_create(&se->dev, false);
    pthread_condattr_t ca;
    bool ok = se->eng && pthread_condattr_init(&ca) == 0;
    if (ok) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        ok = pthread_cond_init(&se->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!ok || pthread_mutex_init(&se->mu, NULL) != 0) {
        if (ok)
            pthread_cond_destroy(&se->cv);
        ds_sim_engine_destroy(se->eng);
        free(se);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim: cannot create the engine");
    }
    se->base.ops = &sim_ops;
    snprintf(se->base.device.name, sizeof se->base.device.name, "%s", se->dev.name);
    se->base.device.sm_count = se->dev.sm_count;
    se->base.device.unit_sms = se->dev.unit_sms;
    se->base.device.n_units = se->dev.n_units;
    se->base.device.partitioning = se->dev.partitioning;
    se->base.device.tail_leftover = se->dev.tail_leftover;
    se->vclock = &ds_clock_monotonic;
    se->epoch_ns = ds_monotonic_ns();
    *out = &se->base;
    return DSTACK_OK;
}

/* ---- sim-only calls ---- */

const ds_sim_device *ds_sim_exec_device(const ds_executor *ex)
{
    return ex ? &((const sim_executor *)ex)->dev : NULL;
}

void ds_sim_exec_set_virtual(ds_executor *ex, const ds_clock *clock)
{
    sim_executor *se = (sim_executor *)ex;
    if (!se || !clock)
        return;
    pthread_mutex_lock(&se->mu);
    if (!se->thread_started) {
        se->virtual_mode = true;
        se->vclock = clock;
    }
    pthread_mutex_unlock(&se->mu);
}

uint64_t ds_sim_exec_next_ns(ds_executor *ex)
{
    sim_executor *se = (sim_executor *)ex;
    if (!se)
        return UINT64_MAX;
    pthread_mutex_lock(&se->mu);
    uint64_t t = se->ready_head ? se->ready_head->end_ns : ds_sim_engine_next_end_ns(se->eng);
    pthread_mutex_unlock(&se->mu);
    return t;
}

void ds_sim_exec_advance(ds_executor *ex, uint64_t t_ns)
{
    sim_executor *se = (sim_executor *)ex;
    if (!se || !se->virtual_mode)
        return;
    pthread_mutex_lock(&se->mu);
    ds_sim_engine_advance(se->eng, t_ns, collect, se);
    sim_run *r = take_ready(se);
    pthread_mutex_unlock(&se->mu);
    deliver(r);
}

void ds_sim_exec_set_ideal(ds_executor *ex, bool ideal)
{
    sim_executor *se = (sim_executor *)ex;
    if (!se)
        return;
    pthread_mutex_lock(&se->mu);
    se->ideal = ideal;
    ds_sim_engine_set_ideal(se->eng, ideal);
    pthread_mutex_unlock(&se->mu);
}

double ds_sim_exec_busy_sm_ns(ds_executor *ex)
{
    sim_executor *se = (sim_executor *)ex;
    if (!se)
        return 0;
    pthread_mutex_lock(&se->mu);
    double b = ds_sim_engine_busy_sm_ns(se->eng);
    pthread_mutex_unlock(&se->mu);
    return b;
}
