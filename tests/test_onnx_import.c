/* test_onnx_import.c - the ONNX importer and exporter: each refusal gives its
 * exact status, ONNX rules (auto_pad, negative axes, Constant, dynamic batch,
 * Clip across opsets, initializer encodings) turn into the right IR, and an
 * exported graph reads back identical.
 *
 * Bad models are built in memory with the protobuf-c code generated from
 * onnx.proto, packed, and fed to ds_onnx_import as bytes.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "graph/graph.h"
#include "onnx.pb-c.h"
#include "util/error.h"

#define NODE_DATA "/usr/share/libonnx-testdata/data/node"

/* ---- a tiny model builder: every allocation goes to one list ---- */

typedef struct builder {
    void *ptrs[4096];
    size_t n;
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
} builder;

static void *b_alloc(builder *b, size_t size)
{
    assert_true(b->n < sizeof b->ptrs / sizeof b->ptrs[0]);
    void *p = calloc(1, size);
    assert_non_null(p);
    b->ptrs[b->n++] = p;
    return p;
}

static char *b_str(builder *b, const char *s)
{
    char *c = b_alloc(b, strlen(s) + 1);
    strcpy(c, s);
    return c;
}

static builder *b_new(int64_t opset)
{
    builder *b = calloc(1, sizeof *b);
    assert_non_null(b);
    onnx__model_proto__init(&b->model);
    onnx__graph_proto__init(&b->graph);
    onnx__operator_set_id_proto__init(&b->opset);
    b->model.has_ir_version = 1;
    b->model.ir_version = 7;
    b->model.graph = &b->graph;
    b->opset.domain = b_str(b, "");
    b->opset.has_version = 1;
    b->opset.version = opset;
    b->opsets[0] = &b->opset;
    b->model.n_opset_import = 1;
    b->model.opset_import = b->opsets;
    b->graph.name = b_str(b, "t");
    b->graph.node = b_alloc(b, sizeof(void *) * 64);
    b->graph.input = b_alloc(b, sizeof(void *) * 16);
    b->graph.output = b_alloc(b, sizeof(void *) * 16);
    b->graph.initializer = b_alloc(b, sizeof(void *) * 64);
    return b;
}

static void b_free(builder *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->ptrs[i]);
    free(b);
}

/* dims[i] < 0 writes dim_param "N" there. */
static Onnx__ValueInfoProto *b_vi(builder *b, const char *name, int32_t dtype, uint32_t rank,
                                  const int64_t *dims)
{
    Onnx__ValueInfoProto *vi = b_alloc(b, sizeof *vi);
    Onnx__TypeProto *tp = b_alloc(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = b_alloc(b, sizeof *tt);
    Onnx__TensorShapeProto *sh = b_alloc(b, sizeof *sh);
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    vi->name = b_str(b, name);
    vi->type = tp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = dtype;
    tt->shape = sh;
    sh->n_dim = rank;
    sh->dim = b_alloc(b, sizeof(void *) * (rank + 1));
    for (uint32_t i = 0; i < rank; i++) {
        Onnx__TensorShapeProto__Dimension *d = b_alloc(b, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = b_str(b, "N");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        sh->dim[i] = d;
    }
    return vi;
}

static void b_input(builder *b, const char *name, int32_t dtype, uint32_t rank, const int64_t *dims)
{
    b->graph.input[b->graph.n_input++] = b_vi(b, name, dtype, rank, dims);
}

static void b_output(builder *b, const char *name)
{
    b->graph.output[b->graph.n_output++] = b_vi(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL);
    b->graph.output[b->graph.n_output - 1]->type->tensor_type->shape = NULL;
}

static Onnx__TensorProto *b_tensor(builder *b, const char *name, int32_t dtype, uint32_t rank,
                                   const int64_t *dims)
{
    Onnx__TensorProto *t = b_alloc(b, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = b_str(b, name);
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = rank;
    t->dims = b_alloc(b, sizeof(int64_t) * (rank + 1));
    if (rank)
        memcpy(t->dims, dims, sizeof(int64_t) * rank);
    return t;
}

static Onnx__TensorProto *b_float_init(builder *b, const char *name, uint32_t rank,
                                       const int64_t *dims, const float *vals, size_t n)
{
    Onnx__TensorProto *t = b_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, rank, dims);
    t->float_data = b_alloc(b, sizeof(float) * (n + 1));
    memcpy(t->float_data, vals, sizeof(float) * n);
    t->n_float_data = n;
    b->graph.initializer[b->graph.n_initializer++] = t;
    return t;
}

static void b_int64_init(builder *b, const char *name, const int64_t *vals, size_t n)
{
    int64_t dim = (int64_t)n;
    Onnx__TensorProto *t = b_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, &dim);
    t->int64_data = b_alloc(b, sizeof(int64_t) * (n + 1));
    memcpy(t->int64_data, vals, sizeof(int64_t) * n);
    t->n_int64_data = n;
    b->graph.initializer[b->graph.n_initializer++] = t;
}

/* inputs: NULL-terminated list after the op; a "" input is an absent one. */
static Onnx__NodeProto *b_node(builder *b, const char *op, const char *name, const char *out,
                               const char *in0, const char *in1, const char *in2)
{
    Onnx__NodeProto *n = b_alloc(b, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = b_str(b, op);
    n->name = b_str(b, name);
    n->input = b_alloc(b, sizeof(char *) * 3);
    const char *ins[3] = {in0, in1, in2};
    for (int i = 0; i < 3 && ins[i]; i++)
        n->input[n->n_input++] = b_str(b, ins[i]);
    n->output = b_alloc(b, sizeof(char *) * 2);
    n->output[n->n_output++] = b_str(b, out);
    n->attribute = b_alloc(b, sizeof(void *) * 16);
    b->graph.node[b->graph.n_node++] = n;
    return n;
}

static Onnx__AttributeProto *b_attr(builder *b, Onnx__NodeProto *n, const char *name,
                                    Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = b_alloc(b, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = b_str(b, name);
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void b_attr_i(builder *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = b_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void b_attr_f(builder *b, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = b_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static void b_attr_ints(builder *b, Onnx__NodeProto *n, const char *name, const int64_t *v,
                        size_t count)
{
    Onnx__AttributeProto *a = b_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->ints = b_alloc(b, sizeof(int64_t) * (count + 1));
    memcpy(a->ints, v, sizeof(int64_t) * count);
    a->n_ints = count;
}

static void b_attr_s(builder *b, Onnx__NodeProto *n, const char *name, const char *s)
{
    Onnx__AttributeProto *a = b_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)b_str(b, s);
    a->s.len = strlen(s);
}

/* Pack and import; *out is NULL on failure. */
static dstack_status b_import(builder *b, ds_graph **out)
{
    size_t n = onnx__model_proto__get_packed_size(&b->model);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(onnx__model_proto__pack(&b->model, buf), n);
    *out = NULL;
    dstack_status st = ds_onnx_import(buf, n, out);
    if (st)
        assert_null(*out);
    else
        assert_non_null(*out);
    free(buf);
    return st;
}

static const int64_t X4[4] = {1, 3, 5, 5};
static const int64_t W4[4] = {2, 3, 3, 3};

/* x[1,3,5,5] -> Conv(w[2,3,3,3]) -> y, returns the conv node for attrs. */
static Onnx__NodeProto *conv_model(builder *b)
{
    float w[54];
    for (int i = 0; i < 54; i++)
        w[i] = 0.01f * (float)i;
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, X4);
    b_float_init(b, "w", 4, W4, w, 54);
    b_output(b, "y");
    return b_node(b, "Conv", "conv1", "y", "x", "w", NULL);
}

static const ds_node *only_node(const ds_graph *g, ds_op_kind op)
{
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == op)
            return &g->nodes[i];
    fail_msg("no %s node", ds_op_name(op));
    return NULL;
}

static void *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* ---- a valid model imports into the expected IR ---- */

static void test_conv_model_imports_with_explicit_shapes(void **state)
{
    (void)state;
    builder *b = b_new(13);
    Onnx__NodeProto *n = conv_model(b);
    int64_t pads[4] = {1, 1, 1, 1}, strides[2] = {2, 2};
    b_attr_ints(b, n, "pads", pads, 4);
    b_attr_ints(b, n, "strides", strides, 2);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_true(g->finalized);
    const ds_node *c = only_node(g, DS_OP_CONV);
    assert_int_equal(c->attrs.kernel[0], 3);
    assert_int_equal(c->attrs.stride[1], 2);
    assert_int_equal(c->attrs.pads[2], 1);
    const ds_tensor *y = &g->tensors[c->output];
    /* (5 + 2 - 3) / 2 + 1 = 3 */
    assert_int_equal(y->rank, 4);
    assert_int_equal(y->dims[1], 2);
    assert_int_equal(y->dims[2], 3);
    assert_int_equal(y->dims[3], 3);
    assert_true(y->is_output);
    const ds_tensor *w = &g->tensors[c->inputs[1]];
    assert_int_equal(w->kind, DS_TENSOR_CONST);
    assert_true(w->data[53] == 0.53f);
    ds_graph_free(g);
    b_free(b);
}

static void check_auto_pad(const char *mode, int64_t k, int64_t stride, uint32_t top, uint32_t bottom,
                           int64_t out_hw)
{
    builder *b = b_new(11);
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, X4);
    b_output(b, "y");
    Onnx__NodeProto *n = b_node(b, "MaxPool", "pool", "y", "x", NULL, NULL);
    int64_t ks[2] = {k, k}, ss[2] = {stride, stride};
    b_attr_ints(b, n, "kernel_shape", ks, 2);
    b_attr_ints(b, n, "strides", ss, 2);
    b_attr_s(b, n, "auto_pad", mode);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    const ds_node *p = only_node(g, DS_OP_MAXPOOL);
    assert_int_equal(p->attrs.pads[0], top);
    assert_int_equal(p->attrs.pads[1], top);
    assert_int_equal(p->attrs.pads[2], bottom);
    assert_int_equal(p->attrs.pads[3], bottom);
    assert_int_equal(g->tensors[p->output].dims[2], out_hw);
    ds_graph_free(g);
    b_free(b);
}

static void test_auto_pad_same_upper_lower_valid_become_explicit_pads(void **state)
{
    (void)state;
    /* in 5, k 4, s 1: out 5, total pad 3: upper puts the odd one at the end */
    check_auto_pad("SAME_UPPER", 4, 1, 1, 2, 5);
    check_auto_pad("SAME_LOWER", 4, 1, 2, 1, 5);
    /* in 5, k 3, s 2: out 3, total pad (3-1)*2 + 3 - 5 = 2 */
    check_auto_pad("SAME_UPPER", 3, 2, 1, 1, 3);
    check_auto_pad("VALID", 3, 2, 0, 0, 2);
    check_auto_pad("NOTSET", 3, 1, 0, 0, 3);
}

static void test_negative_axes_are_made_positive(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d3[3] = {2, 3, 4};
    b_input(b, "a", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 3, d3);
    b_input(b, "b", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 3, d3);
    b_output(b, "f");
    b_output(b, "s");
    Onnx__NodeProto *c = b_node(b, "Concat", "cat", "c", "a", "b", NULL);
    b_attr_i(b, c, "axis", -1);
    Onnx__NodeProto *s = b_node(b, "Softmax", "sm", "s", "c", NULL, NULL);
    b_attr_i(b, s, "axis", -2);
    Onnx__NodeProto *f = b_node(b, "Flatten", "fl", "f", "c", NULL, NULL);
    b_attr_i(b, f, "axis", -1);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    const ds_node *cat = only_node(g, DS_OP_CONCAT);
    assert_int_equal(cat->attrs.axis, 2);
    assert_int_equal(g->tensors[cat->output].dims[2], 8);
    const ds_node *sm = only_node(g, DS_OP_SOFTMAX);
    assert_int_equal(sm->attrs.axis, 1);
    assert_false(sm->attrs.softmax_legacy); /* opset 13 */
    const ds_node *fl = only_node(g, DS_OP_FLATTEN);
    assert_int_equal(fl->attrs.axis, 2);
    assert_int_equal(g->tensors[fl->output].dims[0], 6);
    assert_int_equal(g->tensors[fl->output].dims[1], 8);
    ds_graph_free(g);
    b_free(b);
}

static void test_softmax_before_opset13_is_legacy_unless_last_axis(void **state)
{
    (void)state;
    builder *b = b_new(11);
    int64_t d3[3] = {2, 3, 4};
    b_input(b, "a", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 3, d3);
    b_output(b, "s");
    b_output(b, "t");
    b_node(b, "Softmax", "default_axis", "s", "a", NULL, NULL); /* axis 1 in opset 11 */
    Onnx__NodeProto *t = b_node(b, "Softmax", "last", "t", "a", NULL, NULL);
    b_attr_i(b, t, "axis", -1);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_int_equal(g->nodes[0].attrs.axis, 1);
    assert_true(g->nodes[0].attrs.softmax_legacy);
    assert_int_equal(g->nodes[1].attrs.axis, 2);
    assert_false(g->nodes[1].attrs.softmax_legacy);
    ds_graph_free(g);
    b_free(b);
}

static void test_constant_node_becomes_a_graph_constant(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d2[2] = {2, 2};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, d2);
    b_output(b, "y");
    Onnx__NodeProto *c = b_node(b, "Constant", "k", "kval", NULL, NULL, NULL);
    Onnx__AttributeProto *a = b_attr(b, c, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    a->t = b_tensor(b, "", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, d2);
    /* raw_data, little endian: 1, 2, 3, 4 */
    static const uint8_t raw[16] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40};
    a->t->has_raw_data = 1;
    a->t->raw_data.data = (uint8_t *)raw;
    a->t->raw_data.len = sizeof raw;
    b_node(b, "Add", "add", "y", "x", "kval", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_int_equal(g->n_nodes, 1); /* the Constant node is gone */
    const ds_node *add = only_node(g, DS_OP_ADD);
    const ds_tensor *k = &g->tensors[add->inputs[1]];
    assert_int_equal(k->kind, DS_TENSOR_CONST);
    assert_string_equal(k->name, "kval");
    assert_true(k->data[0] == 1.0f && k->data[1] == 2.0f && k->data[2] == 3.0f &&
                k->data[3] == 4.0f);
    ds_graph_free(g);
    b_free(b);
}

static void test_symbolic_batch_dimension_gives_batchable_graph(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t dims[4] = {-1, 3, 5, 5}; /* "N" */
    float w[54] = {0};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, dims);
    b_float_init(b, "w", 4, W4, w, 54);
    b_output(b, "y");
    b_node(b, "Conv", "conv", "c", "x", "w", NULL);
    b_node(b, "Relu", "relu", "y", "c", NULL, NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_int_equal(g->tensors[g->inputs[0]].dims[0], 1);
    assert_true(g->batchable);
    ds_graph_free(g);

    /* a fixed batch of 2 is one request of 2 samples: not batchable */
    b->graph.input[0]->type->tensor_type->shape->dim[0]->value_case =
        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    b->graph.input[0]->type->tensor_type->shape->dim[0]->dim_value = 2;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_false(g->batchable);
    assert_int_equal(g->tensors[g->inputs[0]].dims[0], 2);
    ds_graph_free(g);

    /* a symbolic dimension other than the first does not infer */
    b->graph.input[0]->type->tensor_type->shape->dim[2]->value_case =
        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
    b->graph.input[0]->type->tensor_type->shape->dim[2]->dim_param = b_str(b, "H");
    assert_int_equal(b_import(b, &g), DSTACK_ERR_SHAPE);
    b_free(b);
}

/* A dimension of 2^32 + 4 or 2^40 was reported as "not positive". */
static void test_huge_input_dimension_says_how_big_not_not_positive(void **state)
{
    (void)state;
    const int64_t huge[] = {((int64_t)1 << 32) + 4, (int64_t)1 << 40};
    for (size_t h = 0; h < 2; h++) {
        for (uint32_t at = 0; at < 4; at++) {
            builder *b = b_new(13);
            int64_t dims[4] = {1, 3, 5, 5};
            dims[at] = huge[h];
            b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, dims);
            b_output(b, "y");
            b_node(b, "Relu", "relu", "y", "x", NULL, NULL);
            ds_graph *g;
            assert_int_equal(b_import(b, &g), DSTACK_ERR_SHAPE);
            char want[32];
            snprintf(want, sizeof want, "%lld", (long long)huge[h]);
            assert_non_null(strstr(ds_error_message(), want));
            assert_null(strstr(ds_error_message(), "not positive"));
            b_free(b);
        }
    }
    /* a real zero or negative one still says so */
    builder *b = b_new(13);
    int64_t dims[4] = {1, 3, 0, 5};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, dims);
    b_output(b, "y");
    b_node(b, "Relu", "relu", "y", "x", NULL, NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_SHAPE);
    assert_non_null(strstr(ds_error_message(), "not positive"));
    b_free(b);
}

static void test_graph_input_that_is_an_initializer_is_a_constant(void **state)
{
    (void)state;
    builder *b = b_new(13);
    Onnx__NodeProto *n = conv_model(b);
    (void)n;
    b_input(b, "w", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, W4); /* IR < 4 style */
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_int_equal(g->n_inputs, 1);
    assert_int_equal(g->tensors[only_node(g, DS_OP_CONV)->inputs[1]].kind, DS_TENSOR_CONST);
    ds_graph_free(g);
    b_free(b);
}

static void test_clip_bounds_from_attrs_before_opset11_and_inputs_after(void **state)
{
    (void)state;
    int64_t d1[1] = {4};
    builder *b = b_new(6);
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, d1);
    b_output(b, "y");
    Onnx__NodeProto *n = b_node(b, "Clip", "c6", "y", "x", NULL, NULL);
    b_attr_f(b, n, "min", 0.0f);
    b_attr_f(b, n, "max", 6.0f);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_true(g->nodes[0].attrs.clip_min == 0.0f && g->nodes[0].attrs.clip_max == 6.0f);
    ds_graph_free(g);
    b_free(b);

    b = b_new(13);
    float lo = -1.0f;
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, d1);
    b_float_init(b, "lo", 0, NULL, &lo, 1);
    b_output(b, "y");
    b_node(b, "Clip", "c13", "y", "x", "lo", NULL); /* no max */
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_int_equal(g->nodes[0].n_inputs, 1); /* bounds are attributes in the IR */
    assert_true(g->nodes[0].attrs.clip_min == -1.0f);
    assert_true(isinf(g->nodes[0].attrs.clip_max) && g->nodes[0].attrs.clip_max > 0);
    ds_graph_free(g);
    b_free(b);
}

static void test_reshape_with_constant_shape_infers_minus_one_and_zero(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[3] = {2, 3, 4}, shape[2] = {0, -1};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 3, d);
    b_int64_init(b, "shape", shape, 2);
    b_output(b, "y");
    b_node(b, "Reshape", "r", "y", "x", "shape", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    const ds_node *r = only_node(g, DS_OP_RESHAPE);
    assert_int_equal(r->n_inputs, 1);
    assert_int_equal(r->attrs.shape_rank, 2);
    assert_int_equal(r->attrs.shape[0], 0);
    assert_int_equal(r->attrs.shape[1], -1);
    assert_int_equal(g->tensors[r->output].dims[0], 2);
    assert_int_equal(g->tensors[r->output].dims[1], 12);
    /* the int64 shape did not become a float graph tensor */
    assert_int_equal(ds_graph_find_tensor(g, "shape"), DS_TENSOR_NONE);
    ds_graph_free(g);
    b_free(b);
}

static void test_graph_output_that_is_a_constant_gets_an_identity(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[1] = {3};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, d);
    b_output(b, "y");
    b_output(b, "values");
    b_node(b, "Relu", "relu", "y", "x", NULL, NULL);
    Onnx__NodeProto *c = b_node(b, "Constant", "k", "values", NULL, NULL, NULL);
    Onnx__AttributeProto *a = b_attr(b, c, "value_floats", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    static float vals[2] = {1.5f, -2.5f};
    a->floats = vals;
    a->n_floats = 2;
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_int_equal(g->n_outputs, 2);
    const ds_node *id = only_node(g, DS_OP_IDENTITY);
    assert_int_equal(g->outputs[1], id->output);
    assert_string_equal(g->tensors[id->output].name, "values");
    const ds_tensor *k = &g->tensors[id->inputs[0]];
    assert_int_equal(k->kind, DS_TENSOR_CONST);
    assert_true(k->data[0] == 1.5f && k->data[1] == -2.5f);
    ds_graph_free(g);
    b_free(b);
}

static void test_model_without_inputs_gives_UNSUPPORTED_OP(void **state)
{
    (void)state;
    char path[512];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/test_constant/model.onnx", NODE_DATA);
    void *bytes = read_file(path, &n);
    if (!bytes)
        skip();
    ds_graph *g = NULL;
    assert_int_equal(ds_onnx_import(bytes, n, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_null(g);
    assert_non_null(strstr(ds_error_message(), "no inputs"));
    free(bytes);
}

/* ---- refusals: each has its own status and names node, op, reason ---- */

static void test_external_data_gives_EXTERNAL_DATA(void **state)
{
    (void)state;
    builder *b = b_new(13);
    conv_model(b);
    Onnx__TensorProto *w = b->graph.initializer[0];
    w->n_float_data = 0;
    w->has_data_location = 1;
    w->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    Onnx__StringStringEntryProto *e = b_alloc(b, sizeof *e);
    onnx__string_string_entry_proto__init(e);
    e->key = b_str(b, "location");
    e->value = b_str(b, "weights.bin");
    w->external_data = b_alloc(b, sizeof(void *));
    w->external_data[0] = e;
    w->n_external_data = 1;
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_EXTERNAL_DATA);
    assert_non_null(strstr(ds_error_message(), "'w'"));
    b_free(b);
}

static void test_int64_input_gives_UNSUPPORTED_TYPE(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[2] = {2, 2};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 2, d);
    b_output(b, "y");
    b_node(b, "Relu", "relu7", "y", "x", NULL, NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_TYPE);
    assert_non_null(strstr(ds_error_message(), "relu7"));
    assert_non_null(strstr(ds_error_message(), "INT64"));
    b_free(b);
}

static void test_int32_initializer_as_data_gives_UNSUPPORTED_TYPE(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[1] = {2};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, d);
    Onnx__TensorProto *t = b_tensor(b, "k", ONNX__TENSOR_PROTO__DATA_TYPE__INT32, 1, d);
    t->int32_data = b_alloc(b, 8);
    t->n_int32_data = 2;
    b->graph.initializer[b->graph.n_initializer++] = t;
    b_output(b, "y");
    b_node(b, "Add", "add", "y", "x", "k", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_TYPE);
    b_free(b);
}

static void test_unknown_op_gives_UNSUPPORTED_OP_naming_node_and_op(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[4] = {1, 1, 2, 2};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, d);
    b_output(b, "y");
    b_node(b, "Relu", "first", "r", "x", NULL, NULL);
    b_node(b, "Resize", "upsample_3", "y", "r", NULL, NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(ds_error_message(), "upsample_3"));
    assert_non_null(strstr(ds_error_message(), "Resize"));
    b_free(b);
}

static void test_conv3d_gives_UNSUPPORTED_OP(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t x[5] = {1, 1, 4, 4, 4}, w[5] = {1, 1, 2, 2, 2};
    float wd[8] = {0};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 5, x);
    b_float_init(b, "w", 5, w, wd, 8);
    b_output(b, "y");
    b_node(b, "Conv", "conv3d", "y", "x", "w", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(ds_error_message(), "conv3d"));
    assert_non_null(strstr(ds_error_message(), "3-D"));
    b_free(b);
}

static void test_reshape_with_runtime_shape_gives_UNSUPPORTED_OP(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[2] = {2, 6}, ds[1] = {2};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, d);
    b_input(b, "s", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, ds);
    b_output(b, "y");
    b_node(b, "Reshape", "reshape_dyn", "y", "x", "s", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(ds_error_message(), "reshape_dyn"));
    assert_non_null(strstr(ds_error_message(), "constant"));
    b_free(b);
}

static void test_reshape_to_wrong_element_count_gives_SHAPE(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[2] = {2, 6}, shape[2] = {5, 2};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, d);
    b_int64_init(b, "shape", shape, 2);
    b_output(b, "y");
    b_node(b, "Reshape", "r", "y", "x", "shape", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_SHAPE);
    b_free(b);
}

static void test_maxpool_indices_and_storage_order_give_UNSUPPORTED_OP(void **state)
{
    (void)state;
    int64_t k[2] = {2, 2};
    builder *b = b_new(12);
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, X4);
    b_output(b, "y");
    b_output(b, "idx");
    Onnx__NodeProto *n = b_node(b, "MaxPool", "mp", "y", "x", NULL, NULL);
    n->output[n->n_output++] = b_str(b, "idx");
    b_attr_ints(b, n, "kernel_shape", k, 2);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(ds_error_message(), "indices"));
    b_free(b);

    b = b_new(12);
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, X4);
    b_output(b, "y");
    n = b_node(b, "MaxPool", "mp", "y", "x", NULL, NULL);
    b_attr_ints(b, n, "kernel_shape", k, 2);
    b_attr_i(b, n, "storage_order", 1);
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(ds_error_message(), "storage_order"));
    b_free(b);
}

static void test_dropout_unused_mask_is_identity_used_mask_refused(void **state)
{
    (void)state;
    int64_t d[2] = {2, 3};
    builder *b = b_new(13);
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, d);
    b_output(b, "y");
    Onnx__NodeProto *n = b_node(b, "Dropout", "drop", "y", "x", NULL, NULL);
    n->output[n->n_output++] = b_str(b, "mask");
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_int_equal(g->nodes[0].op, DS_OP_IDENTITY);
    ds_graph_free(g);
    b_output(b, "mask");
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(ds_error_message(), "mask"));
    b_free(b);
}

static void test_broadcast_mismatch_gives_SHAPE(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t a[2] = {2, 3}, c[1] = {4};
    b_input(b, "a", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, a);
    b_input(b, "c", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, c);
    b_output(b, "y");
    b_node(b, "Add", "add_bad", "y", "a", "c", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_SHAPE);
    assert_non_null(strstr(ds_error_message(), "add_bad"));
    b_free(b);
}

static void test_raw_data_of_wrong_size_gives_PARSE(void **state)
{
    (void)state;
    builder *b = b_new(13);
    conv_model(b);
    Onnx__TensorProto *w = b->graph.initializer[0];
    w->n_float_data = 0;
    w->has_raw_data = 1;
    w->raw_data.len = 53 * 4; /* one float short */
    w->raw_data.data = b_alloc(b, w->raw_data.len);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_PARSE);
    b_free(b);
}

static void test_opset_newer_than_supported_gives_UNSUPPORTED_OP(void **state)
{
    (void)state;
    builder *b = b_new(99);
    conv_model(b);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(ds_error_message(), "opset 99"));
    b_free(b);
}

static void test_undefined_input_name_gives_PARSE(void **state)
{
    (void)state;
    builder *b = b_new(13);
    int64_t d[1] = {3};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, d);
    b_output(b, "y");
    b_node(b, "Add", "add", "y", "x", "nowhere", NULL);
    ds_graph *g;
    assert_int_equal(b_import(b, &g), DSTACK_ERR_PARSE);
    assert_non_null(strstr(ds_error_message(), "nowhere"));
    b_free(b);
}

static void test_truncated_model_gives_PARSE_at_every_length(void **state)
{
    (void)state;
    builder *b = b_new(13);
    conv_model(b);
    size_t n = onnx__model_proto__get_packed_size(&b->model);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    onnx__model_proto__pack(&b->model, buf);
    ds_graph *g = NULL;
    assert_int_equal(ds_onnx_import(buf, n, &g), DSTACK_OK);
    ds_graph_free(g);
    for (size_t len = 0; len < n; len++) {
        g = NULL;
        dstack_status st = ds_onnx_import(buf, len, &g);
        if (st != DSTACK_ERR_PARSE)
            fail_msg("prefix of %zu/%zu bytes gave status %d (%s)", len, n, st,
                     ds_error_message());
        assert_null(g);
    }
    free(buf);
    b_free(b);
}

static void test_garbage_bytes_give_PARSE(void **state)
{
    (void)state;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34};
    ds_graph *g = NULL;
    assert_int_equal(ds_onnx_import(junk, sizeof junk, &g), DSTACK_ERR_PARSE);
    assert_int_equal(ds_onnx_import(junk, 0, &g), DSTACK_ERR_PARSE);
    static const char text[] = "this is not an onnx model";
    assert_int_equal(ds_onnx_import(text, sizeof text, &g), DSTACK_ERR_PARSE);
    assert_null(g);
}

/* ---- export then import gives the same graph ---- */

static void assert_attrs_equal(const ds_op_attrs *a, const ds_op_attrs *b, ds_op_kind op)
{
    assert_memory_equal(a->kernel, b->kernel, sizeof a->kernel);
    assert_memory_equal(a->stride, b->stride, sizeof a->stride);
    assert_memory_equal(a->pads, b->pads, sizeof a->pads);
    if (op == DS_OP_CONV || op == DS_OP_MAXPOOL)
        assert_memory_equal(a->dilation, b->dilation, sizeof a->dilation);
    if (op == DS_OP_CONV)
        assert_int_equal(a->group, b->group);
    assert_int_equal(a->ceil_mode, b->ceil_mode);
    if (op == DS_OP_AVGPOOL)
        assert_int_equal(a->count_include_pad, b->count_include_pad);
    assert_int_equal(a->activation, b->activation);
    if (op == DS_OP_GEMM || op == DS_OP_LEAKY_RELU || op == DS_OP_HARD_SIGMOID || op == DS_OP_LRN) {
        assert_true(a->alpha == b->alpha);
        assert_true(op == DS_OP_LEAKY_RELU || a->beta == b->beta);
    }
    if (op == DS_OP_BATCHNORM)
        assert_true(a->epsilon == b->epsilon);
    if (op == DS_OP_CLIP) {
        assert_true(a->clip_min == b->clip_min);
        assert_true(a->clip_max == b->clip_max);
    }
    assert_int_equal(a->trans_a, b->trans_a);
    assert_int_equal(a->trans_b, b->trans_b);
    if (op == DS_OP_CONCAT || op == DS_OP_FLATTEN || op == DS_OP_SOFTMAX)
        assert_int_equal(a->axis, b->axis);
    if (op == DS_OP_RESHAPE) {
        assert_int_equal(a->shape_rank, b->shape_rank);
        assert_memory_equal(a->shape, b->shape, sizeof(int64_t) * a->shape_rank);
    }
}

static void assert_tensor_equal(const ds_tensor *a, const ds_tensor *b)
{
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->rank, b->rank);
    assert_memory_equal(a->dims, b->dims, sizeof(int64_t) * a->rank);
    assert_int_equal(a->is_output, b->is_output);
    if (a->kind == DS_TENSOR_CONST)
        assert_memory_equal(a->data, b->data, sizeof(float) * (size_t)ds_tensor_numel(a));
}

/* Same nodes in the same order with the same attributes, reading tensors of
 * the same names, kinds, shapes and values; same inputs and outputs. */
static void assert_graphs_identical(const ds_graph *a, const ds_graph *b)
{
    assert_int_equal(a->n_nodes, b->n_nodes);
    assert_int_equal(a->n_inputs, b->n_inputs);
    assert_int_equal(a->n_outputs, b->n_outputs);
    assert_int_equal(a->batchable, b->batchable);
    assert_int_equal(ds_graph_param_count(a), ds_graph_param_count(b));
    for (uint32_t i = 0; i < a->n_nodes; i++) {
        const ds_node *x = &a->nodes[i], *y = &b->nodes[i];
        assert_int_equal(x->op, y->op);
        assert_int_equal(x->n_inputs, y->n_inputs);
        assert_attrs_equal(&x->attrs, &y->attrs, x->op);
        for (uint32_t k = 0; k < x->n_inputs; k++) {
            assert_string_equal(a->tensors[x->inputs[k]].name, b->tensors[y->inputs[k]].name);
            assert_tensor_equal(&a->tensors[x->inputs[k]], &b->tensors[y->inputs[k]]);
        }
        assert_string_equal(a->tensors[x->output].name, b->tensors[y->output].name);
        assert_tensor_equal(&a->tensors[x->output], &b->tensors[y->output]);
    }
    for (uint32_t i = 0; i < a->n_inputs; i++)
        assert_string_equal(a->tensors[a->inputs[i]].name, b->tensors[b->inputs[i]].name);
    for (uint32_t i = 0; i < a->n_outputs; i++)
        assert_string_equal(a->tensors[a->outputs[i]].name, b->tensors[b->outputs[i]].name);
}

static void roundtrip_zoo(const char *name, uint32_t image_size)
{
    ds_zoo_params p = {.image_size = image_size, .classes = 10, .seed = 7};
    ds_graph *g = NULL, *back = NULL;
    dstack_status st = ds_zoo_build(name, &p, &g);
    if (st)
        fail_msg("zoo %s: %d %s", name, st, ds_error_message());
    void *bytes = NULL;
    size_t n = 0;
    assert_int_equal(ds_onnx_export(g, &bytes, &n), DSTACK_OK);
    st = ds_onnx_import(bytes, n, &back);
    if (st)
        fail_msg("re-import of %s: %d %s", name, st, ds_error_message());
    assert_graphs_identical(g, back);
    ds_graph_free(back);
    free(bytes);
    ds_graph_free(g);
}

static void test_export_import_roundtrip_of_zoo_models_is_identical(void **state)
{
    (void)state;
    roundtrip_zoo("resnet18", 32);
    roundtrip_zoo("mobilenet_v2", 32);
    roundtrip_zoo("squeezenet1_1", 64);
}

/* A folded graph (BN in the conv weights, Relu/Clip fused into Conv/Gemm)
 * exports the fused activation as its own node; folding the re-imported
 * graph fuses it back, giving the same computation. */
static void test_export_of_folded_graph_refolds_to_the_same_graph(void **state)
{
    (void)state;
    ds_zoo_params p = {.image_size = 32, .classes = 10, .seed = 3};
    ds_graph *g = NULL, *back = NULL;
    assert_int_equal(ds_zoo_build("mobilenet_v2", &p, &g), DSTACK_OK);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    uint32_t fused = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        fused += g->nodes[i].attrs.activation != DS_ACT_NONE;
    assert_true(fused > 0);
    void *bytes = NULL;
    size_t n = 0;
    assert_int_equal(ds_onnx_export(g, &bytes, &n), DSTACK_OK);
    assert_int_equal(ds_onnx_import(bytes, n, &back), DSTACK_OK);
    assert_int_equal(back->n_nodes, g->n_nodes + fused); /* activations are nodes again */
    assert_int_equal(ds_graph_fold(back), DSTACK_OK);
    assert_int_equal(back->n_nodes, g->n_nodes);
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        assert_int_equal(g->nodes[i].op, back->nodes[i].op);
        assert_attrs_equal(&g->nodes[i].attrs, &back->nodes[i].attrs, g->nodes[i].op);
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++)
            assert_tensor_equal(&g->tensors[g->nodes[i].inputs[k]],
                                &back->tensors[back->nodes[i].inputs[k]]);
    }
    assert_int_equal(ds_graph_param_count(g), ds_graph_param_count(back));
    ds_graph_free(back);
    ds_graph_free(g);
    free(bytes);
}

static void test_export_import_roundtrip_of_every_attribute_kind(void **state)
{
    (void)state;
    builder *b = b_new(14);
    int64_t k2[2] = {3, 3}, pads[4] = {0, 1, 1, 0}, shape[2] = {0, -1}, perm[2] = {1, 0};
    int64_t dx[4] = {-1, 3, 6, 6};
    b_input(b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, dx);
    b_output(b, "out");
    Onnx__NodeProto *n = b_node(b, "AveragePool", "ap", "a", "x", NULL, NULL);
    b_attr_ints(b, n, "kernel_shape", k2, 2);
    b_attr_ints(b, n, "pads", pads, 4);
    b_attr_i(b, n, "count_include_pad", 1);
    b_attr_i(b, n, "ceil_mode", 1);
    n = b_node(b, "LeakyRelu", "lr", "l", "a", NULL, NULL);
    b_attr_f(b, n, "alpha", 0.3f);
    n = b_node(b, "HardSigmoid", "hs", "h", "l", NULL, NULL);
    b_attr_f(b, n, "alpha", 0.25f);
    b_node(b, "HardSwish", "hw", "w", "h", NULL, NULL); /* opset 14 */
    n = b_node(b, "LRN", "lrn", "n", "w", NULL, NULL);
    b_attr_i(b, n, "size", 3);
    b_int64_init(b, "shape", shape, 2);
    b_node(b, "Reshape", "rs", "r", "n", "shape", NULL);
    float lo = 0.0f, hi = 6.0f;
    b_float_init(b, "lo", 0, NULL, &lo, 1);
    b_float_init(b, "hi", 0, NULL, &hi, 1);
    b_node(b, "Clip", "clip", "c", "r", "lo", "hi");
    n = b_node(b, "Softmax", "sm", "s", "c", NULL, NULL);
    b_attr_i(b, n, "axis", 1);
    n = b_node(b, "Transpose", "tr", "t", "s", NULL, NULL);
    b_attr_ints(b, n, "perm", perm, 2);
    b_node(b, "Sigmoid", "sg", "out", "t", NULL, NULL);
    ds_graph *g, *back = NULL;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    void *bytes;
    size_t nb;
    assert_int_equal(ds_onnx_export(g, &bytes, &nb), DSTACK_OK);
    dstack_status st = ds_onnx_import(bytes, nb, &back);
    if (st)
        fail_msg("re-import: %d %s", st, ds_error_message());
    assert_graphs_identical(g, back);
    ds_graph_free(back);
    ds_graph_free(g);
    free(bytes);
    b_free(b);
}

/* Opset 13 has no legacy Softmax: it is written as Flatten, Softmax over
 * the last axis, Reshape back, which computes the same thing. */
static void test_legacy_softmax_exports_as_flatten_softmax_reshape(void **state)
{
    (void)state;
    builder *b = b_new(11);
    int64_t d3[3] = {2, 3, 4};
    b_input(b, "a", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 3, d3);
    b_output(b, "s");
    b_node(b, "Softmax", "legacy", "s", "a", NULL, NULL);
    ds_graph *g, *back = NULL;
    assert_int_equal(b_import(b, &g), DSTACK_OK);
    assert_true(g->nodes[0].attrs.softmax_legacy);
    void *bytes;
    size_t n;
    assert_int_equal(ds_onnx_export(g, &bytes, &n), DSTACK_OK);
    assert_int_equal(ds_onnx_import(bytes, n, &back), DSTACK_OK);
    assert_int_equal(back->n_nodes, 3);
    assert_int_equal(back->nodes[0].op, DS_OP_FLATTEN);
    assert_int_equal(back->nodes[0].attrs.axis, 1);
    assert_int_equal(back->nodes[1].op, DS_OP_SOFTMAX);
    assert_false(back->nodes[1].attrs.softmax_legacy);
    assert_int_equal(back->nodes[1].attrs.axis, 1);
    assert_int_equal(back->tensors[back->nodes[1].output].dims[1], 12);
    assert_int_equal(back->nodes[2].op, DS_OP_RESHAPE);
    const ds_tensor *s = &back->tensors[back->outputs[0]];
    assert_string_equal(s->name, "s");
    assert_int_equal(s->rank, 3);
    assert_memory_equal(s->dims, d3, sizeof d3);
    ds_graph_free(back);
    ds_graph_free(g);
    free(bytes);
    b_free(b);
}

static void test_export_refuses_unfinalized_graph(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("raw");
    int64_t d[1] = {2};
    uint32_t x = ds_graph_add_input(g, "x", 1, d);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    ds_graph_add_node(g, DS_OP_RELU, "r", &x, 1, &a, "y");
    void *bytes = NULL;
    size_t n = 0;
    assert_int_equal(ds_onnx_export(g, &bytes, &n), DSTACK_ERR_INVALID_ARGUMENT);
    assert_null(bytes);
    ds_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_model_imports_with_explicit_shapes),
        cmocka_unit_test(test_auto_pad_same_upper_lower_valid_become_explicit_pads),
        cmocka_unit_test(test_negative_axes_are_made_positive),
        cmocka_unit_test(test_softmax_before_opset13_is_legacy_unless_last_axis),
        cmocka_unit_test(test_constant_node_becomes_a_graph_constant),
        cmocka_unit_test(test_symbolic_batch_dimension_gives_batchable_graph),
        cmocka_unit_test(test_huge_input_dimension_says_how_big_not_not_positive),
        cmocka_unit_test(test_graph_input_that_is_an_initializer_is_a_constant),
        cmocka_unit_test(test_clip_bounds_from_attrs_before_opset11_and_inputs_after),
        cmocka_unit_test(test_reshape_with_constant_shape_infers_minus_one_and_zero),
        cmocka_unit_test(test_graph_output_that_is_a_constant_gets_an_identity),
        cmocka_unit_test(test_model_without_inputs_gives_UNSUPPORTED_OP),
        cmocka_unit_test(test_external_data_gives_EXTERNAL_DATA),
        cmocka_unit_test(test_int64_input_gives_UNSUPPORTED_TYPE),
        cmocka_unit_test(test_int32_initializer_as_data_gives_UNSUPPORTED_TYPE),
        cmocka_unit_test(test_unknown_op_gives_UNSUPPORTED_OP_naming_node_and_op),
        cmocka_unit_test(test_conv3d_gives_UNSUPPORTED_OP),
        cmocka_unit_test(test_reshape_with_runtime_shape_gives_UNSUPPORTED_OP),
        cmocka_unit_test(test_reshape_to_wrong_element_count_gives_SHAPE),
        cmocka_unit_test(test_maxpool_indices_and_storage_order_give_UNSUPPORTED_OP),
        cmocka_unit_test(test_dropout_unused_mask_is_identity_used_mask_refused),
        cmocka_unit_test(test_broadcast_mismatch_gives_SHAPE),
        cmocka_unit_test(test_raw_data_of_wrong_size_gives_PARSE),
        cmocka_unit_test(test_opset_newer_than_supported_gives_UNSUPPORTED_OP),
        cmocka_unit_test(test_undefined_input_name_gives_PARSE),
        cmocka_unit_test(test_truncated_model_gives_PARSE_at_every_length),
        cmocka_unit_test(test_garbage_bytes_give_PARSE),
        cmocka_unit_test(test_export_import_roundtrip_of_zoo_models_is_identical),
        cmocka_unit_test(test_export_of_folded_graph_refolds_to_the_same_graph),
        cmocka_unit_test(test_export_import_roundtrip_of_every_attribute_kind),
        cmocka_unit_test(test_legacy_softmax_exports_as_flatten_softmax_reshape),
        cmocka_unit_test(test_export_refuses_unfinalized_graph),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
