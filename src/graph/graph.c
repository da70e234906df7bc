/* graph.c - building the IR, shape inference, the batchable decision and
 * the queries. The folding pass lives in fold.c.
 *
 * Shape inference follows ONNX exactly (conv/pool output sizes with pads,
 * dilation and ceil_mode; numpy broadcasting; Gemm/MatMul rules; Reshape
 * 0/-1/allowzero) so that the executors can trust every stored shape and
 * never re-derive one. */
#include "graph/graph.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/fault.h"

/* ---- building ---- */

static char *dup_str(const char *s)
{
    if (!s)
        s = "";
    size_t n = strlen(s) + 1;
    char *d = ds_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

ds_graph *ds_graph_new(const char *name)
{
    ds_graph *g = ds_calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->name = dup_str(name);
    if (!g->name) {
        free(g);
        return NULL;
    }
    return g;
}

void ds_graph_free(ds_graph *g)
{
    if (!g)
        return;
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        free(g->tensors[i].name);
        free(g->tensors[i].data);
    }
    for (uint32_t i = 0; i < g->n_nodes; i++)
        free(g->nodes[i].name);
    free(g->tensors);
    free(g->nodes);
    free(g->name);
    free(g);
}

void ds_op_attrs_init(ds_op_attrs *a)
{
    memset(a, 0, sizeof *a);
    a->stride[0] = a->stride[1] = 1;
    a->dilation[0] = a->dilation[1] = 1;
    a->group = 1;
    a->alpha = 1.0f;
    a->beta = 1.0f;
    a->bias = 1.0f;
    a->epsilon = 1e-5f;
    a->clip_min = -INFINITY;
    a->clip_max = INFINITY;
    a->activation = DS_ACT_NONE;
}

/* Make room for one more element of an array that doubles as it grows. */
static bool grow_array(void **array, uint32_t *cap, uint32_t used, size_t elem_size)
{
    if (used < *cap)
        return true;
    uint32_t new_cap = *cap ? *cap * 2 : 32;
    void *grown = ds_realloc(*array, (size_t)new_cap * elem_size);
    if (!grown)
        return false;
    *array = grown;
    *cap = new_cap;
    return true;
}

/* A new tensor slot (zeroed, name copied), or DS_TENSOR_NONE. */
static uint32_t new_tensor(ds_graph *g, const char *name, ds_tensor_kind kind, uint32_t rank,
                           const int64_t *dims)
{
    if (rank > DS_MAX_RANK) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "tensor '%s': rank %u exceeds the maximum %d",
                name ? name : "", rank, DS_MAX_RANK);
        return DS_TENSOR_NONE;
    }
    if (rank > 0 && !dims) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "tensor '%s': dims is NULL", name ? name : "");
        return DS_TENSOR_NONE;
    }
    if (g->n_tensors >= UINT32_MAX - 1) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "graph '%s': too many tensors", g->name);
        return DS_TENSOR_NONE;
    }
    if (!grow_array((void **)&g->tensors, &g->cap_tensors, g->n_tensors, sizeof *g->tensors)) {
        ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "graph '%s': no memory for tensors", g->name);
        return DS_TENSOR_NONE;
    }
    ds_tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = dup_str(name);
    if (!t->name) {
        ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "graph '%s': no memory for a tensor name", g->name);
        return DS_TENSOR_NONE;
    }
    t->kind = kind;
    t->rank = rank;
    for (uint32_t i = 0; i < rank; i++)
        t->dims[i] = dims[i];
    t->producer = UINT32_MAX;
    g->finalized = false;
    return g->n_tensors++;
}

uint32_t ds_graph_add_input(ds_graph *g, const char *name, uint32_t rank, const int64_t *dims)
{
    if (!g) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_graph_add_input: graph is NULL");
        return DS_TENSOR_NONE;
    }
    if (g->n_inputs >= DSTACK_MAX_IO) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "graph '%s': more than %d inputs", g->name,
                DSTACK_MAX_IO);
        return DS_TENSOR_NONE;
    }
    uint32_t id = new_tensor(g, name, DS_TENSOR_INPUT, rank, dims);
    if (id != DS_TENSOR_NONE)
        g->inputs[g->n_inputs++] = id;
    return id;
}

uint32_t ds_graph_add_const(ds_graph *g, const char *name, uint32_t rank, const int64_t *dims,
                            float *data)
{
    if (!g) {
        free(data);
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_graph_add_const: graph is NULL");
        return DS_TENSOR_NONE;
    }
    for (uint32_t i = 0; i < rank && i < DS_MAX_RANK && dims; i++) {
        if (dims[i] <= 0) {
            free(data);
            ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "constant '%s': dim %u is %lld, must be > 0",
                    name ? name : "", i, (long long)dims[i]);
            return DS_TENSOR_NONE;
        }
    }
    if (!data) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "constant '%s': data is NULL", name ? name : "");
        return DS_TENSOR_NONE;
    }
    uint32_t id = new_tensor(g, name, DS_TENSOR_CONST, rank, dims);
    if (id == DS_TENSOR_NONE) {
        free(data);
        return id;
    }
    g->tensors[id].data = data;
    return id;
}

uint32_t ds_graph_add_node(ds_graph *g, ds_op_kind op, const char *name, const uint32_t *inputs,
                           uint32_t n_inputs, const ds_op_attrs *attrs, const char *output_name)
{
    if (!g) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_graph_add_node: graph is NULL");
        return DS_TENSOR_NONE;
    }
    const char *nn = name ? name : "";
    if ((unsigned)op >= DS_OP_COUNT) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "node '%s': unknown op kind %d", nn, (int)op);
        return DS_TENSOR_NONE;
    }
    if (n_inputs > DS_NODE_MAX_INPUTS || (n_inputs > 0 && !inputs)) {
        ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "node '%s' (%s): %u inputs (at most %d)", nn,
                ds_op_name(op), n_inputs, DS_NODE_MAX_INPUTS);
        return DS_TENSOR_NONE;
    }
    for (uint32_t i = 0; i < n_inputs; i++) {
        if (inputs[i] != DS_TENSOR_NONE && inputs[i] >= g->n_tensors) {
            ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "node '%s' (%s): input %u is tensor id %u, "
                    "the graph has %u tensors", nn, ds_op_name(op), i, inputs[i], g->n_tensors);
            return DS_TENSOR_NONE;
        }
    }
    if (!grow_array((void **)&g->nodes, &g->cap_nodes, g->n_nodes, sizeof *g->nodes)) {
        ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "graph '%s': no memory for nodes", g->name);
        return DS_TENSOR_NONE;
    }
    char gen[96];
    if (!output_name) {
        snprintf(gen, sizeof gen, "%s_%u_out", ds_op_name(op), g->n_nodes);
        output_name = gen;
    }
    ds_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = dup_str(nn);
    if (!n->name) {
        ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "graph '%s': no memory for a node name", g->name);
        return DS_TENSOR_NONE;
    }
    uint32_t out = new_tensor(g, output_name, DS_TENSOR_ACTIVATION, 0, NULL);
    if (out == DS_TENSOR_NONE) {
        free(n->name);
        n->name = NULL;
        return DS_TENSOR_NONE;
    }
    n->op = op;
    n->n_inputs = n_inputs;
    for (uint32_t i = 0; i < n_inputs; i++)
        n->inputs[i] = inputs[i];
    if (attrs)
        n->attrs = *attrs;
    else
        ds_op_attrs_init(&n->attrs);
    n->output = out;
    g->tensors[out].producer = g->n_nodes;
    g->n_nodes++;
    g->finalized = false;
    return out;
}

dstack_status ds_graph_mark_output(ds_graph *g, uint32_t tensor)
{
    if (!g)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_graph_mark_output: graph is NULL");
    if (tensor >= g->n_tensors)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "graph '%s': output tensor id %u out of range",
                       g->name, tensor);
    if (g->tensors[tensor].is_output)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "graph '%s': tensor '%s' is already an output",
                       g->name, g->tensors[tensor].name);
    if (g->n_outputs >= DSTACK_MAX_IO)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "graph '%s': more than %d outputs", g->name,
                       DSTACK_MAX_IO);
    g->tensors[tensor].is_output = true;
    g->outputs[g->n_outputs++] = tensor;
    g->finalized = false;
    return DSTACK_OK;
}

/* ---- shape inference ---- */

typedef struct shape {
    uint32_t rank;
    int64_t d[DS_MAX_RANK];
} shape;

static const char *const op_names[DS_OP_COUNT] = {
    [DS_OP_CONV] = "Conv",
    [DS_OP_BATCHNORM] = "BatchNormalization",
    [DS_OP_RELU] = "Relu",
    [DS_OP_CLIP] = "Clip",
    [DS_OP_LEAKY_RELU] = "LeakyRelu",
    [DS_OP_SIGMOID] = "Sigmoid",
    [DS_OP_TANH] = "Tanh",
    [DS_OP_HARD_SIGMOID] = "HardSigmoid",
    [DS_OP_HARD_SWISH] = "HardSwish",
    [DS_OP_PRELU] = "PRelu",
    [DS_OP_MAXPOOL] = "MaxPool",
    [DS_OP_AVGPOOL] = "AveragePool",
    [DS_OP_GLOBAL_AVGPOOL] = "GlobalAveragePool",
    [DS_OP_GLOBAL_MAXPOOL] = "GlobalMaxPool",
    [DS_OP_GEMM] = "Gemm",
    [DS_OP_MATMUL] = "MatMul",
    [DS_OP_ADD] = "Add",
    [DS_OP_MUL] = "Mul",
    [DS_OP_SUM] = "Sum",
    [DS_OP_CONCAT] = "Concat",
    [DS_OP_FLATTEN] = "Flatten",
    [DS_OP_RESHAPE] = "Reshape",
    [DS_OP_TRANSPOSE] = "Transpose",
    [DS_OP_SOFTMAX] = "Softmax",
    [DS_OP_LRN] = "LRN",
    [DS_OP_IDENTITY] = "Identity",
};

const char *ds_op_name(ds_op_kind op)
{
    if ((unsigned)op >= DS_OP_COUNT || !op_names[op])
        return "Unknown";
    return op_names[op];
}

static void shape_str(const ds_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (uint32_t i = 0; i < t->rank && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? "x%lld" : "%lld", (long long)t->dims[i]);
    if (off < n)
        snprintf(buf + off, n - off, "]");
}

/* Context for the messages of one node. */
typedef struct infer_ctx {
    ds_graph *g;
    uint32_t node_idx;
    const ds_node *n;
} infer_ctx;

static dstack_status shape_fail(const infer_ctx *c, const char *fmt, ...) DS_PRINTF(2, 3);

static dstack_status shape_fail(const infer_ctx *c, const char *fmt, ...)
{
    char reason[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return ds_fail(DSTACK_ERR_SHAPE, "node %u '%s' (%s): %s", c->node_idx, c->n->name,
                   ds_op_name(c->n->op), reason);
}

static const ds_tensor *in_t(const infer_ctx *c, uint32_t i)
{
    if (i >= c->n->n_inputs || c->n->inputs[i] == DS_TENSOR_NONE)
        return NULL;
    return &c->g->tensors[c->n->inputs[i]];
}

static void set_shape(shape *s, const ds_tensor *t)
{
    s->rank = t->rank;
    for (uint32_t i = 0; i < t->rank; i++)
        s->d[i] = t->dims[i];
}

/* Inputs 0..required-1 must be present; at most `max` inputs in all. */
static dstack_status check_arity(const infer_ctx *c, uint32_t required, uint32_t max)
{
    if (c->n->n_inputs < required || c->n->n_inputs > max)
        return shape_fail(c, "has %u inputs, expects %u..%u", c->n->n_inputs, required, max);
    for (uint32_t i = 0; i < required; i++)
        if (c->n->inputs[i] == DS_TENSOR_NONE)
            return shape_fail(c, "required input %u is missing", i);
    return DSTACK_OK;
}

static dstack_status check_rank(const infer_ctx *c, uint32_t i, uint32_t rank)
{
    const ds_tensor *t = in_t(c, i);
    if (t->rank != rank) {
        char b[128];
        shape_str(t, b, sizeof b);
        return shape_fail(c, "input %u '%s' has shape %s, expects rank %u", i, t->name, b, rank);
    }
    return DSTACK_OK;
}

/* Multidirectional (numpy) broadcast of `t` into `acc`. */
static dstack_status broadcast_into(const infer_ctx *c, shape *acc, const ds_tensor *t, uint32_t idx)
{
    uint32_t r = acc->rank > t->rank ? acc->rank : t->rank;
    shape out = {.rank = r};
    for (uint32_t i = 0; i < r; i++) {
        int64_t a = i + acc->rank >= r ? acc->d[i + acc->rank - r] : 1;
        int64_t b = i + t->rank >= r ? t->dims[i + t->rank - r] : 1;
        if (a != b && a != 1 && b != 1) {
            char sb[128];
            shape_str(t, sb, sizeof sb);
            return shape_fail(c, "input %u '%s' %s does not broadcast: dim %lld vs %lld", idx,
                              t->name, sb, (long long)b, (long long)a);
        }
        out.d[i] = a == 1 ? b : a;
    }
    *acc = out;
    return DSTACK_OK;
}

/* Can `t` be unidirectionally broadcast to `target` (PRelu slope, Gemm C)? */
static bool unidirectional_ok(const ds_tensor *t, const shape *target)
{
    if (t->rank > target->rank)
        return false;
    for (uint32_t i = 0; i < t->rank; i++) {
        int64_t td = target->d[target->rank - t->rank + i];
        if (t->dims[i] != 1 && t->dims[i] != td)
            return false;
    }
    return true;
}

/* ONNX window count along one spatial axis. */
static dstack_status window_out(const infer_ctx *c, const char *axis, int64_t in, uint32_t k,
                                uint32_t s, uint32_t d, uint32_t p0, uint32_t p1, bool ceil_mode,
                                int64_t *out)
{
    if (k == 0 || s == 0 || d == 0)
        return shape_fail(c, "kernel %u, stride %u, dilation %u along %s must all be > 0", k, s,
                          d, axis);
    int64_t eff_k = (int64_t)d * (k - 1) + 1;
    int64_t span = in + p0 + p1 - eff_k;
    if (span < 0)
        return shape_fail(c, "window %lld (kernel %u, dilation %u) exceeds padded %s %lld", (long long)eff_k,
                          k, d, axis, (long long)(in + p0 + p1));
    int64_t o;
    if (ceil_mode) {
        o = (span + s - 1) / s + 1;
        /* The last window must start inside the input or the left padding
         * (PyTorch's rule, adopted by the ONNX reference). */
        if ((o - 1) * (int64_t)s >= in + p0)
            o--;
    } else {
        o = span / s + 1;
    }
    if (o < 1)
        return shape_fail(c, "output %s would be %lld", axis, (long long)o);
    *out = o;
    return DSTACK_OK;
}

static dstack_status infer_conv(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 2, 3);
    if (st) return st;
    if ((st = check_rank(c, 0, 4)) || (st = check_rank(c, 1, 4)))
        return st;
    const ds_tensor *x = in_t(c, 0), *w = in_t(c, 1), *b = in_t(c, 2);
    ds_op_attrs *a = &c->g->nodes[c->node_idx].attrs;
    uint32_t grp = a->group;
    if (grp == 0)
        return shape_fail(c, "group is 0");
    int64_t C = x->dims[1], M = w->dims[0];
    if (C % grp != 0 || M % grp != 0)
        return shape_fail(c, "channels in %lld / out %lld not divisible by group %u",
                          (long long)C, (long long)M, grp);
    if (w->dims[1] * grp != C)
        return shape_fail(c, "weight '%s' has %lld input channels per group, input has %lld "
                          "channels in %u groups", w->name, (long long)w->dims[1], (long long)C, grp);
    for (int i = 0; i < 2; i++) {
        if (a->kernel[i] == 0)
            a->kernel[i] = (uint32_t)w->dims[2 + i];
        else if (a->kernel[i] != w->dims[2 + i])
            return shape_fail(c, "kernel_shape %ux%u differs from weight %lldx%lld", a->kernel[0],
                              a->kernel[1], (long long)w->dims[2], (long long)w->dims[3]);
    }
    if (b && (b->rank != 1 || b->dims[0] != M))
        return shape_fail(c, "bias '%s' must be [%lld]", b->name, (long long)M);
    o->rank = 4;
    o->d[0] = x->dims[0];
    o->d[1] = M;
    if ((st = window_out(c, "height", x->dims[2], a->kernel[0], a->stride[0], a->dilation[0],
                         a->pads[0], a->pads[2], false, &o->d[2])))
        return st;
    return window_out(c, "width", x->dims[3], a->kernel[1], a->stride[1], a->dilation[1],
                      a->pads[1], a->pads[3], false, &o->d[3]);
}

static dstack_status infer_pool(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st || (st = check_rank(c, 0, 4)))
        return st;
    const ds_tensor *x = in_t(c, 0);
    const ds_op_attrs *a = &c->n->attrs;
    set_shape(o, x);
    if ((st = window_out(c, "height", x->dims[2], a->kernel[0], a->stride[0], a->dilation[0],
                         a->pads[0], a->pads[2], a->ceil_mode, &o->d[2])))
        return st;
    if ((st = window_out(c, "width", x->dims[3], a->kernel[1], a->stride[1], a->dilation[1],
                         a->pads[1], a->pads[3], a->ceil_mode, &o->d[3])))
        return st;
    /* A window lying wholly in the padding has nothing to pool. */
    for (int i = 0; i < 4; i++) {
        uint32_t eff_k = a->dilation[i % 2] * (a->kernel[i % 2] - 1) + 1;
        if (a->pads[i] >= eff_k)
            return shape_fail(c, "pad %u (%s) must be smaller than the window %u", a->pads[i],
                              i % 2 ? "width" : "height", eff_k);
    }
    return DSTACK_OK;
}

static dstack_status infer_global_pool(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    if (x->rank < 3)
        return shape_fail(c, "input '%s' has rank %u, expects N,C,spatial...", x->name, x->rank);
    set_shape(o, x);
    for (uint32_t i = 2; i < o->rank; i++)
        o->d[i] = 1;
    return DSTACK_OK;
}

static dstack_status infer_batchnorm(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 5, 5);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    if (x->rank < 2)
        return shape_fail(c, "input '%s' has rank %u, expects N,C,...", x->name, x->rank);
    for (uint32_t i = 1; i < 5; i++) {
        const ds_tensor *p = in_t(c, i);
        if (p->rank != 1 || p->dims[0] != x->dims[1])
            return shape_fail(c, "parameter %u '%s' must be [%lld] (the channels)", i, p->name,
                              (long long)x->dims[1]);
    }
    set_shape(o, x);
    return DSTACK_OK;
}

static dstack_status infer_unary(const infer_ctx *c, shape *o)
{
    /* Clip may carry its min/max as (optional) inputs 1 and 2: scalars. */
    uint32_t max = c->n->op == DS_OP_CLIP ? 3 : 1;
    dstack_status st = check_arity(c, 1, max);
    if (st)
        return st;
    for (uint32_t i = 1; i < c->n->n_inputs; i++) {
        const ds_tensor *t = in_t(c, i);
        if (t && ds_tensor_numel(t) != 1)
            return shape_fail(c, "bound input %u '%s' must be a scalar", i, t->name);
    }
    set_shape(o, in_t(c, 0));
    return DSTACK_OK;
}

static dstack_status infer_prelu(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 2, 2);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0), *s = in_t(c, 1);
    set_shape(o, x);
    if (!unidirectional_ok(s, o)) {
        char a[128], b[128];
        shape_str(s, a, sizeof a);
        shape_str(x, b, sizeof b);
        return shape_fail(c, "slope '%s' %s does not broadcast to input %s", s->name, a, b);
    }
    return DSTACK_OK;
}

static dstack_status infer_gemm(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 2, 3);
    if (st || (st = check_rank(c, 0, 2)) || (st = check_rank(c, 1, 2)))
        return st;
    const ds_tensor *A = in_t(c, 0), *B = in_t(c, 1), *C = in_t(c, 2);
    const ds_op_attrs *a = &c->n->attrs;
    int64_t M = a->trans_a ? A->dims[1] : A->dims[0];
    int64_t K = a->trans_a ? A->dims[0] : A->dims[1];
    int64_t K2 = a->trans_b ? B->dims[1] : B->dims[0];
    int64_t N = a->trans_b ? B->dims[0] : B->dims[1];
    if (K != K2)
        return shape_fail(c, "inner dimensions differ: A gives K=%lld, B gives K=%lld",
                          (long long)K, (long long)K2);
    o->rank = 2;
    o->d[0] = M;
    o->d[1] = N;
    if (C && !unidirectional_ok(C, o)) {
        char b[128];
        shape_str(C, b, sizeof b);
        return shape_fail(c, "C '%s' %s does not broadcast to [%lld,%lld]", C->name, b,
                          (long long)M, (long long)N);
    }
    return DSTACK_OK;
}

static dstack_status infer_matmul(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 2, 2);
    if (st)
        return st;
    const ds_tensor *A = in_t(c, 0), *B = in_t(c, 1);
    if (A->rank < 1 || B->rank < 1)
        return shape_fail(c, "operands must have rank >= 1 (got %u and %u)", A->rank, B->rank);
    /* Promote 1-D operands as numpy does, then drop the added axes. */
    shape a, b;
    set_shape(&a, A);
    set_shape(&b, B);
    if (a.rank == 1) {
        a.rank = 2;
        a.d[1] = a.d[0];
        a.d[0] = 1;
    }
    if (b.rank == 1) {
        b.rank = 2;
        b.d[1] = 1;
    }
    int64_t M = a.d[a.rank - 2], K = a.d[a.rank - 1];
    int64_t K2 = b.d[b.rank - 2], N = b.d[b.rank - 1];
    if (K != K2)
        return shape_fail(c, "inner dimensions differ: %lld vs %lld", (long long)K, (long long)K2);
    uint32_t ba = a.rank - 2, bb = b.rank - 2;
    uint32_t br = ba > bb ? ba : bb;
    shape out = {.rank = 0};
    for (uint32_t i = 0; i < br; i++) {
        int64_t x = i + ba >= br ? a.d[i + ba - br] : 1;
        int64_t y = i + bb >= br ? b.d[i + bb - br] : 1;
        if (x != y && x != 1 && y != 1)
            return shape_fail(c, "batch dimensions do not broadcast: %lld vs %lld", (long long)x,
                              (long long)y);
        out.d[out.rank++] = x == 1 ? y : x;
    }
    if (A->rank > 1)
        out.d[out.rank++] = M;
    if (B->rank > 1)
        out.d[out.rank++] = N;
    if (out.rank > DS_MAX_RANK)
        return shape_fail(c, "result rank exceeds %d", DS_MAX_RANK);
    *o = out;
    return DSTACK_OK;
}

static dstack_status infer_broadcast(const infer_ctx *c, shape *o)
{
    dstack_status st = c->n->op == DS_OP_SUM ? check_arity(c, 1, DS_NODE_MAX_INPUTS)
                                             : check_arity(c, 2, 2);
    if (st)
        return st;
    for (uint32_t i = 0; i < c->n->n_inputs; i++)
        if (!in_t(c, i))
            return shape_fail(c, "input %u is missing", i);
    set_shape(o, in_t(c, 0));
    for (uint32_t i = 1; i < c->n->n_inputs; i++)
        if ((st = broadcast_into(c, o, in_t(c, i), i)))
            return st;
    return DSTACK_OK;
}

static dstack_status infer_concat(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, DS_NODE_MAX_INPUTS);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    int32_t axis = c->n->attrs.axis;
    if (axis < 0 || (uint32_t)axis >= x->rank)
        return shape_fail(c, "axis %d out of range for rank %u", axis, x->rank);
    set_shape(o, x);
    for (uint32_t i = 1; i < c->n->n_inputs; i++) {
        const ds_tensor *t = in_t(c, i);
        if (!t)
            return shape_fail(c, "input %u is missing", i);
        if (t->rank != x->rank)
            return shape_fail(c, "input %u '%s' has rank %u, input 0 has rank %u", i, t->name,
                              t->rank, x->rank);
        for (uint32_t d = 0; d < x->rank; d++) {
            if (d == (uint32_t)axis)
                continue;
            if (t->dims[d] != x->dims[d])
                return shape_fail(c, "input %u '%s' dim %u is %lld, input 0 has %lld", i, t->name,
                                  d, (long long)t->dims[d], (long long)x->dims[d]);
        }
        o->d[axis] += t->dims[axis];
    }
    return DSTACK_OK;
}

static dstack_status infer_flatten(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    int32_t axis = c->n->attrs.axis;
    if (axis < 0 || (uint32_t)axis > x->rank)
        return shape_fail(c, "axis %d out of range for rank %u", axis, x->rank);
    int64_t outer = 1, inner = 1;
    for (uint32_t i = 0; i < x->rank; i++) {
        if (i < (uint32_t)axis)
            outer *= x->dims[i];
        else
            inner *= x->dims[i];
    }
    o->rank = 2;
    o->d[0] = outer;
    o->d[1] = inner;
    return DSTACK_OK;
}

static dstack_status infer_reshape(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    const ds_op_attrs *a = &c->n->attrs;
    if (a->shape_rank > DS_MAX_RANK)
        return shape_fail(c, "target rank %u exceeds %d", a->shape_rank, DS_MAX_RANK);
    int64_t numel = ds_tensor_numel(x), known = 1;
    int infer_at = -1;
    o->rank = a->shape_rank;
    for (uint32_t i = 0; i < a->shape_rank; i++) {
        int64_t s = a->shape[i];
        if (s == -1) {
            if (infer_at >= 0)
                return shape_fail(c, "more than one -1 in the target shape");
            infer_at = (int)i;
            continue;
        }
        if (s < -1)
            return shape_fail(c, "target dim %u is %lld", i, (long long)s);
        if (s == 0 && !a->allowzero) {
            if (i >= x->rank)
                return shape_fail(c, "target dim %u is 0 (copy) but the input has rank %u", i,
                                  x->rank);
            s = x->dims[i];
        }
        if (s == 0)
            return shape_fail(c, "target dim %u is 0 with allowzero: empty tensors are not "
                              "supported", i);
        o->d[i] = s;
        known *= s;
    }
    if (infer_at >= 0) {
        if (known == 0 || numel % known != 0)
            return shape_fail(c, "cannot infer -1: %lld elements into a multiple of %lld",
                              (long long)numel, (long long)known);
        o->d[infer_at] = numel / known;
        known *= o->d[infer_at];
    }
    if (known != numel) {
        char b[128];
        shape_str(x, b, sizeof b);
        return shape_fail(c, "input %s has %lld elements, target has %lld", b, (long long)numel,
                          (long long)known);
    }
    return DSTACK_OK;
}

static dstack_status infer_transpose(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    ds_op_attrs *a = &c->g->nodes[c->node_idx].attrs;
    bool all_zero = true;
    for (uint32_t i = 0; i < x->rank; i++)
        all_zero = all_zero && a->perm[i] == 0;
    if (all_zero && x->rank > 1) /* not set: ONNX's default reverses the axes */
        for (uint32_t i = 0; i < x->rank; i++)
            a->perm[i] = x->rank - 1 - i;
    bool seen[DS_MAX_RANK] = {false};
    o->rank = x->rank;
    for (uint32_t i = 0; i < x->rank; i++) {
        uint32_t p = a->perm[i];
        if (p >= x->rank || seen[p])
            return shape_fail(c, "perm is not a permutation of 0..%u", x->rank - 1);
        seen[p] = true;
        o->d[i] = x->dims[p];
    }
    return DSTACK_OK;
}

static dstack_status infer_softmax(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    int32_t axis = c->n->attrs.axis;
    if (axis < 0 || (uint32_t)axis >= x->rank)
        return shape_fail(c, "axis %d out of range for rank %u", axis, x->rank);
    set_shape(o, x);
    return DSTACK_OK;
}

static dstack_status infer_lrn(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st)
        return st;
    const ds_tensor *x = in_t(c, 0);
    if (x->rank < 3)
        return shape_fail(c, "input '%s' has rank %u, expects N,C,spatial...", x->name, x->rank);
    if (c->n->attrs.size == 0)
        return shape_fail(c, "size is 0");
    set_shape(o, x);
    return DSTACK_OK;
}

static dstack_status infer_identity(const infer_ctx *c, shape *o)
{
    dstack_status st = check_arity(c, 1, 1);
    if (st)
        return st;
    set_shape(o, in_t(c, 0));
    return DSTACK_OK;
}

typedef dstack_status (*infer_fn)(const infer_ctx *c, shape *o);

static const infer_fn infer_table[DS_OP_COUNT] = {
    [DS_OP_CONV] = infer_conv,
    [DS_OP_BATCHNORM] = infer_batchnorm,
    [DS_OP_RELU] = infer_unary,
    [DS_OP_CLIP] = infer_unary,
    [DS_OP_LEAKY_RELU] = infer_unary,
    [DS_OP_SIGMOID] = infer_unary,
    [DS_OP_TANH] = infer_unary,
    [DS_OP_HARD_SIGMOID] = infer_unary,
    [DS_OP_HARD_SWISH] = infer_unary,
    [DS_OP_PRELU] = infer_prelu,
    [DS_OP_MAXPOOL] = infer_pool,
    [DS_OP_AVGPOOL] = infer_pool,
    [DS_OP_GLOBAL_AVGPOOL] = infer_global_pool,
    [DS_OP_GLOBAL_MAXPOOL] = infer_global_pool,
    [DS_OP_GEMM] = infer_gemm,
    [DS_OP_MATMUL] = infer_matmul,
    [DS_OP_ADD] = infer_broadcast,
    [DS_OP_MUL] = infer_broadcast,
    [DS_OP_SUM] = infer_broadcast,
    [DS_OP_CONCAT] = infer_concat,
    [DS_OP_FLATTEN] = infer_flatten,
    [DS_OP_RESHAPE] = infer_reshape,
    [DS_OP_TRANSPOSE] = infer_transpose,
    [DS_OP_SOFTMAX] = infer_softmax,
    [DS_OP_LRN] = infer_lrn,
    [DS_OP_IDENTITY] = infer_identity,
};

/* ---- the batchable decision ---- */

static bool is_act(const ds_graph *g, uint32_t id)
{
    return id != DS_TENSOR_NONE && g->tensors[id].kind != DS_TENSOR_CONST;
}

/* Does node `n` keep axis 0 of its activation operands as the batch axis of
 * its output, computing each sample independently? Shapes are inferred. */
static bool node_keeps_batch(const ds_graph *g, const ds_node *n)
{
    const ds_tensor *out = &g->tensors[n->output];
    if (out->rank < 1 || out->dims[0] != 1)
        return false;
    bool any_act = false;
    for (uint32_t i = 0; i < n->n_inputs; i++) {
        uint32_t id = n->inputs[i];
        if (!is_act(g, id))
            continue;
        any_act = true;
        const ds_tensor *t = &g->tensors[id];
        if (t->rank < 1 || t->dims[0] != 1)
            return false;
    }
    if (!any_act) /* computed from constants only: not per sample */
        return false;
    const ds_op_attrs *a = &n->attrs;
    switch (n->op) {
    case DS_OP_CONV:
    case DS_OP_BATCHNORM:
    case DS_OP_GEMM:
    case DS_OP_LRN:
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL:
    case DS_OP_GLOBAL_AVGPOOL:
    case DS_OP_GLOBAL_MAXPOOL:
    case DS_OP_RELU:
    case DS_OP_CLIP:
    case DS_OP_LEAKY_RELU:
    case DS_OP_SIGMOID:
    case DS_OP_TANH:
    case DS_OP_HARD_SIGMOID:
    case DS_OP_HARD_SWISH:
    case DS_OP_IDENTITY:
    case DS_OP_MATMUL:
        /* Only the data operand may be an activation; the rest are weights. */
        for (uint32_t i = 1; i < n->n_inputs; i++)
            if (is_act(g, n->inputs[i]))
                return false;
        if (!is_act(g, n->inputs[0]))
            return false;
        if (n->op == DS_OP_GEMM && a->trans_a)
            return false; /* the batch would be the reduced axis */
        if (n->op == DS_OP_MATMUL) {
            const ds_tensor *A = &g->tensors[n->inputs[0]], *B = &g->tensors[n->inputs[1]];
            if (A->rank < 2 || B->rank > A->rank)
                return false;
        }
        return true;
    case DS_OP_PRELU:
    case DS_OP_ADD:
    case DS_OP_MUL:
    case DS_OP_SUM:
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (is_act(g, n->inputs[i]) && g->tensors[n->inputs[i]].rank != out->rank)
                return false;
        return true;
    case DS_OP_CONCAT:
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (!is_act(g, n->inputs[i]))
                return false;
        return a->axis != 0;
    case DS_OP_FLATTEN:
        return a->axis != 0;
    case DS_OP_SOFTMAX:
        return a->axis != 0;
    case DS_OP_TRANSPOSE:
        return a->perm[0] == 0;
    case DS_OP_RESHAPE:
        if (a->shape_rank < 1)
            return false;
        if (a->shape[0] == 1)
            return true;
        return a->shape[0] == 0 && !a->allowzero;
    case DS_OP_COUNT:
        break;
    }
    return false;
}

static bool decide_batchable(const ds_graph *g, const bool *symbolic)
{
    if (g->n_inputs == 0)
        return false;
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const ds_tensor *t = &g->tensors[g->inputs[i]];
        if (t->rank < 1 || (t->dims[0] != 1 && !symbolic[i]))
            return false;
    }
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (!node_keeps_batch(g, &g->nodes[i]))
            return false;
    return true;
}

dstack_status ds_graph_finalize(ds_graph *g)
{
    if (!g)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_graph_finalize: graph is NULL");
    g->finalized = false;
    if (g->n_outputs == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "graph '%s' has no outputs", g->name);
    bool symbolic[DSTACK_MAX_IO] = {false};
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        ds_tensor *t = &g->tensors[g->inputs[i]];
        for (uint32_t d = 0; d < t->rank; d++) {
            if (t->dims[d] > 0)
                continue;
            if (d == 0) { /* symbolic or -1 batch: one request is one sample */
                t->dims[0] = 1;
                symbolic[i] = true;
                continue;
            }
            return ds_fail(DSTACK_ERR_SHAPE, "graph '%s': input '%s' dim %u is %lld, must be > 0",
                           g->name, t->name, d, (long long)t->dims[d]);
        }
    }
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        ds_node *n = &g->nodes[i];
        infer_ctx c = {.g = g, .node_idx = i, .n = n};
        if ((unsigned)n->op >= DS_OP_COUNT)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "node %u '%s': unknown op %d", i, n->name,
                           (int)n->op);
        if (n->output >= g->n_tensors || g->tensors[n->output].producer != i ||
            g->tensors[n->output].kind != DS_TENSOR_ACTIVATION)
            return ds_fail(DSTACK_ERR_INTERNAL, "node %u '%s' (%s): output tensor is not its own",
                           i, n->name, ds_op_name(n->op));
        for (uint32_t k = 0; k < n->n_inputs; k++) {
            uint32_t id = n->inputs[k];
            if (id == DS_TENSOR_NONE)
                continue;
            if (id >= g->n_tensors)
                return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "node %u '%s' (%s): input %u is an "
                               "unknown tensor id %u", i, n->name, ds_op_name(n->op), k, id);
            const ds_tensor *t = &g->tensors[id];
            if (t->kind == DS_TENSOR_ACTIVATION && t->producer >= i)
                return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "node %u '%s' (%s): input %u '%s' "
                               "is used before it is produced", i, n->name, ds_op_name(n->op), k,
                               t->name);
        }
        shape o = {0};
        dstack_status st = infer_table[n->op](&c, &o);
        if (st)
            return st;
        ds_tensor *out = &g->tensors[n->output];
        out->rank = o.rank;
        for (uint32_t d = 0; d < o.rank; d++) {
            if (o.d[d] <= 0)
                return shape_fail(&c, "output dim %u would be %lld", d, (long long)o.d[d]);
            out->dims[d] = o.d[d];
        }
    }
    g->batchable = decide_batchable(g, symbolic);
    g->finalized = true;
    return DSTACK_OK;
}

/* ---- queries ---- */

int64_t ds_tensor_numel(const ds_tensor *t)
{
    int64_t n = 1;
    for (uint32_t i = 0; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

uint64_t ds_graph_param_count(const ds_graph *g)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].kind == DS_TENSOR_CONST)
            n += (uint64_t)ds_tensor_numel(&g->tensors[i]);
    return n;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return a && b > UINT64_MAX / a ? UINT64_MAX : a * b;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

/* Taps visited along one axis, summed over the `out` window positions. */
static uint64_t axis_taps(int64_t out, int64_t in, uint32_t k, uint32_t s, uint32_t d, uint32_t pad)
{
    uint64_t sum = 0;
    int64_t unused;
    for (int64_t o = 0; o < out; o++)
        sum += (uint64_t)ds_window_taps(o * (int64_t)s - pad, k, d, 0, in, &unused);
    return sum;
}

uint64_t ds_graph_node_work(const ds_graph *g, const ds_node *n)
{
    const ds_tensor *out = &g->tensors[n->output];
    uint64_t on = (uint64_t)ds_tensor_numel(out);
    const ds_op_attrs *a = &n->attrs;
    switch (n->op) {
    case DS_OP_CONV: {
        const ds_tensor *w = &g->tensors[n->inputs[1]];
        /* Each output element: C/group * kH * kW multiply-adds. */
        return sat_mul(2ull * on, (uint64_t)(w->dims[1] * w->dims[2] * w->dims[3]));
    }
    case DS_OP_GEMM: {
        const ds_tensor *A = &g->tensors[n->inputs[0]];
        uint64_t K = (uint64_t)(a->trans_a ? A->dims[0] : A->dims[1]);
        return sat_mul(2ull * on, K);
    }
    case DS_OP_MATMUL: {
        const ds_tensor *A = &g->tensors[n->inputs[0]];
        return sat_mul(2ull * on, (uint64_t)A->dims[A->rank - 1]);
    }
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL: {
        const ds_tensor *x = &g->tensors[n->inputs[0]];
        uint64_t th = axis_taps(out->dims[2], x->dims[2], a->kernel[0], a->stride[0],
                                a->dilation[0], a->pads[0]);
        uint64_t tw = axis_taps(out->dims[3], x->dims[3], a->kernel[1], a->stride[1],
                                a->dilation[1], a->pads[1]);
        uint64_t planes = (uint64_t)(out->dims[0] * out->dims[1]);
        return sat_add(sat_mul(planes, sat_mul(th, tw)), on);
    }
    case DS_OP_GLOBAL_AVGPOOL:
    case DS_OP_GLOBAL_MAXPOOL:
        return (uint64_t)ds_tensor_numel(&g->tensors[n->inputs[0]]);
    case DS_OP_LRN: {
        uint64_t C = (uint64_t)out->dims[1];
        return sat_mul(on, 2ull * (a->size < C ? a->size : C) + 1);
    }
    default:
        return on;
    }
}

uint64_t ds_graph_flops(const ds_graph *g)
{
    uint64_t f = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        f = sat_add(f, ds_graph_node_work(g, &g->nodes[i]));
    return f;
}

uint32_t ds_graph_find_tensor(const ds_graph *g, const char *name)
{
    if (!g || !name)
        return DS_TENSOR_NONE;
    for (uint32_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0)
            return i;
    return DS_TENSOR_NONE;
}
