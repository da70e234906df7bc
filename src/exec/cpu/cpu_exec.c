/* cpu_exec.c - the reference executor behind the ds_executor_ops table.
 *
 * A plan owns one arena for every activation of the graph at max_batch,
 * laid out once at plan_create by one linear scan over live ranges (a tensor is
 * live from the node that writes it to the last node that reads it, graph
 * outputs to the end), so layers reuse the memory of tensors that are dead
 * (see "memory plan" below).
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
#include "util/fault.h"

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

/* ---- memory plan ----
 *
 * One pass over the nodes in order: a tensor gets its offset when its
 * producer runs (graph inputs before node 0) and gives it back after its
 * last reader has run, so a node's output never shares memory with its
 * inputs. Offsets come from a free list of holes sorted by offset, first
 * fit, neighbours merged. Why this and not first-fit over every pair of
 * tensors (the first planner): that compared each tensor with every earlier
 * one, 10 s for a chain of 100,000 Relus. Here each tensor costs one scan of
 * at most FREE_HOLES holes, so planning is O(n); a graph so wide that more
 * holes are free at once forgets the smallest ones, wasting that memory but
 * never reusing it wrongly. */

#define FREE_HOLES 64

typedef struct hole {
    size_t off, floats;
} hole;

typedef struct arena_state {
    hole holes[FREE_HOLES]; /* sorted by offset, none touching */
    uint32_t n_holes;
    size_t top;             /* the arena's size so far */
} arena_state;

static size_t arena_take(arena_state *a, size_t floats)
{
    for (uint32_t i = 0; i < a->n_holes; i++) {
        hole *h = &a->holes[i];
        if (h->floats < floats)
            continue;
        size_t off = h->off;
        h->off += floats;
        h->floats -= floats;
        if (h->floats == 0) {
            memmove(h, h + 1, (a->n_holes - i - 1) * sizeof *h);
            a->n_holes--;
        }
        return off;
    }
    /* A hole at the top grows into the new block instead of being skipped. */
    if (a->n_holes && a->holes[a->n_holes - 1].off + a->holes[a->n_holes - 1].floats == a->top) {
        size_t off = a->holes[--a->n_holes].off;
        a->top = off + floats;
        return off;
    }
    size_t off = a->top;
    a->top += floats;
    return off;
}

static void arena_give(arena_state *a, size_t off, size_t floats)
{
    uint32_t i = 0;
    while (i < a->n_holes && a->holes[i].off < off)
        i++;
    bool join_prev = i > 0 && a->holes[i - 1].off + a->holes[i - 1].floats == off;
    bool join_next = i < a->n_holes && off + floats == a->holes[i].off;
    if (join_prev && join_next) {
        a->holes[i - 1].floats += floats + a->holes[i].floats;
        memmove(&a->holes[i], &a->holes[i + 1], (a->n_holes - i - 1) * sizeof(hole));
        a->n_holes--;
    } else if (join_prev) {
        a->holes[i - 1].floats += floats;
    } else if (join_next) {
        a->holes[i].off = off;
        a->holes[i].floats += floats;
    } else {
        if (a->n_holes == FREE_HOLES) {
            uint32_t small = 0; /* forget the smallest hole (maybe this one) */
            for (uint32_t k = 1; k < a->n_holes; k++)
                if (a->holes[k].floats < a->holes[small].floats)
                    small = k;
            if (a->holes[small].floats >= floats)
                return;
            memmove(&a->holes[small], &a->holes[small + 1], (a->n_holes - small - 1) * sizeof(hole));
            a->n_holes--;
            if (small < i)
                i--;
        }
        memmove(&a->holes[i + 1], &a->holes[i], (a->n_holes - i) * sizeof(hole));
        a->holes[i] = (hole){off, floats};
        a->n_holes++;
    }
}

/* Does tensor t get an arena slot? Activations do, and graph inputs when a
 * pass gathers several requests into one batch. */
static bool needs_slot(const ds_exec_plan *p, const ds_tensor *ts)
{
    return ts->kind == DS_TENSOR_ACTIVATION || (ts->kind == DS_TENSOR_INPUT && p->batch_cap > 1);
}

static size_t slot_floats(const ds_exec_plan *p, const ds_tensor *ts)
{
    size_t f = (size_t)floats_per_request(ts) * p->batch_cap;
    return (f + ARENA_ALIGN_FLOATS - 1) / ARENA_ALIGN_FLOATS * ARENA_ALIGN_FLOATS;
}

static dstack_status plan_arena(ds_exec_plan *p, uint64_t budget_bytes)
{
    const ds_graph *g = p->g;
    /* last[t]: the last node reading t (UINT32_MAX: kept to the end).
     * dies_at: the tensors whose last reader is node i, as linked lists. */
    uint32_t *last = ds_malloc((g->n_tensors + 1) * sizeof *last);
    uint32_t *dies_head = ds_malloc((g->n_nodes + 1) * sizeof *dies_head);
    uint32_t *dies_next = ds_malloc((g->n_tensors + 1) * sizeof *dies_next);
    arena_state *a = ds_calloc(1, sizeof *a);
    dstack_status st = DSTACK_OK;
    if (!last || !dies_head || !dies_next || !a) {
        st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory to plan graph '%s'", g->name);
        goto out;
    }
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        const ds_tensor *ts = &g->tensors[t];
        last[t] = ts->kind == DS_TENSOR_ACTIVATION ? ts->producer : 0;
        p->slot[t] = NO_SLOT;
    }
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        dies_head[i] = UINT32_MAX;
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] != DS_TENSOR_NONE && last[g->nodes[i].inputs[k]] < i)
                last[g->nodes[i].inputs[k]] = i;
    }
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        if (g->tensors[t].is_output || !needs_slot(p, &g->tensors[t]) || last[t] >= g->n_nodes)
            continue;
        dies_next[t] = dies_head[last[t]];
        dies_head[last[t]] = t;
    }
    for (uint32_t j = 0; j < g->n_inputs; j++)
        if (needs_slot(p, &g->tensors[g->inputs[j]]))
            p->slot[g->inputs[j]] = arena_take(a, slot_floats(p, &g->tensors[g->inputs[j]]));
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const ds_tensor *out = &g->tensors[g->nodes[i].output];
        p->slot[g->nodes[i].output] = arena_take(a, slot_floats(p, out));
        if (a->top > budget_bytes / sizeof(float)) {
            st = ds_fail(DSTACK_ERR_RESOURCE_LIMIT, "cpu: graph '%s' needs more than %llu bytes "
                         "of activations at batch %u by node %u '%s' (%s): over "
                         "options.max_model_memory_bytes", g->name,
                         (unsigned long long)budget_bytes, p->batch_cap, i, g->nodes[i].name,
                         ds_op_name(g->nodes[i].op));
            goto out;
        }
        for (uint32_t t = dies_head[i]; t != UINT32_MAX; t = dies_next[t])
            arena_give(a, p->slot[t], slot_floats(p, &g->tensors[t]));
    }
    p->arena_floats = a->top;
    if (p->arena_floats) {
        p->arena = ds_aligned_alloc(64, p->arena_floats * sizeof(float));
        if (!p->arena)
            st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for the %zu-byte arena of "
                         "graph '%s'", p->arena_floats * sizeof(float), g->name);
    }
out:
    free(last);
    free(dies_head);
    free(dies_next);
    free(a);
    return st;
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
    ds_exec_plan *p = ds_calloc(1, sizeof *p);
    if (!p)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for a plan");
    p->g = g;
    p->max_batch = o->max_batch;
    p->batch_cap = g->batchable ? o->max_batch : 1;
    p->slot = ds_calloc(g->n_tensors + 1, sizeof *p->slot);
    p->rt = ds_calloc(g->n_tensors + 1, sizeof *p->rt);
    if (!p->slot || !p->rt) {
        plan_free(p);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cpu: no memory for plan of '%s'", g->name);
    }
    uint64_t budget = o->max_memory_bytes ? o->max_memory_bytes : UINT64_MAX;
    dstack_status st = plan_arena(p, budget);
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
    size_t plan_floats = p->arena_floats + p->scratch_floats;
    if (plan_floats > budget / sizeof(float)) {
        plan_free(p);
        return ds_fail(DSTACK_ERR_RESOURCE_LIMIT, "cpu: graph '%s' needs %zu bytes of arena and "
                       "im2col scratch, over options.max_model_memory_bytes (%llu)", g->name,
                       plan_floats * sizeof(float), (unsigned long long)budget);
    }
    if (p->scratch_floats) {
        p->scratch = ds_aligned_alloc(64, ((p->scratch_floats + 15) / 16 * 16) * sizeof(float));
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
    cpu_executor *ce = ds_calloc(1, sizeof *ce);
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
