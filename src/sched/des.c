/* des.c - the discrete-event driver; the contract is in des.h. */
#include "sched/des.h"

#include <stdlib.h>
#include <string.h>

#include "sim/sim.h"
#include "util/error.h"
#include "util/fault.h"

#define STARTS_PER_STEP 16

typedef struct des_model {
    dstack_model *handle;
    uint32_t max_batch;
    void *scratch;               /* one buffer all requests share */
    dstack_buffer in[DSTACK_MAX_IO], out[DSTACK_MAX_IO];
    uint32_t n_in, n_out;
    size_t in_bytes[DSTACK_MAX_IO], out_bytes[DSTACK_MAX_IO];
} des_model;

typedef struct pending {
    dstack_completion c;
    uint32_t samples;
} pending;

struct ds_des {
    ds_des_config cfg;
    ds_des_exec_ops ops;
    ds_clock clock;
    uint64_t now;
    ds_core *core;
    des_model *models;
    uint32_t n_models;
    pending *pend;               /* completions emitted during one core call */
    size_t n_pend, cap_pend;
    bool oom;
    ds_des_completion_fn on_completion;
    void *arg;
    ds_des_replan_fn replan;
    void *replan_arg;
    uint64_t replan_period, replan_next;
};

static uint64_t des_clock_now(const ds_clock *clock) { return ((const ds_des *)clock->state)->now; }

static const ds_des_exec_ops sim_ops = {ds_sim_exec_set_virtual, ds_sim_exec_next_ns, ds_sim_exec_advance};

static void emit(void *arg, const dstack_completion *c, uint32_t samples)
{
    ds_des *d = arg;
    if (d->n_pend == d->cap_pend) {
        size_t cap = d->cap_pend ? 2 * d->cap_pend : 256;
        pending *p = ds_realloc(d->pend, cap * sizeof *p);
        if (!p) {
            d->oom = true; /* reported by ds_des_run; the completion is lost to the trace only */
            return;
        }
        d->pend = p;
        d->cap_pend = cap;
    }
    d->pend[d->n_pend].c = *c;
    d->pend[d->n_pend].samples = samples;
    d->n_pend++;
}

static uint32_t model_index(const ds_des *d, const dstack_model *h)
{
    for (uint32_t i = 0; i < d->n_models; i++)
        if (d->models[i].handle == h)
            return i;
    return UINT32_MAX;
}

/* Hand what the core emitted to the caller, and acknowledge it. */
static void flush(ds_des *d)
{
    for (size_t i = 0; i < d->n_pend; i++) {
        const pending *p = &d->pend[i];
        if (d->on_completion)
            d->on_completion(d->arg, model_index(d, p->c.model), &p->c, p->samples);
        ds_core_polled(d->core, p->c.model, p->samples);
    }
    d->n_pend = 0;
}

dstack_status ds_des_create(const ds_des_config *cfg, ds_des **out)
{
    ds_des *d = ds_calloc(1, sizeof *d);
    if (!d)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the event driver");
    d->cfg = *cfg;
    if (!d->cfg.queue_capacity)
        d->cfg.queue_capacity = 1024;
    d->ops = cfg->exec_ops ? *cfg->exec_ops : sim_ops;
    d->clock.now_ns = des_clock_now;
    d->clock.state = d;
    ds_core_config cc = {cfg->policy, ds_core_units_of(&cfg->exec->device), emit, d};
    dstack_status st = ds_core_create(&cc, &d->core);
    if (st != DSTACK_OK) {
        free(d);
        return st;
    }
    d->ops.set_virtual(cfg->exec, &d->clock);
    *out = d;
    return DSTACK_OK;
}

void ds_des_destroy(ds_des *d)
{
    if (!d)
        return;
    ds_core_destroy(d->core);
    for (uint32_t i = 0; i < d->n_models; i++)
        free(d->models[i].scratch);
    free(d->models);
    free(d->pend);
    free(d);
}

dstack_status ds_des_add_model(ds_des *d, const ds_sched_model_config *cfg)
{
    des_model *ms = ds_realloc(d->models, (d->n_models + 1) * sizeof *ms);
    if (!ms)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for a model");
    d->models = ms;
    des_model *m = &d->models[d->n_models];
    memset(m, 0, sizeof *m);
    size_t most = 1;
    for (uint32_t j = 0; j < cfg->n_inputs; j++)
        most = cfg->input_bytes[j] > most ? cfg->input_bytes[j] : most;
    for (uint32_t j = 0; j < cfg->n_outputs; j++)
        most = cfg->output_bytes[j] > most ? cfg->output_bytes[j] : most;
    m->scratch = ds_calloc((size_t)cfg->max_batch, most);
    if (!m->scratch)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for request buffers");
    m->max_batch = cfg->max_batch;
    m->n_in = cfg->n_inputs;
    m->n_out = cfg->n_outputs;
    memcpy(m->in_bytes, cfg->input_bytes, sizeof m->in_bytes);
    memcpy(m->out_bytes, cfg->output_bytes, sizeof m->out_bytes);
    dstack_status st = ds_core_add_model(d->core, cfg, d->cfg.queue_capacity, d->now, &m->handle);
    if (st != DSTACK_OK) {
        free(m->scratch);
        return st;
    }
    d->n_models++;
    return DSTACK_OK;
}

void ds_des_io_from_graph(const ds_graph *g, ds_sched_model_config *cfg)
{
    cfg->n_inputs = g->n_inputs;
    cfg->n_outputs = g->n_outputs;
    for (uint32_t j = 0; j < g->n_inputs && j < DSTACK_MAX_IO; j++)
        cfg->input_bytes[j] = (size_t)ds_tensor_numel(&g->tensors[g->inputs[j]]) * sizeof(float);
    for (uint32_t j = 0; j < g->n_outputs && j < DSTACK_MAX_IO; j++)
        cfg->output_bytes[j] = (size_t)ds_tensor_numel(&g->tensors[g->outputs[j]]) * sizeof(float);
}

static void des_done(void *arg, dstack_status status)
{
    ds_core_run_tag *tag = arg;
    ds_des *d = tag->driver;
    ds_core_batch_done(d->core, tag->model, status, d->now);
}

static void submit(ds_des *d, const ds_des_arrival *a)
{
    if (a->model >= d->n_models)
        return;
    des_model *m = &d->models[a->model];
    uint32_t samples = a->samples ? a->samples : 1;
    if (samples > m->max_batch)
        samples = m->max_batch;
    for (uint32_t j = 0; j < m->n_in; j++)
        m->in[j] = (dstack_buffer){m->scratch, m->in_bytes[j] * samples};
    for (uint32_t j = 0; j < m->n_out; j++)
        m->out[j] = (dstack_buffer){m->scratch, m->out_bytes[j] * samples};
    dstack_request r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    r.inputs = m->in;
    r.n_inputs = m->n_in;
    r.outputs = m->out;
    r.n_outputs = m->n_out;
    r.n_samples = samples;
    dstack_ticket t;
    (void)ds_core_submit(d->core, m->handle, &r, d->now, &t); /* QUEUE_FULL is counted by the core */
}

static void start(ds_des *d, ds_core_start *s, size_t n)
{
    ds_executor *ex = d->cfg.exec;
    for (size_t i = 0; i < n; i++) {
        ds_core_run_tag *tag = ds_core_run_tag_of(d->core, s[i].model);
        tag->driver = d;
        ds_partition part;
        dstack_status st = ex->ops->partition_get(ex, s[i].first_unit, s[i].unit_count, &part);
        if (st == DSTACK_OK)
            st = ex->ops->run(ex, s[i].plan, &s[i].batch, &part, des_done, tag);
        if (st != DSTACK_OK)
            ds_core_batch_done(d->core, s[i].model, st, d->now);
    }
}

static uint64_t min3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t m = a < b ? a : b;
    return m < c ? m : c;
}

dstack_status ds_des_run(ds_des *d, const ds_des_arrival *trace, size_t n, uint64_t end_ns,
                         ds_des_completion_fn on_completion, void *arg)
{
    d->on_completion = on_completion;
    d->arg = arg;
    size_t next = 0;
    uint64_t wake = UINT64_MAX;
    ds_executor *ex = d->cfg.exec;
    for (;;) {
        uint64_t t_arr = next < n ? trace[next].t_ns : UINT64_MAX;
        uint64_t t = min3(t_arr, d->ops.next_ns(ex), wake);
        if (t == UINT64_MAX || (end_ns && t > end_ns))
            break;
        if (d->replan && d->replan_next <= t) {
            /* the planner runs between events, at its own period */
            d->now = d->replan_next > d->now ? d->replan_next : d->now;
            d->replan_next = d->now + d->replan_period;
            d->replan(d->replan_arg, d, d->now);
            continue;
        }
        if (t > d->now)
            d->now = t;
        d->ops.advance(ex, d->now);
        while (next < n && trace[next].t_ns <= d->now)
            submit(d, &trace[next++]);
        ds_core_start starts[STARTS_PER_STEP];
        size_t k;
        do {
            k = ds_core_step(d->core, d->now, starts, STARTS_PER_STEP, &wake);
            start(d, starts, k);
        } while (k == STARTS_PER_STEP);
        flush(d);
    }
    /* past end_ns: finish what runs, cancel the rest */
    ds_core_shutdown(d->core, d->now);
    for (uint64_t t; (t = d->ops.next_ns(ex)) != UINT64_MAX;) {
        d->now = t > d->now ? t : d->now;
        d->ops.advance(ex, d->now);
    }
    flush(d);
    if (d->oom)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for completions: the replay is incomplete");
    return DSTACK_OK;
}

void ds_des_set_replan(ds_des *d, uint64_t period_ns, ds_des_replan_fn fn, void *arg)
{
    d->replan = period_ns ? fn : NULL;
    d->replan_arg = arg;
    d->replan_period = period_ns;
    d->replan_next = d->now + period_ns;
}

double ds_des_model_rate(ds_des *d, uint32_t model)
{
    return model < d->n_models ? ds_core_model_rate(d->core, d->models[model].handle, d->now) : 0.0;
}

dstack_status ds_des_model_update(ds_des *d, uint32_t model, uint32_t batch_size, uint32_t unit_count)
{
    if (model >= d->n_models)
        return ds_fail(DSTACK_ERR_NOT_FOUND, "no model %u", model);
    return ds_core_model_update(d->core, d->models[model].handle, batch_size, unit_count);
}

uint64_t ds_des_now_ns(const ds_des *d) { return d->now; }
const ds_clock *ds_des_clock(ds_des *d) { return &d->clock; }

dstack_status ds_des_stats(ds_des *d, uint32_t model, dstack_model_stats *out)
{
    if (model >= d->n_models)
        return ds_fail(DSTACK_ERR_NOT_FOUND, "no model %u", model);
    return ds_core_stats(d->core, d->models[model].handle, d->now, out);
}

void ds_des_totals(ds_des *d, ds_core_totals *out) { ds_core_totals_get(d->core, out); }

uint64_t ds_des_model_unit_ns(ds_des *d, uint32_t model)
{
    return model < d->n_models ? ds_core_model_unit_ns(d->core, d->models[model].handle) : 0;
}
