/* onnx_export.c - a finalized ds_graph -> ONNX ModelProto bytes (opset 13).
 *
 * The message is built from protobuf-c structs and packed by the generated
 * code. Every struct, array and string the message points to comes from one
 * arena that is freed after packing, so there is one owner for all of it and
 * no partial message can leak on an error path.
 *
 * What does not map one to one (the reader gets an equivalent graph):
 *  - a Conv/Gemm `activation` (set by ds_graph_fold) becomes a Relu or Clip
 *    node after it, reading "<output>__preact";
 *  - Clip bounds and the Reshape shape become initializers
 *    ("<output>__min", "__max", "__shape"), as opset 13 wants them;
 *  - a legacy (opset < 13) Softmax over a non-last axis becomes
 *    Flatten -> Softmax(axis=1) -> Reshape, its opset-13 equivalent;
 *  - a Reshape with allowzero or a HardSwish raises the opset to 14.
 * A batchable graph gets the symbolic dimension "N" as the first dimension
 * of every input and output.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/onnx_util.h"
#include "onnx.pb-c.h"
#include "util/error.h"

typedef struct arena {
    void **ptrs;
    size_t n, cap;
    bool oom;
} arena;

static void *ar_alloc(arena *ar, size_t size)
{
    if (ar->oom)
        return NULL;
    if (ar->n == ar->cap) {
        size_t cap = ar->cap ? ar->cap * 2 : 256;
        void **p = realloc(ar->ptrs, cap * sizeof *p);
        if (!p) {
            ar->oom = true;
            return NULL;
        }
        ar->ptrs = p;
        ar->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (!m) {
        ar->oom = true;
        return NULL;
    }
    ar->ptrs[ar->n++] = m;
    return m;
}

static void ar_free(arena *ar)
{
    for (size_t i = 0; i < ar->n; i++)
        free(ar->ptrs[i]);
    free(ar->ptrs);
}

static char *ar_str(arena *ar, const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = ar_alloc(ar, n);
    if (c)
        memcpy(c, s, n);
    return c;
}

static char *ar_strf2(arena *ar, const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *c = ar_alloc(ar, n);
    if (c)
        snprintf(c, n, "%s%s", a, b);
    return c;
}

/* A growable array of pointers in the arena (nodes, initializers). */
typedef struct ptr_list {
    void **items;
    size_t n, cap;
} ptr_list;

static void list_push(arena *ar, ptr_list *l, void *item)
{
    if (!item) {
        ar->oom = true;
        return;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void **p = ar_alloc(ar, cap * sizeof *p);
        if (!p)
            return;
        if (l->n)
            memcpy(p, l->items, l->n * sizeof *p);
        l->items = p; /* the old array stays in the arena until the end */
        l->cap = cap;
    }
    l->items[l->n++] = item;
}

typedef struct exporter {
    const ds_graph *g;
    arena ar;
    ptr_list nodes, inits;
    int64_t opset;
} exporter;

/* ---- tensors ---- */

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static Onnx__TensorProto *tensor_proto(exporter *ex, const char *name, int32_t dtype,
                                       uint32_t rank, const int64_t *dims, size_t bytes)
{
    Onnx__TensorProto *tp = ar_alloc(&ex->ar, sizeof *tp);
    if (!tp)
        return NULL;
    onnx__tensor_proto__init(tp);
    tp->name = ar_str(&ex->ar, name);
    tp->has_data_type = 1;
    tp->data_type = dtype;
    tp->n_dims = rank;
    tp->dims = ar_alloc(&ex->ar, sizeof(int64_t) * (rank ? rank : 1));
    if (tp->dims && rank)
        memcpy(tp->dims, dims, sizeof(int64_t) * rank);
    tp->has_raw_data = 1;
    tp->raw_data.len = bytes;
    tp->raw_data.data = ar_alloc(&ex->ar, bytes);
    if (!tp->name || !tp->dims || !tp->raw_data.data)
        return NULL;
    return tp;
}

static void add_float_init(exporter *ex, const char *name, uint32_t rank, const int64_t *dims,
                           const float *data, size_t n)
{
    Onnx__TensorProto *tp = tensor_proto(ex, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, rank,
                                         dims, n * 4);
    if (!tp) {
        ex->ar.oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &data[i], 4);
        put_le32(tp->raw_data.data + 4 * i, u);
    }
    list_push(&ex->ar, &ex->inits, tp);
}

static void add_int64_init(exporter *ex, const char *name, const int64_t *vals, size_t n)
{
    int64_t dim = (int64_t)n;
    Onnx__TensorProto *tp = tensor_proto(ex, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, &dim,
                                         n * 8);
    if (!tp) {
        ex->ar.oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t u = (uint64_t)vals[i];
        put_le32(tp->raw_data.data + 8 * i, (uint32_t)u);
        put_le32(tp->raw_data.data + 8 * i + 4, (uint32_t)(u >> 32));
    }
    list_push(&ex->ar, &ex->inits, tp);
}

static Onnx__ValueInfoProto *value_info(exporter *ex, const ds_tensor *t, bool batch)
{
    arena *ar = &ex->ar;
    Onnx__ValueInfoProto *vi = ar_alloc(ar, sizeof *vi);
    Onnx__TypeProto *type = ar_alloc(ar, sizeof *type);
    Onnx__TypeProto__Tensor *tt = ar_alloc(ar, sizeof *tt);
    Onnx__TensorShapeProto *sh = ar_alloc(ar, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dims = ar_alloc(ar, sizeof *dims * (t->rank + 1));
    if (!vi || !type || !tt || !sh || !dims)
        return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(type);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    vi->name = ar_str(ar, t->name);
    vi->type = type;
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    sh->n_dim = t->rank;
    sh->dim = dims;
    for (uint32_t d = 0; d < t->rank; d++) {
        dims[d] = ar_alloc(ar, sizeof *dims[d]);
        if (!dims[d])
            return NULL;
        onnx__tensor_shape_proto__dimension__init(dims[d]);
        if (d == 0 && batch) {
            dims[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dims[d]->dim_param = ar_str(ar, "N");
        } else {
            dims[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dims[d]->dim_value = t->dims[d];
        }
    }
    return vi->name ? vi : NULL;
}

/* ---- nodes ---- */

static Onnx__NodeProto *new_node(exporter *ex, const char *op, const char *name, size_t n_in,
                                 const char *out)
{
    arena *ar = &ex->ar;
    Onnx__NodeProto *np = ar_alloc(ar, sizeof *np);
    if (!np)
        return NULL;
    onnx__node_proto__init(np);
    np->op_type = ar_str(ar, op);
    np->name = ar_str(ar, name);
    np->domain = ar_str(ar, "");
    np->input = ar_alloc(ar, sizeof(char *) * (n_in ? n_in : 1));
    np->n_input = n_in;
    np->output = ar_alloc(ar, sizeof(char *));
    np->n_output = 1;
    np->attribute = ar_alloc(ar, sizeof(Onnx__AttributeProto *) * 8);
    if (!np->op_type || !np->name || !np->domain || !np->input || !np->output || !np->attribute)
        return NULL;
    np->output[0] = ar_str(ar, out);
    list_push(ar, &ex->nodes, np);
    return np->output[0] ? np : NULL;
}

static Onnx__AttributeProto *new_attr(exporter *ex, Onnx__NodeProto *np, const char *name,
                                      Onnx__AttributeProto__AttributeType type)
{
    if (!np || np->n_attribute >= 8)
        return NULL;
    Onnx__AttributeProto *a = ar_alloc(&ex->ar, sizeof *a);
    if (!a)
        return NULL;
    onnx__attribute_proto__init(a);
    a->name = ar_str(&ex->ar, name);
    a->has_type = 1;
    a->type = type;
    np->attribute[np->n_attribute++] = a;
    return a;
}

static void attr_i(exporter *ex, Onnx__NodeProto *np, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = new_attr(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a) {
        ex->ar.oom = true;
        return;
    }
    a->has_i = 1;
    a->i = v;
}

static void attr_f(exporter *ex, Onnx__NodeProto *np, const char *name, float v)
{
    Onnx__AttributeProto *a = new_attr(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!a) {
        ex->ar.oom = true;
        return;
    }
    a->has_f = 1;
    a->f = v;
}

static void attr_ints_u32(exporter *ex, Onnx__NodeProto *np, const char *name,
                          const uint32_t *v, size_t n)
{
    Onnx__AttributeProto *a = new_attr(ex, np, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *vals = ar_alloc(&ex->ar, sizeof *vals * (n ? n : 1));
    if (!a || !vals) {
        ex->ar.oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        vals[i] = v[i];
    a->n_ints = n;
    a->ints = vals;
}

static const char *tname(const exporter *ex, uint32_t id)
{
    return ex->g->tensors[id].name;
}

static void window(exporter *ex, Onnx__NodeProto *np, const ds_op_attrs *a, bool dilation)
{
    attr_ints_u32(ex, np, "kernel_shape", a->kernel, 2);
    attr_ints_u32(ex, np, "strides", a->stride, 2);
    attr_ints_u32(ex, np, "pads", a->pads, 4);
    if (dilation)
        attr_ints_u32(ex, np, "dilations", a->dilation, 2);
}

/* The fused activation of a Conv/Gemm as its own node; returns the name the
 * Conv/Gemm itself must write. */
static const char *activation_tail(exporter *ex, const ds_node *n)
{
    const char *out = tname(ex, n->output);
    if (n->attrs.activation == DS_ACT_NONE)
        return out;
    char *pre = ar_strf2(&ex->ar, out, "__preact");
    if (!pre) {
        ex->ar.oom = true;
        return out;
    }
    return pre;
}

static void emit_activation(exporter *ex, const ds_node *n, const char *pre, const char *base)
{
    const char *out = tname(ex, n->output);
    if (n->attrs.activation == DS_ACT_RELU) {
        Onnx__NodeProto *r = new_node(ex, "Relu", ar_strf2(&ex->ar, base, "/relu"), 1, out);
        if (r)
            r->input[0] = (char *)pre;
    } else if (n->attrs.activation == DS_ACT_CLIP) {
        char *mn = ar_strf2(&ex->ar, out, "__min"), *mx = ar_strf2(&ex->ar, out, "__max");
        Onnx__NodeProto *r = new_node(ex, "Clip", ar_strf2(&ex->ar, base, "/clip"), 3, out);
        if (!r || !mn || !mx) {
            ex->ar.oom = true;
            return;
        }
        r->input[0] = (char *)pre;
        r->input[1] = mn;
        r->input[2] = mx;
        add_float_init(ex, mn, 0, NULL, &n->attrs.clip_min, 1);
        add_float_init(ex, mx, 0, NULL, &n->attrs.clip_max, 1);
    }
}

static const char *const simple_ops[DS_OP_COUNT] = {
    [DS_OP_RELU] = "Relu",           [DS_OP_SIGMOID] = "Sigmoid",
    [DS_OP_TANH] = "Tanh",           [DS_OP_HARD_SWISH] = "HardSwish",
    [DS_OP_PRELU] = "PRelu",         [DS_OP_GLOBAL_AVGPOOL] = "GlobalAveragePool",
    [DS_OP_GLOBAL_MAXPOOL] = "GlobalMaxPool", [DS_OP_MATMUL] = "MatMul",
    [DS_OP_ADD] = "Add",             [DS_OP_MUL] = "Mul",
    [DS_OP_SUM] = "Sum",             [DS_OP_IDENTITY] = "Identity",
};

static void export_softmax(exporter *ex, const ds_node *n, const char *base)
{
    const ds_tensor *x = &ex->g->tensors[n->inputs[0]];
    const char *out = tname(ex, n->output);
    if (!n->attrs.softmax_legacy || (uint32_t)n->attrs.axis == x->rank - 1) {
        Onnx__NodeProto *np = new_node(ex, "Softmax", base, 1, out);
        if (!np)
            return;
        np->input[0] = (char *)tname(ex, n->inputs[0]);
        attr_i(ex, np, "axis", n->attrs.axis);
        return;
    }
    /* opset < 13 semantics: softmax over everything from `axis` on */
    char *flat = ar_strf2(&ex->ar, out, "__flat"), *soft = ar_strf2(&ex->ar, out, "__soft");
    char *shape = ar_strf2(&ex->ar, out, "__shape");
    Onnx__NodeProto *f = new_node(ex, "Flatten", ar_strf2(&ex->ar, base, "/flatten"), 1, flat);
    Onnx__NodeProto *s = new_node(ex, "Softmax", base, 1, soft);
    Onnx__NodeProto *r = new_node(ex, "Reshape", ar_strf2(&ex->ar, base, "/reshape"), 2, out);
    if (!f || !s || !r || !shape) {
        ex->ar.oom = true;
        return;
    }
    f->input[0] = (char *)tname(ex, n->inputs[0]);
    attr_i(ex, f, "axis", n->attrs.axis);
    s->input[0] = flat;
    attr_i(ex, s, "axis", 1);
    r->input[0] = soft;
    r->input[1] = shape;
    int64_t dims[DS_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims);
    if (ex->g->batchable)
        dims[0] = n->attrs.axis == 1 ? 0 : -1;
    add_int64_init(ex, shape, dims, x->rank);
}

static void export_node(exporter *ex, uint32_t idx)
{
    const ds_node *n = &ex->g->nodes[idx];
    const ds_op_attrs *a = &n->attrs;
    char base_buf[32];
    const char *base = n->name;
    if (!base || !base[0]) {
        snprintf(base_buf, sizeof base_buf, "node%u", idx);
        base = base_buf;
    }
    const char *out = tname(ex, n->output);
    if (n->op == DS_OP_SOFTMAX) {
        export_softmax(ex, n, base);
        return;
    }
    if (n->op == DS_OP_HARD_SWISH && ex->opset < 14)
        ex->opset = 14; /* HardSwish first appears in opset 14 */
    const char *write = out;
    if (n->op == DS_OP_CONV || n->op == DS_OP_GEMM)
        write = activation_tail(ex, n);
    uint32_t n_in = n->n_inputs;
    const char *op = simple_ops[n->op];
    switch (n->op) {
    case DS_OP_CONV: op = "Conv"; break;
    case DS_OP_BATCHNORM: op = "BatchNormalization"; break;
    case DS_OP_CLIP: op = "Clip"; n_in = 3; break;
    case DS_OP_LEAKY_RELU: op = "LeakyRelu"; break;
    case DS_OP_HARD_SIGMOID: op = "HardSigmoid"; break;
    case DS_OP_MAXPOOL: op = "MaxPool"; break;
    case DS_OP_AVGPOOL: op = "AveragePool"; break;
    case DS_OP_GEMM: op = "Gemm"; break;
    case DS_OP_CONCAT: op = "Concat"; break;
    case DS_OP_FLATTEN: op = "Flatten"; break;
    case DS_OP_RESHAPE: op = "Reshape"; n_in = 2; break;
    case DS_OP_TRANSPOSE: op = "Transpose"; break;
    case DS_OP_LRN: op = "LRN"; break;
    default: break;
    }
    Onnx__NodeProto *np = new_node(ex, op, base, n_in, write);
    if (!np) {
        ex->ar.oom = true;
        return;
    }
    for (uint32_t i = 0; i < n->n_inputs && i < n_in; i++)
        np->input[i] = (char *)(n->inputs[i] == DS_TENSOR_NONE ? "" : tname(ex, n->inputs[i]));
    switch (n->op) {
    case DS_OP_CONV:
        window(ex, np, a, true);
        attr_i(ex, np, "group", a->group);
        break;
    case DS_OP_BATCHNORM:
        attr_f(ex, np, "epsilon", a->epsilon);
        break;
    case DS_OP_CLIP: {
        char *mn = ar_strf2(&ex->ar, out, "__min"), *mx = ar_strf2(&ex->ar, out, "__max");
        if (!mn || !mx) {
            ex->ar.oom = true;
            return;
        }
        np->input[1] = isinf(a->clip_min) && a->clip_min < 0 ? "" : mn;
        np->input[2] = isinf(a->clip_max) && a->clip_max > 0 ? "" : mx;
        if (np->input[1][0])
            add_float_init(ex, mn, 0, NULL, &a->clip_min, 1);
        if (np->input[2][0])
            add_float_init(ex, mx, 0, NULL, &a->clip_max, 1);
        if (!np->input[2][0])
            np->n_input = np->input[1][0] ? 2 : 1;
        break;
    }
    case DS_OP_LEAKY_RELU:
        attr_f(ex, np, "alpha", a->alpha);
        break;
    case DS_OP_HARD_SIGMOID:
        attr_f(ex, np, "alpha", a->alpha);
        attr_f(ex, np, "beta", a->beta);
        break;
    case DS_OP_MAXPOOL:
        window(ex, np, a, true);
        attr_i(ex, np, "ceil_mode", a->ceil_mode);
        break;
    case DS_OP_AVGPOOL:
        window(ex, np, a, false);
        attr_i(ex, np, "ceil_mode", a->ceil_mode);
        attr_i(ex, np, "count_include_pad", a->count_include_pad);
        break;
    case DS_OP_GEMM:
        attr_f(ex, np, "alpha", a->alpha);
        attr_f(ex, np, "beta", a->beta);
        attr_i(ex, np, "transA", a->trans_a);
        attr_i(ex, np, "transB", a->trans_b);
        break;
    case DS_OP_CONCAT:
    case DS_OP_FLATTEN:
        attr_i(ex, np, "axis", a->axis);
        break;
    case DS_OP_RESHAPE: {
        char *shape = ar_strf2(&ex->ar, out, "__shape");
        if (!shape) {
            ex->ar.oom = true;
            return;
        }
        np->input[1] = shape;
        add_int64_init(ex, shape, a->shape, a->shape_rank);
        if (a->allowzero) {
            attr_i(ex, np, "allowzero", 1);
            ex->opset = 14;
        }
        break;
    }
    case DS_OP_TRANSPOSE:
        attr_ints_u32(ex, np, "perm", a->perm, ex->g->tensors[n->inputs[0]].rank);
        break;
    case DS_OP_LRN:
        attr_i(ex, np, "size", a->size);
        attr_f(ex, np, "alpha", a->alpha);
        attr_f(ex, np, "beta", a->beta);
        attr_f(ex, np, "bias", a->bias);
        break;
    default:
        break;
    }
    if (write != out)
        emit_activation(ex, n, write, base);
}

static dstack_status build_model(exporter *ex, Onnx__ModelProto *m, Onnx__GraphProto *gp,
                                  Onnx__OperatorSetIdProto *opset)
{
    const ds_graph *g = ex->g;
    arena *ar = &ex->ar;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if ((unsigned)g->nodes[i].op >= DS_OP_COUNT)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ONNX export: node %u has unknown op %d",
                           i, (int)g->nodes[i].op);
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        const ds_tensor *ten = &g->tensors[t];
        if (ten->kind == DS_TENSOR_CONST)
            add_float_init(ex, ten->name, ten->rank, ten->dims, ten->data,
                           (size_t)ds_tensor_numel(ten));
    }
    for (uint32_t i = 0; i < g->n_nodes; i++)
        export_node(ex, i);
    gp->name = ar_str(ar, g->name ? g->name : "dstack");
    gp->n_input = g->n_inputs;
    gp->input = ar_alloc(ar, sizeof *gp->input * (g->n_inputs + 1));
    gp->n_output = g->n_outputs;
    gp->output = ar_alloc(ar, sizeof *gp->output * (g->n_outputs + 1));
    if (!gp->input || !gp->output)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX export: out of memory");
    for (uint32_t i = 0; i < g->n_inputs; i++)
        if (!(gp->input[i] = value_info(ex, &g->tensors[g->inputs[i]], g->batchable)))
            ar->oom = true;
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (!(gp->output[i] = value_info(ex, &g->tensors[g->outputs[i]], g->batchable)))
            ar->oom = true;
    gp->n_node = ex->nodes.n;
    gp->node = (Onnx__NodeProto **)ex->nodes.items;
    gp->n_initializer = ex->inits.n;
    gp->initializer = (Onnx__TensorProto **)ex->inits.items;
    m->has_ir_version = 1;
    m->ir_version = DS_ONNX_EXPORT_IR_VERSION;
    m->producer_name = ar_str(ar, "libdstack");
    m->producer_version = ar_str(ar, dstack_version_string());
    m->graph = gp;
    opset->domain = ar_str(ar, "");
    opset->has_version = 1;
    opset->version = ex->opset;
    if (ar->oom)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX export: out of memory");
    return DSTACK_OK;
}

dstack_status ds_onnx_export(const ds_graph *g, void **bytes, size_t *n_bytes)
{
    if (!g || !bytes || !n_bytes)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_onnx_export: NULL argument");
    if (!g->finalized)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_onnx_export: graph '%s' is not finalized",
                       g->name ? g->name : "");
    exporter ex;
    memset(&ex, 0, sizeof ex);
    ex.g = g;
    ex.opset = DS_ONNX_EXPORT_OPSET;
    Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
    Onnx__GraphProto gp = ONNX__GRAPH_PROTO__INIT;
    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
    Onnx__OperatorSetIdProto *opsets[1] = {&opset};
    m.n_opset_import = 1;
    m.opset_import = opsets;
    dstack_status st = build_model(&ex, &m, &gp, &opset);
    if (!st) {
        size_t n = onnx__model_proto__get_packed_size(&m);
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf) {
            st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "ONNX export: no memory for %zu bytes", n);
        } else {
            size_t w = onnx__model_proto__pack(&m, buf);
            if (w != n) {
                free(buf);
                st = ds_fail(DSTACK_ERR_INTERNAL, "ONNX export: packed %zu of %zu bytes", w, n);
            } else {
                *bytes = buf;
                *n_bytes = n;
            }
        }
    }
    ar_free(&ex.ar);
    return st;
}
