/* cuda_plan.c - see cuda_plan.h. Pure: no CUDA headers. */
#include "exec/cuda/cuda_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

const char *ds_cu_engine_name(ds_cu_engine e) {
    switch (e) {
    case DS_CU_ENGINE_CUDNN: return "cudnn";
    case DS_CU_ENGINE_CUBLAS: return "cublas";
    case DS_CU_ENGINE_KERNEL: return "kernel";
    case DS_CU_ENGINE_COPY: return "copy";
    }
    return "?";
}

uint32_t ds_cu_dims_at(const ds_graph *g, uint32_t t, uint32_t batch, int64_t *dims) {
    const ds_tensor *x = &g->tensors[t];
    for (uint32_t i = 0; i < x->rank; i++) dims[i] = x->dims[i];
    if (g->batchable && x->kind != DS_TENSOR_CONST && x->rank > 0) dims[0] = x->dims[0] * batch;
    return x->rank;
}

static void fused_clamp(const ds_node *n, ds_cu_step *s) {
    s->act = n->attrs.activation;
    s->act_lo = -INFINITY;
    s->act_hi = INFINITY;
    if (s->act == DS_ACT_RELU) s->act_lo = 0.0f;
    if (s->act == DS_ACT_CLIP) {
        s->act_lo = n->attrs.clip_min;
        s->act_hi = n->attrs.clip_max;
    }
}

static dstack_status plan_conv(const ds_graph *g, const ds_node *n, ds_cu_step *s) {
    const ds_tensor *x = &g->tensors[n->inputs[0]];
    const ds_tensor *w = &g->tensors[n->inputs[1]];
    const ds_tensor *y = &g->tensors[n->output];
    if (x->rank != 4 || w->rank != 4 || y->rank != 4)
        return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "node '%s' (Conv): only 2-D convolution", n->name);
    const ds_op_attrs *a = &n->attrs;
    ds_cu_conv_params *c = &s->conv;
    c->stride_h = a->stride[0];
    c->stride_w = a->stride[1];
    c->dil_h = a->dilation[0];
    c->dil_w = a->dilation[1];
    c->group = a->group ? a->group : 1;
    c->c = x->dims[1];
    c->h = x->dims[2];
    c->w = x->dims[3];
    c->k = w->dims[0];
    c->kh = w->dims[2];
    c->kw = w->dims[3];
    c->oh = y->dims[2];
    c->ow = y->dims[3];
    c->has_bias = n->n_inputs > 2 && n->inputs[2] != DS_TENSOR_NONE;
    bool symmetric = a->pads[0] == a->pads[2] && a->pads[1] == a->pads[3];
    c->pad_h = a->pads[0];
    c->pad_w = a->pads[1];
    fused_clamp(n, s);
    bool depthwise = c->group > 1 && c->c == (int64_t)c->group;
    s->engine = symmetric && !depthwise ? DS_CU_ENGINE_CUDNN : DS_CU_ENGINE_KERNEL;
    if (s->engine == DS_CU_ENGINE_KERNEL)
        s->epilogue = DS_CU_EPI_NONE; /* the direct kernel applies bias and clamp itself */
    else if (s->act == DS_ACT_RELU && c->has_bias)
        s->epilogue = DS_CU_EPI_CUDNN_BIAS_RELU;
    else if (c->has_bias || s->act != DS_ACT_NONE)
        s->epilogue = DS_CU_EPI_KERNEL;
    else
        s->epilogue = DS_CU_EPI_NONE;
    return DSTACK_OK;
}

dstack_status ds_cu_step_plan(const ds_graph *g, uint32_t node, ds_cu_step *s) {
    const ds_node *n = &g->nodes[node];
    memset(s, 0, sizeof *s);
    s->node = node;
    s->op = n->op;
    s->out = n->output;
    s->z = DS_TENSOR_NONE;
    s->act_lo = -INFINITY;
    s->act_hi = INFINITY;
    switch (n->op) {
    case DS_OP_CONV:
        return plan_conv(g, n, s);
    case DS_OP_GEMM:
        fused_clamp(n, s);
        s->engine = DS_CU_ENGINE_CUBLAS;
        s->epilogue = s->act != DS_ACT_NONE ? DS_CU_EPI_KERNEL : DS_CU_EPI_NONE;
        return DSTACK_OK;
    case DS_OP_MATMUL:
        s->engine = DS_CU_ENGINE_CUBLAS;
        return DSTACK_OK;
    case DS_OP_RESHAPE:
    case DS_OP_FLATTEN:
    case DS_OP_IDENTITY:
    case DS_OP_CONCAT:
        s->engine = DS_CU_ENGINE_COPY;
        return DSTACK_OK;
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL:
        if (g->tensors[n->inputs[0]].rank != 4)
            return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "node '%s' (%s): only 2-D pooling", n->name,
                           ds_op_name(n->op));
        s->engine = DS_CU_ENGINE_KERNEL;
        return DSTACK_OK;
    case DS_OP_BATCHNORM:
    case DS_OP_RELU:
    case DS_OP_CLIP:
    case DS_OP_LEAKY_RELU:
    case DS_OP_SIGMOID:
    case DS_OP_TANH:
    case DS_OP_HARD_SIGMOID:
    case DS_OP_HARD_SWISH:
    case DS_OP_PRELU:
    case DS_OP_GLOBAL_AVGPOOL:
    case DS_OP_GLOBAL_MAXPOOL:
    case DS_OP_ADD:
    case DS_OP_MUL:
    case DS_OP_SUM:
    case DS_OP_TRANSPOSE:
    case DS_OP_SOFTMAX:
    case DS_OP_LRN:
        s->engine = DS_CU_ENGINE_KERNEL;
        return DSTACK_OK;
    case DS_OP_COUNT:
        break;
    }
    return ds_fail(DSTACK_ERR_UNSUPPORTED_OP, "node '%s': op %d has no cuda implementation",
                   n->name, (int)n->op);
}

/* Readers of tensor t among the nodes; the last reader in *reader. */
static uint32_t count_readers(const ds_graph *g, uint32_t t, uint32_t *reader) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (uint32_t j = 0; j < g->nodes[i].n_inputs; j++)
            if (g->nodes[i].inputs[j] == t) {
                n++;
                *reader = i;
            }
    return n;
}

static bool is_graph_output(const ds_graph *g, uint32_t t) {
    if (g->tensors[t].is_output) return true;
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == t) return true;
    return false;
}

static bool same_dims(const ds_tensor *a, const ds_tensor *b) {
    if (a->rank != b->rank) return false;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return false;
    return true;
}

uint32_t ds_cu_fuse_residual(const ds_graph *g, ds_cu_step *steps) {
    uint32_t fused = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        ds_cu_step *c = &steps[i];
        if (c->skip || c->op != DS_OP_CONV || c->engine != DS_CU_ENGINE_CUDNN ||
            !c->conv.has_bias || c->act != DS_ACT_NONE)
            continue;
        uint32_t t = g->nodes[i].output, j = 0, k = 0;
        if (is_graph_output(g, t) || count_readers(g, t, &j) != 1 || g->nodes[j].op != DS_OP_ADD ||
            steps[j].skip)
            continue;
        const ds_node *add = &g->nodes[j];
        if (add->n_inputs != 2 || add->inputs[0] == add->inputs[1]) continue;
        uint32_t z = add->inputs[0] == t ? add->inputs[1] : add->inputs[0];
        const ds_tensor *zt = &g->tensors[z];
        /* z must exist when the conv runs, and need no broadcasting */
        if (zt->kind == DS_TENSOR_CONST) continue;
        if (zt->kind == DS_TENSOR_ACTIVATION && zt->producer >= i) continue;
        if (!same_dims(zt, &g->tensors[t]) || !same_dims(zt, &g->tensors[add->output])) continue;
        uint32_t u = add->output;
        if (is_graph_output(g, u) || count_readers(g, u, &k) != 1 || g->nodes[k].op != DS_OP_RELU ||
            steps[k].skip)
            continue;
        c->epilogue = DS_CU_EPI_CUDNN_BIAS_ADD_RELU;
        c->act = DS_ACT_RELU;
        c->act_lo = 0.0f;
        c->z = z;
        c->out = g->nodes[k].output;
        steps[j].skip = true;
        steps[k].skip = true;
        fused++;
    }
    return fused;
}

static void touch(uint32_t *first, uint32_t *last, bool *live, uint32_t t, uint32_t step) {
    if (!live[t]) {
        live[t] = true;
        first[t] = last[t] = step;
        return;
    }
    if (step < first[t]) first[t] = step;
    if (step > last[t]) last[t] = step;
}

dstack_status ds_cu_lifetimes(const ds_graph *g, const ds_cu_step *steps, uint32_t *first,
                              uint32_t *last, bool *live) {
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        live[t] = false;
        first[t] = last[t] = 0;
    }
    for (uint32_t i = 0; i < g->n_inputs; i++) touch(first, last, live, g->inputs[i], 0);
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        if (steps && steps[i].skip) continue;
        const ds_node *n = &g->nodes[i];
        for (uint32_t j = 0; j < n->n_inputs; j++)
            if (n->inputs[j] != DS_TENSOR_NONE) {
                if (n->inputs[j] >= g->n_tensors)
                    return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "node %u reads tensor %u of %u", i,
                                   n->inputs[j], g->n_tensors);
                touch(first, last, live, n->inputs[j], i);
            }
        if (steps && steps[i].z != DS_TENSOR_NONE) touch(first, last, live, steps[i].z, i);
        touch(first, last, live, steps ? steps[i].out : n->output, i);
    }
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        if (g->tensors[t].kind == DS_TENSOR_CONST) live[t] = false;
        else if (live[t] && is_graph_output(g, t)) last[t] = g->n_nodes; /* read back at the end */
    }
    return DSTACK_OK;
}

typedef struct mem_item {
    uint32_t tensor, first, last;
    uint64_t bytes, offset;
} mem_item;

static int by_size_desc(const void *pa, const void *pb) {
    const mem_item *a = pa, *b = pb;
    if (a->bytes != b->bytes) return a->bytes < b->bytes ? 1 : -1;
    return a->tensor < b->tensor ? -1 : a->tensor > b->tensor;
}

static int by_offset(const void *pa, const void *pb) {
    const mem_item *const *a = pa, *const *b = pb;
    return (*a)->offset < (*b)->offset ? -1 : (*a)->offset > (*b)->offset;
}

dstack_status ds_cu_plan_memory(const ds_graph *g, const ds_cu_step *steps, uint32_t batch_mult,
                                uint64_t align, uint64_t *offsets, uint64_t *arena_bytes,
                                uint64_t *sum_bytes) {
    if (align == 0 || (align & (align - 1)))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "memory plan: alignment %llu",
                       (unsigned long long)align);
    size_t nt = g->n_tensors ? g->n_tensors : 1;
    mem_item *items = calloc(nt, sizeof *items);
    const mem_item **placed = calloc(nt, sizeof *placed);
    uint32_t *first = calloc(nt, sizeof *first), *last = calloc(nt, sizeof *last);
    bool *live = calloc(nt, sizeof *live);
    dstack_status st = DSTACK_OK;
    if (!items || !placed || !first || !last || !live)
        st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "memory plan of %u tensors", g->n_tensors);
    if (st == DSTACK_OK) st = ds_cu_lifetimes(g, steps, first, last, live);
    if (st != DSTACK_OK) {
        free(items);
        free((void *)placed);
        free(first);
        free(last);
        free(live);
        return st;
    }
    uint32_t n = 0;
    uint64_t sum = 0;
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        offsets[t] = DS_CU_NO_OFFSET;
        mem_item it = {.tensor = t, .first = first[t], .last = last[t]};
        if (!live[t]) continue;
        uint64_t b = (uint64_t)ds_tensor_numel(&g->tensors[t]) * sizeof(float) * batch_mult;
        it.bytes = (b + align - 1) & ~(align - 1);
        if (it.bytes == 0) it.bytes = align;
        sum += it.bytes;
        items[n++] = it;
    }
    qsort(items, n, sizeof *items, by_size_desc);
    uint64_t arena = 0;
    uint32_t n_placed = 0;
    for (uint32_t i = 0; i < n; i++) {
        mem_item *it = &items[i];
        /* conflicts: placed items whose lifetimes overlap, scanned by offset */
        uint32_t nc = 0;
        for (uint32_t j = 0; j < n_placed; j++)
            if (placed[j]->first <= it->last && it->first <= placed[j]->last) placed[nc++] = placed[j];
        /* placed[0..nc) now holds the conflicts; the rest were moved out: rebuild below */
        qsort((void *)placed, nc, sizeof *placed, by_offset);
        uint64_t off = 0;
        for (uint32_t j = 0; j < nc; j++) {
            if (off + it->bytes <= placed[j]->offset) break;
            uint64_t end = placed[j]->offset + placed[j]->bytes;
            if (end > off) off = end;
        }
        it->offset = off;
        if (off + it->bytes > arena) arena = off + it->bytes;
        /* restore the full placed list: items[0..i] are exactly the placed ones */
        n_placed = 0;
        for (uint32_t j = 0; j <= i; j++) placed[n_placed++] = &items[j];
    }
    for (uint32_t i = 0; i < n; i++) offsets[items[i].tensor] = items[i].offset;
    free(items);
    free((void *)placed);
    free(first);
    free(last);
    free(live);
    *arena_bytes = arena;
    if (sum_bytes) *sum_bytes = sum;
    return DSTACK_OK;
}

void ds_cu_program_free(ds_cu_program *p) {
    free(p->steps);
    free(p->offsets);
    free(p->weight_offsets);
    memset(p, 0, sizeof *p);
}

dstack_status ds_cu_program_build(const ds_graph *g, uint32_t max_batch, ds_cu_program *out) {
    memset(out, 0, sizeof *out);
    if (!g || !g->finalized) return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "graph is not finalized");
    if (max_batch == 0) return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "max_batch is 0");
    out->batch_mult = g->batchable ? max_batch : 1;
    out->n_steps = g->n_nodes;
    out->steps = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *out->steps);
    out->offsets = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *out->offsets);
    out->weight_offsets = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *out->weight_offsets);
    if (!out->steps || !out->offsets || !out->weight_offsets) {
        ds_cu_program_free(out);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cuda program of %u nodes", g->n_nodes);
    }
    dstack_status st = DSTACK_OK;
    for (uint32_t i = 0; i < g->n_nodes && st == DSTACK_OK; i++)
        st = ds_cu_step_plan(g, i, &out->steps[i]);
    if (st == DSTACK_OK) {
        out->n_fused = ds_cu_fuse_residual(g, out->steps);
        st = ds_cu_plan_memory(g, out->steps, out->batch_mult, DS_CU_ALIGN, out->offsets,
                               &out->arena_bytes, &out->tensor_bytes_sum);
    }
    if (st != DSTACK_OK) {
        ds_cu_program_free(out);
        return st;
    }
    uint64_t w = 0;
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        out->weight_offsets[t] = DS_CU_NO_OFFSET;
        if (g->tensors[t].kind != DS_TENSOR_CONST) continue;
        out->weight_offsets[t] = w;
        uint64_t b = (uint64_t)ds_tensor_numel(&g->tensors[t]) * sizeof(float);
        w += (b + DS_CU_ALIGN - 1) & ~(uint64_t)(DS_CU_ALIGN - 1);
    }
    out->weights_bytes = w;
    return DSTACK_OK;
}
