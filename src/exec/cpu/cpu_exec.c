/* cpu_exec.c - the reference executor behind the ds_executor_ops table.
 *
 * A plan owns one arena for every activation of the graph at max_batch,
 * laid out once at plan_create by first-fit over live ranges (a tensor is
 * live from the node that writes it to the last node that reads it, graph
 * outputs to the end), so layers reuse the memory of tensors that are dead.
 * Batchable graphs run all b requests at once with dims[0] = b: request
 * inputs are gathered into a contiguous batch (or used in place at b = 1)
 * and outputs scattered back. Other graphs run b independent single passes.
 * Runs are synchronous: done() is called before run returns. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec/cpu/cpu_ops.h"
#include "exec/exec.h"
#include "util/error.h"

#define ARENA_ALIGN_FLOATS 16 /* 64 bytes */
#define NO_SLOT SIZE_MAX

typedef struct cpu_executor {
    ds_executor base; /* first: ds_executor * and cpu_executor * convert */
    ds_cpu_pool *pool;
} cpu_executor;

struct ds_exec_plan {
    const ds_graph *g;
    uint32_t max_batch;
    uint32_t batch_cap;  /* requests one pass holds: max_batch if batchable, else 1 */
    float *arena;
    size_t arena_floats;
    size_t *slot;        /* per tensor: arena offset in floats, or NO_SLOT */
    float *scratch;      /* im2col */
    size_t scratch_floats;
    ds_cpu_tensor *rt;   /* per tensor: run-time view, rebuilt per pass */
};

static int64_t floats_per_request(const ds_tensor *t) { return ds_tensor_numel(t); }

/* ---- memory plan ---- */

typedef struct live_range {
    uint32_t tensor;
    uint32_t first, last; /* node indices, inclusive */
    size_t floats;
} live_range;

static int by_size_desc(const void *a, const void *b)
{
    const live_range *x = a, *y = b;
    if (x->floats != y->floats)
        return x->floats < y->floats ? 1 : -1;
    return x->first < y->first ? -1 : (x->first > y->first);
}

/* First-fit placement, largest tensors first: a tensor goes at the lowest
 * offset that collides with no placed tensor whose live range overlaps. */
static dstack_status plan_arena(ds_exec_plan *p)
{
    const ds_graph *g = p->g;
    live_range *lr = calloc(g->n_tensors + 1, sizeof *lr);
    uint32_t *last = calloc(g->n_tensors + 1, sizeof *last);
    if (!lr || !last) {
        free(lr);
        free(last);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory to plan graph '%s'", g->name);
    }
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] != DS_TENSOR_NONE)
                last[g->nodes[i].inputs[k]] = i;
    uint32_t n = 0;
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        const ds_tensor *ts = &g->tensors[t];
        p->slot[t] = NO_SLOT;
        bool gathered_input = ts->kind == DS_TENSOR_INPUT && p->batch_cap > 1;
        if (ts->kind != DS_TENSOR_ACTIVATION && !gathered_input)
            continue;
        live_range r = {.tensor = t};
        r.first = ts->kind == DS_TENSOR_ACTIVATION ? ts->producer : 0;
        r.last = last[t] > r.first ? last[t] : r.first;
        if (ts->is_output)
            r.last = g->n_nodes;
        size_t f = (size_t)floats_per_request(ts) * p->batch_cap;
        r.floats = (f + ARENA_ALIGN_FLOATS - 1) / ARENA_ALIGN_FLOATS * ARENA_ALIGN_FLOATS;
        lr[n++] = r;
    }
    qsort(lr, n, sizeof *lr, by_size_desc);
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t off = 0;
        /* Retry until no overlapping placed range collides at `off`. */
        for (bool moved = true; moved;) {
            moved = false;
            for (uint32_t j = 0; j < i; j++) {
                if (lr[j].first > lr[i].last || lr[i].first > lr[j].last)
                    continue;
                size_t o = p->slot[lr[j].tensor];
                if (off < o + lr[j].floats && o < off + lr[i].floats) {
                    off = o + lr[j].floats;
                    moved = true;
                }
            }
        }
        p->slot[lr[i].tensor] = off;
        if (off + lr[i].floats > total)
            total = off + lr[i].floats;
    }
    free(lr);
    free(last);
    p->arena_floats = total;
    if (total) {
        p->arena = aligned_alloc(64, total * sizeof(float));
        if (!p->arena)
            return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for the %zu-byte arena of "
                           "graph '%s'", total * sizeof(float), g->name);
    }
    return DSTACK_OK;
}

/* Run-time views of every tensor for a pass of `bb` requests. */
static void bind_views(ds_exec_plan *p, uint32_t bb)
{
    const ds_graph *g = p->g;
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        const ds_tensor *ts = &g->tensors[t];
        ds_cpu_tensor *v = &p->rt[t];
        v->rank = ts->rank;
        memcpy(v->dims, ts->dims, sizeof v->dims);
        if (g->batchable && ts->kind != DS_TENSOR_CONST && ts->rank > 0)
            v->dims[0] = bb;
        if (ts->kind == DS_TENSOR_CONST)
            v->data = ts->data;
        else if (p->slot[t] != NO_SLOT)
            v->data = p->arena + p->slot[t];
        else
            v->data = NULL; /* an input used in place: set per pass */
    }
}

static void plan_free(ds_exec_plan *p)
{
    if (!p)
        return;
    free(p->arena);
    free(p->scratch);
    free(p->slot);
    free(p->rt);
    free(p);
}

static dstack_status cpu_plan_create(ds_executor *ex, const ds_graph *g, const ds_plan_options *o,
                                     ds_exec_plan **out)
{
    (void)ex;
    if (!g || !o || !out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu plan_create: NULL argument");
    if (!g->finalized)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu: graph '%s' is not finalized", g->name);
    if (o->max_batch == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu: max_batch is 0 for graph '%s'", g->name);
    if (o->precision != DSTACK_PRECISION_FP32)
        return ds_fail(DSTACK_ERR_UNSUPPORTED, "cpu backend runs float32 only; precision %d "
                       "(TF32/FP16) needs the cuda backend", (int)o->precision);
    ds_exec_plan *p = calloc(1, sizeof *p);
    if (!p)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for a plan");
    p->g = g;
    p->max_batch = o->max_batch;
    p->batch_cap = g->batchable ? o->max_batch : 1;
    p->slot = calloc(g->n_tensors + 1, sizeof *p->slot);
    p->rt = calloc(g->n_tensors + 1, sizeof *p->rt);
    if (!p->slot || !p->rt) {
        plan_free(p);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for plan of '%s'", g->name);
    }
    dstack_status st = plan_arena(p);
    if (st) {
        plan_free(p);
        return st;
    }
    /* im2col works one sample at a time: size it at batch 1. */
    bind_views(p, 1);
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const ds_node *n = &g->nodes[i];
        const ds_cpu_tensor *in[DS_NODE_MAX_INPUTS] = {NULL};
        for (uint32_t k = 0; k < n->n_inputs; k++)
            in[k] = n->inputs[k] == DS_TENSOR_NONE ? NULL : &p->rt[n->inputs[k]];
        size_t s = ds_cpu_op_scratch_floats(n, in, &p->rt[n->output]);
        if (s > p->scratch_floats)
            p->scratch_floats = s;
    }
    if (p->scratch_floats) {
        p->scratch = aligned_alloc(64, ((p->scratch_floats + 15) / 16 * 16) * sizeof(float));
        if (!p->scratch) {
            plan_free(p);
            return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for im2col of '%s'", g->name);
        }
    }
    *out = p;
    return DSTACK_OK;
}

static void cpu_plan_destroy(ds_executor *ex, ds_exec_plan *plan)
{
    (void)ex;
    plan_free(plan);
}

/* One pass over the graph for `bb` requests whose buffers start at
 * inputs[0] / outputs[0] (n_inputs / n_outputs per request). */
static void run_pass(cpu_executor *ce, ds_exec_plan *p, uint32_t bb, const void *const *inputs,
                     void *const *outputs)
{
    const ds_graph *g = p->g;
    bind_views(p, bb);
    for (uint32_t j = 0; j < g->n_inputs; j++) {
        uint32_t t = g->inputs[j];
        size_t n = (size_t)floats_per_request(&g->tensors[t]);
        if (p->slot[t] == NO_SLOT) { /* bb == 1: read the request's buffer in place */
            p->rt[t].data = (float *)(uintptr_t)inputs[j];
            continue;
        }
        for (uint32_t r = 0; r < bb; r++)
            memcpy(p->rt[t].data + r * n, inputs[r * g->n_inputs + j], n * sizeof(float));
    }
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const ds_node *n = &g->nodes[i];
        ds_cpu_op_ctx c = {.node = n, .n_in = n->n_inputs, .out = &p->rt[n->output],
                           .pool = ce->pool, .scratch = p->scratch,
                           .scratch_floats = p->scratch_floats};
        for (uint32_t k = 0; k < n->n_inputs; k++)
            c.in[k] = n->inputs[k] == DS_TENSOR_NONE ? NULL : &p->rt[n->inputs[k]];
        ds_cpu_op_run(&c);
    }
    for (uint32_t j = 0; j < g->n_outputs; j++) {
        uint32_t t = g->outputs[j];
        size_t n = (size_t)floats_per_request(&g->tensors[t]);
        /* a constant output is the same for every request */
        size_t step = g->tensors[t].kind == DS_TENSOR_CONST ? 0 : n;
        for (uint32_t r = 0; r < bb; r++)
            memcpy(outputs[r * g->n_outputs + j], p->rt[t].data + r * step, n * sizeof(float));
    }
}

static dstack_status cpu_run(ds_executor *ex, ds_exec_plan *p, const ds_exec_batch *b,
                             const ds_partition *part, ds_exec_done_fn done, void *done_arg)
{
    cpu_executor *ce = (cpu_executor *)ex;
    if (!ex || !p || !b || !done)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu run: NULL argument");
    if (b->batch == 0 || b->batch > p->max_batch)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu run: batch %u outside 1..%u of graph '%s'",
                       b->batch, p->max_batch, p->g->name);
    if (part && (part->first_unit != 0 || part->unit_count != 1))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu run: partition (%u, %u) is not the "
                       "whole device (0, 1)", part->first_unit, part->unit_count);
    const ds_graph *g = p->g;
    if ((g->n_inputs && !b->inputs) || !b->outputs)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu run: NULL buffer table");
    for (uint32_t i = 0; i < b->batch * g->n_inputs; i++)
        if (!b->inputs[i])
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu run: request %u input %u is NULL",
                           i / g->n_inputs, i % g->n_inputs);
    for (uint32_t i = 0; i < b->batch * g->n_outputs; i++)
        if (!b->outputs[i])
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu run: request %u output %u is NULL",
                           i / g->n_outputs, i % g->n_outputs);
    if (g->batchable) {
        run_pass(ce, p, b->batch, b->inputs, b->outputs);
    } else {
        for (uint32_t r = 0; r < b->batch; r++)
            run_pass(ce, p, 1, b->inputs + (size_t)r * g->n_inputs,
                     b->outputs + (size_t)r * g->n_outputs);
    }
    done(done_arg, DSTACK_OK);
    return DSTACK_OK;
}

static dstack_status cpu_partition_get(ds_executor *ex, uint32_t first_unit, uint32_t unit_count,
                                       ds_partition *out)
{
    if (!ex || !out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu partition_get: NULL argument");
    if (first_unit != 0 || unit_count != 1)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu: partition (%u, %u) does not fit the "
                       "device: it has one unit", first_unit, unit_count);
    out->first_unit = 0;
    out->unit_count = 1;
    out->sm_count = ex->device.sm_count;
    out->handle = NULL;
    return DSTACK_OK;
}

static void cpu_destroy(ds_executor *ex)
{
    cpu_executor *ce = (cpu_executor *)ex;
    if (!ce)
        return;
    ds_cpu_pool_destroy(ce->pool);
    free(ce);
}

static const ds_executor_ops cpu_ops = {
    .name = "cpu",
    .plan_create = cpu_plan_create,
    .plan_destroy = cpu_plan_destroy,
    .run = cpu_run,
    .partition_get = cpu_partition_get,
    .destroy = cpu_destroy,
};

dstack_status ds_exec_cpu_create(const ds_executor_config *cfg, ds_executor **out)
{
    if (!out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_exec_cpu_create: out is NULL");
    uint32_t threads = cfg ? cfg->cpu_threads : 0;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (uint32_t)n : 1;
    }
    if (threads > 1024)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cpu: %u threads is too many (at most 1024)",
                       threads);
    cpu_executor *ce = calloc(1, sizeof *ce);
    if (!ce)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for the executor");
    dstack_status st = ds_cpu_pool_create(threads, &ce->pool);
    if (st) {
        free(ce);
        return st;
    }
    ce->base.ops = &cpu_ops;
    strcpy(ce->base.device.name, "cpu");
    ce->base.device.sm_count = threads;
    ce->base.device.unit_sms = threads;
    ce->base.device.n_units = 1;
    ce->base.device.partitioning = DSTACK_PARTITION_NONE;
    *out = &ce->base;
    return DSTACK_OK;
}
