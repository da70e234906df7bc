/* test_graph.c - the IR: shape inference per op (and its errors), the
 * batchable decision, parameter and flop counts, and the folding pass. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "exec/exec.h"
#include "graph/graph.h"
#include "util/error.h"

/* ---- helpers ---- */

static float *filled(int64_t n, float start, float step)
{
    float *d = malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    for (int64_t i = 0; i < n; i++)
        d[i] = start + step * (float)i;
    return d;
}

static uint32_t add_in(ds_graph *g, const char *name, uint32_t rank, int64_t d0, int64_t d1,
                       int64_t d2, int64_t d3)
{
    int64_t dims[4] = {d0, d1, d2, d3};
    uint32_t id = ds_graph_add_input(g, name, rank, dims);
    assert_int_not_equal(id, DS_TENSOR_NONE);
    return id;
}

static uint32_t add_w(ds_graph *g, const char *name, uint32_t rank, int64_t d0, int64_t d1,
                      int64_t d2, int64_t d3)
{
    int64_t dims[4] = {d0, d1, d2, d3};
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        n *= dims[i];
    uint32_t id = ds_graph_add_const(g, name, rank, dims, filled(n, 0.01f, 0.003f));
    assert_int_not_equal(id, DS_TENSOR_NONE);
    return id;
}

static uint32_t node1(ds_graph *g, ds_op_kind op, uint32_t x, const ds_op_attrs *a)
{
    uint32_t id = ds_graph_add_node(g, op, "n", &x, 1, a, NULL);
    assert_int_not_equal(id, DS_TENSOR_NONE);
    return id;
}

static uint32_t node2(ds_graph *g, ds_op_kind op, uint32_t x, uint32_t y, const ds_op_attrs *a)
{
    uint32_t in[2] = {x, y};
    uint32_t id = ds_graph_add_node(g, op, "n", in, 2, a, NULL);
    assert_int_not_equal(id, DS_TENSOR_NONE);
    return id;
}

static void assert_dims(const ds_graph *g, uint32_t t, uint32_t rank, const int64_t *dims)
{
    assert_int_equal(g->tensors[t].rank, rank);
    for (uint32_t i = 0; i < rank; i++)
        assert_int_equal(g->tensors[t].dims[i], dims[i]);
}

/* Finalize a graph whose output is `out`, expecting `want`. */
static dstack_status finish(ds_graph *g, uint32_t out)
{
    assert_int_equal(ds_graph_mark_output(g, out), DSTACK_OK);
    return ds_graph_finalize(g);
}

/* ---- shape inference ---- */

static void test_conv_output_size_stride2_pad1(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 3, 7, 7);
    uint32_t w = add_w(g, "w", 4, 8, 3, 3, 3);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.stride[0] = a.stride[1] = 2;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    uint32_t y = node2(g, DS_OP_CONV, x, w, &a);
    assert_int_equal(finish(g, y), DSTACK_OK);
    /* floor((7 + 2 - 3) / 2) + 1 = 4 */
    assert_dims(g, y, 4, (int64_t[]){1, 8, 4, 4});
    /* kernel_shape was filled from the weights */
    assert_int_equal(g->nodes[0].attrs.kernel[0], 3);
    ds_graph_free(g);
}

static void test_conv_output_size_dilation2_asymmetric_pads(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 2, 7, 9);
    uint32_t w = add_w(g, "w", 4, 4, 2, 3, 3);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.dilation[0] = a.dilation[1] = 2;
    a.pads[0] = 2; /* top */
    a.pads[2] = 0; /* bottom */
    a.pads[1] = 1;
    a.pads[3] = 0;
    uint32_t y = node2(g, DS_OP_CONV, x, w, &a);
    assert_int_equal(finish(g, y), DSTACK_OK);
    /* effective kernel 5: H (7+2-5)+1 = 5, W (9+1-5)+1 = 6 */
    assert_dims(g, y, 4, (int64_t[]){1, 4, 5, 6});
    ds_graph_free(g);
}

static void test_conv_group_mismatch_fails_with_shape_and_names_node(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 6, 5, 5);
    uint32_t w = add_w(g, "w", 4, 4, 2, 3, 3); /* 2 in-ch per group * 2 groups != 6 */
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.group = 2;
    uint32_t in[2] = {x, w};
    uint32_t y = ds_graph_add_node(g, DS_OP_CONV, "conv_bad", in, 2, &a, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    assert_non_null(strstr(ds_error_message(), "conv_bad"));
    assert_non_null(strstr(ds_error_message(), "Conv"));
    assert_false(g->finalized);
    ds_graph_free(g);
}

static void test_conv_kernel_larger_than_padded_input_fails(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 1, 2, 2);
    uint32_t w = add_w(g, "w", 4, 1, 1, 3, 3);
    uint32_t y = node2(g, DS_OP_CONV, x, w, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_maxpool_ceil_mode_adds_partial_window(void **state)
{
    (void)state;
    for (int ceil_mode = 0; ceil_mode <= 1; ceil_mode++) {
        ds_graph *g = ds_graph_new("g");
        uint32_t x = add_in(g, "x", 4, 1, 1, 5, 5);
        ds_op_attrs a;
        ds_op_attrs_init(&a);
        a.kernel[0] = a.kernel[1] = 2;
        a.stride[0] = a.stride[1] = 2;
        a.ceil_mode = ceil_mode;
        uint32_t y = node1(g, DS_OP_MAXPOOL, x, &a);
        assert_int_equal(finish(g, y), DSTACK_OK);
        /* floor(3/2)+1 = 2; ceil(3/2)+1 = 3 */
        int64_t o = ceil_mode ? 3 : 2;
        assert_dims(g, y, 4, (int64_t[]){1, 1, o, o});
        ds_graph_free(g);
    }
}

static void test_pool_ceil_mode_drops_window_starting_in_right_pad(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 1, 6, 6);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 2;
    a.stride[0] = a.stride[1] = 4;
    a.pads[2] = a.pads[3] = 1; /* bottom, right */
    a.ceil_mode = true;
    uint32_t y = node1(g, DS_OP_AVGPOOL, x, &a);
    assert_int_equal(finish(g, y), DSTACK_OK);
    /* ceil((6+1-2)/4)+1 = 3, but the third window would start at 8 >= 6: 2 */
    assert_dims(g, y, 4, (int64_t[]){1, 1, 2, 2});
    ds_graph_free(g);
}

static void test_global_pool_keeps_rank(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 2, 3, 5, 7);
    uint32_t y = node1(g, DS_OP_GLOBAL_AVGPOOL, x, NULL);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 4, (int64_t[]){2, 3, 1, 1});
    ds_graph_free(g);
}

static void test_gemm_transposes_and_bias_broadcast(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t A = add_in(g, "a", 2, 4, 3, 0, 0); /* transA: M=3, K=4 */
    uint32_t B = add_w(g, "b", 2, 5, 4, 0, 0);  /* transB: K=4, N=5 */
    uint32_t C = add_w(g, "c", 1, 5, 0, 0, 0);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.trans_a = a.trans_b = true;
    uint32_t in[3] = {A, B, C};
    uint32_t y = ds_graph_add_node(g, DS_OP_GEMM, "gemm", in, 3, &a, NULL);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 2, (int64_t[]){3, 5});
    assert_false(g->batchable); /* dims[0] of the input is 4 */
    ds_graph_free(g);
}

static void test_gemm_inner_mismatch_and_bad_bias_fail(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t A = add_in(g, "a", 2, 2, 3, 0, 0);
    uint32_t B = add_w(g, "b", 2, 4, 5, 0, 0);
    uint32_t y = node2(g, DS_OP_GEMM, A, B, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);

    g = ds_graph_new("g");
    A = add_in(g, "a", 2, 2, 3, 0, 0);
    B = add_w(g, "b", 2, 3, 5, 0, 0);
    uint32_t C = add_w(g, "c", 1, 3, 0, 0, 0); /* [3] does not broadcast to [2,5] */
    uint32_t in[3] = {A, B, C};
    y = ds_graph_add_node(g, DS_OP_GEMM, "gemm", in, 3, NULL, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_matmul_broadcast_batch_and_1d_operands(void **state)
{
    (void)state;
    struct {
        uint32_t ra, rb;
        int64_t a[4], b[4];
        uint32_t ro;
        int64_t o[4];
    } cases[] = {
        {4, 3, {2, 1, 3, 4}, {5, 4, 6}, 4, {2, 5, 3, 6}},
        {1, 2, {4}, {4, 6}, 1, {6}},
        {2, 1, {3, 4}, {4}, 1, {3}},
        {1, 1, {4}, {4}, 0, {0}},
        {3, 1, {2, 3, 4}, {4}, 2, {2, 3}},
        {1, 3, {4}, {2, 4, 6}, 2, {2, 6}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_graph *g = ds_graph_new("g");
        uint32_t A = ds_graph_add_input(g, "a", cases[i].ra, cases[i].a);
        uint32_t B = ds_graph_add_input(g, "b", cases[i].rb, cases[i].b);
        uint32_t y = node2(g, DS_OP_MATMUL, A, B, NULL);
        assert_int_equal(finish(g, y), DSTACK_OK);
        assert_dims(g, y, cases[i].ro, cases[i].o);
        ds_graph_free(g);
    }
    ds_graph *g = ds_graph_new("g");
    uint32_t A = add_in(g, "a", 3, 2, 3, 4, 0);
    uint32_t B = add_in(g, "b", 3, 3, 4, 5, 0); /* batch 2 vs 3 */
    uint32_t y = node2(g, DS_OP_MATMUL, A, B, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_add_numpy_broadcast_and_mismatch(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 3, 2, 3, 4, 0);
    uint32_t b = add_w(g, "b", 2, 3, 1, 0, 0);
    uint32_t y = node2(g, DS_OP_ADD, x, b, NULL);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 3, (int64_t[]){2, 3, 4});
    ds_graph_free(g);

    g = ds_graph_new("g");
    x = add_in(g, "x", 2, 2, 3, 0, 0);
    b = add_w(g, "b", 1, 4, 0, 0, 0);
    y = node2(g, DS_OP_MUL, x, b, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_sum_of_three_broadcasts(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t in[3] = {add_in(g, "a", 2, 3, 1, 0, 0), add_in(g, "b", 1, 4, 0, 0, 0),
                      add_in(g, "c", 2, 1, 4, 0, 0)};
    uint32_t y = ds_graph_add_node(g, DS_OP_SUM, "s", in, 3, NULL, NULL);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 2, (int64_t[]){3, 4});
    ds_graph_free(g);
}

static void test_prelu_slope_must_broadcast_to_input(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 3, 2, 2);
    uint32_t s = add_w(g, "s", 3, 3, 1, 1, 0);
    uint32_t y = node2(g, DS_OP_PRELU, x, s, NULL);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 4, (int64_t[]){1, 3, 2, 2});
    ds_graph_free(g);

    g = ds_graph_new("g");
    x = add_in(g, "x", 2, 2, 3, 0, 0);
    s = add_w(g, "s", 2, 4, 3, 0, 0); /* slope bigger than x: unidirectional fails */
    y = node2(g, DS_OP_PRELU, x, s, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_concat_sums_axis_and_checks_others(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t a = add_in(g, "a", 4, 1, 2, 3, 3), b = add_in(g, "b", 4, 1, 5, 3, 3);
    ds_op_attrs at;
    ds_op_attrs_init(&at);
    at.axis = 1;
    uint32_t y = node2(g, DS_OP_CONCAT, a, b, &at);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 4, (int64_t[]){1, 7, 3, 3});
    assert_true(g->batchable);
    ds_graph_free(g);

    g = ds_graph_new("g");
    a = add_in(g, "a", 4, 1, 2, 3, 3);
    b = add_in(g, "b", 4, 1, 5, 3, 4);
    y = node2(g, DS_OP_CONCAT, a, b, &at);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_flatten_axes(void **state)
{
    (void)state;
    int64_t want[5][2] = {{1, 120}, {2, 60}, {6, 20}, {24, 5}, {120, 1}};
    for (int axis = 0; axis <= 4; axis++) {
        ds_graph *g = ds_graph_new("g");
        uint32_t x = add_in(g, "x", 4, 2, 3, 4, 5);
        ds_op_attrs a;
        ds_op_attrs_init(&a);
        a.axis = axis;
        uint32_t y = node1(g, DS_OP_FLATTEN, x, &a);
        assert_int_equal(finish(g, y), DSTACK_OK);
        assert_dims(g, y, 2, want[axis]);
        ds_graph_free(g);
    }
}

static dstack_status reshape_to(uint32_t rank, const int64_t *target, bool allowzero,
                                ds_graph **out)
{
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 3, 2, 3, 4, 0);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.shape_rank = rank;
    a.allowzero = allowzero;
    for (uint32_t i = 0; i < rank; i++)
        a.shape[i] = target[i];
    uint32_t y = node1(g, DS_OP_RESHAPE, x, &a);
    dstack_status st = finish(g, y);
    *out = g;
    return st;
}

static void test_reshape_zero_copies_and_minus_one_infers(void **state)
{
    (void)state;
    ds_graph *g;
    assert_int_equal(reshape_to(2, (int64_t[]){0, -1}, false, &g), DSTACK_OK);
    assert_dims(g, g->nodes[0].output, 2, (int64_t[]){2, 12});
    ds_graph_free(g);
    assert_int_equal(reshape_to(3, (int64_t[]){4, -1, 2}, false, &g), DSTACK_OK);
    assert_dims(g, g->nodes[0].output, 3, (int64_t[]){4, 3, 2});
    ds_graph_free(g);
    assert_int_equal(reshape_to(4, (int64_t[]){0, 0, 0, 1}, false, &g), DSTACK_OK);
    assert_dims(g, g->nodes[0].output, 4, (int64_t[]){2, 3, 4, 1});
    ds_graph_free(g);
}

static void test_reshape_errors(void **state)
{
    (void)state;
    ds_graph *g;
    assert_int_equal(reshape_to(2, (int64_t[]){-1, -1}, false, &g), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
    assert_int_equal(reshape_to(2, (int64_t[]){5, -1}, false, &g), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
    assert_int_equal(reshape_to(2, (int64_t[]){6, 5}, false, &g), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
    /* allowzero: a literal 0 means an empty tensor, which we refuse */
    assert_int_equal(reshape_to(2, (int64_t[]){0, 24}, true, &g), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
    /* a 0 beyond the input's rank has nothing to copy */
    assert_int_equal(reshape_to(4, (int64_t[]){2, 3, 4, 0}, false, &g), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_transpose_perm_and_default_reverse(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 3, 2, 3, 4, 0);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.perm[0] = 1;
    a.perm[1] = 2;
    a.perm[2] = 0;
    uint32_t y = node1(g, DS_OP_TRANSPOSE, x, &a);
    uint32_t z = node1(g, DS_OP_TRANSPOSE, x, NULL); /* unset perm: reverse */
    assert_int_equal(ds_graph_mark_output(g, z), DSTACK_OK);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 3, (int64_t[]){3, 4, 2});
    assert_dims(g, z, 3, (int64_t[]){4, 3, 2});
    ds_graph_free(g);

    g = ds_graph_new("g");
    x = add_in(g, "x", 3, 2, 3, 4, 0);
    a.perm[2] = 1; /* 1,2,1: not a permutation */
    y = node1(g, DS_OP_TRANSPOSE, x, &a);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_softmax_axis_out_of_range_fails(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 2, 1, 3, 0, 0);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.axis = 2;
    uint32_t y = node1(g, DS_OP_SOFTMAX, x, &a);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_batchnorm_param_size_checked(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 3, 2, 2);
    uint32_t in[5] = {x, add_w(g, "s", 1, 3, 0, 0, 0), add_w(g, "b", 1, 3, 0, 0, 0),
                      add_w(g, "m", 1, 4, 0, 0, 0), add_w(g, "v", 1, 3, 0, 0, 0)};
    uint32_t y = ds_graph_add_node(g, DS_OP_BATCHNORM, "bn", in, 5, NULL, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    assert_non_null(strstr(ds_error_message(), "BatchNormalization"));
    ds_graph_free(g);
}

static void test_wrong_input_count_fails_with_shape(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 2, 1, 3, 0, 0);
    uint32_t y = node2(g, DS_OP_RELU, x, x, NULL);
    assert_int_equal(finish(g, y), DSTACK_ERR_SHAPE);
    ds_graph_free(g);
}

static void test_no_outputs_and_use_before_produce_are_invalid(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 2, 1, 3, 0, 0);
    uint32_t y = node1(g, DS_OP_RELU, x, NULL);
    assert_int_equal(ds_graph_finalize(g), DSTACK_ERR_INVALID_ARGUMENT);
    uint32_t w = node1(g, DS_OP_RELU, y, NULL);
    g->nodes[0].inputs[0] = w; /* node 0 now reads node 1's output */
    assert_int_equal(finish(g, w), DSTACK_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(ds_error_message(), "before it is produced"));
    ds_graph_free(g);
}

static void test_adders_reject_bad_arguments(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    int64_t dims[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(ds_graph_add_input(g, "x", 9, dims), DS_TENSOR_NONE);
    int64_t bad[2] = {2, 0};
    assert_int_equal(ds_graph_add_const(g, "c", 2, bad, filled(2, 0, 1)), DS_TENSOR_NONE);
    uint32_t in[1] = {42};
    assert_int_equal(ds_graph_add_node(g, DS_OP_RELU, "r", in, 1, NULL, NULL), DS_TENSOR_NONE);
    assert_int_equal(ds_graph_add_node(g, DS_OP_SUM, "r", in, 17, NULL, NULL), DS_TENSOR_NONE);
    assert_int_equal(ds_graph_mark_output(g, 99), DSTACK_ERR_INVALID_ARGUMENT);
    uint32_t x = add_in(g, "x", 1, 3, 0, 0, 0);
    assert_int_equal(ds_graph_mark_output(g, x), DSTACK_OK);
    assert_int_equal(ds_graph_mark_output(g, x), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_graph_find_tensor(g, "x"), x);
    assert_int_equal(ds_graph_find_tensor(g, "nope"), DS_TENSOR_NONE);
    ds_graph_free(g);
}

/* ---- batchable ---- */

/* x[1,3,8,8] -> conv -> relu -> gap -> flatten(1) -> gemm(const) */
static ds_graph *small_cnn(int64_t batch_dim)
{
    ds_graph *g = ds_graph_new("cnn");
    uint32_t x = add_in(g, "x", 4, batch_dim, 3, 8, 8);
    uint32_t w = add_w(g, "w", 4, 4, 3, 3, 3);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    uint32_t c = node2(g, DS_OP_CONV, x, w, &a);
    uint32_t r = node1(g, DS_OP_RELU, c, NULL);
    uint32_t p = node1(g, DS_OP_GLOBAL_AVGPOOL, r, NULL);
    ds_op_attrs_init(&a);
    a.axis = 1;
    uint32_t f = node1(g, DS_OP_FLATTEN, p, &a);
    uint32_t in[3] = {f, add_w(g, "fw", 2, 4, 10, 0, 0), add_w(g, "fb", 1, 10, 0, 0, 0)};
    uint32_t y = ds_graph_add_node(g, DS_OP_GEMM, "fc", in, 3, NULL, "logits");
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    return g;
}

static void test_batchable_cnn_and_symbolic_batch(void **state)
{
    (void)state;
    ds_graph *g = small_cnn(1);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    assert_true(g->batchable);
    ds_graph_free(g);
    g = small_cnn(-1);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    assert_true(g->batchable);
    assert_int_equal(g->tensors[g->inputs[0]].dims[0], 1);
    ds_graph_free(g);
    g = small_cnn(2);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    assert_false(g->batchable);
    ds_graph_free(g);
}

/* One op on x[1,3,4,5] with attrs `a`, optionally a second operand. */
static bool batchable_of(ds_op_kind op, const ds_op_attrs *a, uint32_t second_rank,
                         bool second_const)
{
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 3, 4, 5);
    uint32_t y;
    if (second_rank) {
        int64_t d4[4] = {1, 3, 4, 5};
        const int64_t *d = d4 + (4 - second_rank);
        uint32_t s;
        if (second_const) {
            int64_t n = 1;
            for (uint32_t i = 0; i < second_rank; i++)
                n *= d[i];
            s = ds_graph_add_const(g, "s", second_rank, d, filled(n, 0, 1));
        } else {
            s = ds_graph_add_input(g, "s", second_rank, d);
        }
        y = node2(g, op, x, s, a);
    } else {
        y = node1(g, op, x, a);
    }
    assert_int_equal(finish(g, y), DSTACK_OK);
    bool b = g->batchable;
    ds_graph_free(g);
    return b;
}

static void test_batchable_decisions_per_op(void **state)
{
    (void)state;
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.axis = 0;
    assert_false(batchable_of(DS_OP_FLATTEN, &a, 0, false));
    assert_false(batchable_of(DS_OP_SOFTMAX, &a, 0, false));
    a.softmax_legacy = true;
    assert_false(batchable_of(DS_OP_SOFTMAX, &a, 0, false));
    a.axis = 1;
    assert_true(batchable_of(DS_OP_SOFTMAX, &a, 0, false));
    a.softmax_legacy = false;
    assert_true(batchable_of(DS_OP_SOFTMAX, &a, 0, false));
    assert_true(batchable_of(DS_OP_FLATTEN, &a, 0, false));

    ds_op_attrs_init(&a);
    a.perm[0] = 0, a.perm[1] = 2, a.perm[2] = 1, a.perm[3] = 3;
    assert_true(batchable_of(DS_OP_TRANSPOSE, &a, 0, false));
    a.perm[0] = 1, a.perm[1] = 0;
    a.perm[2] = 2;
    assert_false(batchable_of(DS_OP_TRANSPOSE, &a, 0, false));

    ds_op_attrs_init(&a);
    a.shape_rank = 2;
    a.shape[0] = 1, a.shape[1] = -1;
    assert_true(batchable_of(DS_OP_RESHAPE, &a, 0, false));
    a.shape[0] = 0;
    assert_true(batchable_of(DS_OP_RESHAPE, &a, 0, false));
    a.shape[0] = -1, a.shape[1] = 60;
    assert_false(batchable_of(DS_OP_RESHAPE, &a, 0, false));
    a.shape_rank = 1;
    a.shape[0] = 60;
    assert_false(batchable_of(DS_OP_RESHAPE, &a, 0, false));

    /* broadcasting ops: activations of full rank only; constants may be lower */
    assert_true(batchable_of(DS_OP_ADD, NULL, 4, false));
    assert_true(batchable_of(DS_OP_ADD, NULL, 2, true));
    assert_false(batchable_of(DS_OP_ADD, NULL, 2, false));
    assert_true(batchable_of(DS_OP_MUL, NULL, 3, true));
    assert_false(batchable_of(DS_OP_MUL, NULL, 3, false));
}

static void test_batchable_matmul_needs_constant_b(void **state)
{
    (void)state;
    for (int bconst = 0; bconst <= 1; bconst++) {
        ds_graph *g = ds_graph_new("g");
        uint32_t x = add_in(g, "x", 3, 1, 4, 6, 0);
        int64_t d[2] = {6, 2};
        uint32_t b = bconst ? ds_graph_add_const(g, "b", 2, d, filled(12, 0, 1))
                            : ds_graph_add_input(g, "b", 2, d);
        uint32_t y = node2(g, DS_OP_MATMUL, x, b, NULL);
        assert_int_equal(finish(g, y), DSTACK_OK);
        assert_int_equal(g->batchable, bconst);
        ds_graph_free(g);
    }
    /* Gemm with transA would batch the reduced axis */
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 2, 1, 6, 0, 0);
    uint32_t b = add_w(g, "b", 2, 1, 3, 0, 0);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.trans_a = true;
    uint32_t y = node2(g, DS_OP_GEMM, x, b, &a);
    assert_int_equal(finish(g, y), DSTACK_OK);
    assert_dims(g, y, 2, (int64_t[]){6, 3});
    assert_false(g->batchable);
    ds_graph_free(g);
}

/* ---- counts ---- */

static void test_param_and_flop_counts_by_hand(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("tiny");
    uint32_t x = add_in(g, "x", 4, 1, 2, 4, 4);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    uint32_t cin[3] = {x, add_w(g, "w", 4, 3, 2, 3, 3), add_w(g, "b", 1, 3, 0, 0, 0)};
    uint32_t c = ds_graph_add_node(g, DS_OP_CONV, "conv", cin, 3, &a, NULL);
    uint32_t r = node1(g, DS_OP_RELU, c, NULL);
    uint32_t p = node1(g, DS_OP_GLOBAL_AVGPOOL, r, NULL);
    ds_op_attrs_init(&a);
    a.axis = 1;
    uint32_t f = node1(g, DS_OP_FLATTEN, p, &a);
    uint32_t gin[3] = {f, add_w(g, "fw", 2, 3, 5, 0, 0), add_w(g, "fb", 1, 5, 0, 0, 0)};
    uint32_t y = ds_graph_add_node(g, DS_OP_GEMM, "fc", gin, 3, NULL, NULL);
    assert_int_equal(finish(g, y), DSTACK_OK);
    /* params: 3*2*3*3 + 3 + 3*5 + 5 = 54 + 3 + 15 + 5 = 77 */
    assert_int_equal(ds_graph_param_count(g), 77);
    /* conv: 1*3*4*4 outputs * 2*3*3 MACs * 2 = 1728; relu 48; gap reads
     * its 48 inputs; flatten 3; gemm 2*1*5*3 = 30: total 1857 */
    assert_int_equal(ds_graph_flops(g), 1857);
    assert_string_equal(ds_op_name(DS_OP_GEMM), "Gemm");
    assert_string_equal(ds_op_name(DS_OP_GLOBAL_AVGPOOL), "GlobalAveragePool");
    assert_string_equal(ds_op_name((ds_op_kind)999), "Unknown");
    ds_graph_free(g);
}

/* ---- folding (structure; numerics are checked in test_cpu_exec.c) ---- */

/* x -> conv -> bn -> relu (-> output "y") */
static ds_graph *conv_bn_relu(bool conv_out_is_output, ds_op_kind act)
{
    ds_graph *g = ds_graph_new("cbr");
    uint32_t x = add_in(g, "x", 4, 1, 2, 5, 5);
    uint32_t cin[2] = {x, add_w(g, "w", 4, 3, 2, 3, 3)};
    uint32_t c = ds_graph_add_node(g, DS_OP_CONV, "conv", cin, 2, NULL, "c");
    uint32_t bin[5] = {c, add_w(g, "s", 1, 3, 0, 0, 0), add_w(g, "b", 1, 3, 0, 0, 0),
                       add_w(g, "m", 1, 3, 0, 0, 0), add_w(g, "v", 1, 3, 0, 0, 0)};
    uint32_t b = ds_graph_add_node(g, DS_OP_BATCHNORM, "bn", bin, 5, NULL, "b");
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.clip_min = 0, a.clip_max = 6;
    uint32_t r = ds_graph_add_node(g, act, "act", &b, 1, &a, "y");
    assert_int_equal(ds_graph_mark_output(g, r), DSTACK_OK);
    if (conv_out_is_output)
        assert_int_equal(ds_graph_mark_output(g, c), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    return g;
}

static void test_fold_conv_bn_relu_into_one_conv_keeping_output_name(void **state)
{
    (void)state;
    ds_graph *g = conv_bn_relu(false, DS_OP_RELU);
    assert_int_equal(ds_graph_param_count(g), 54 + 12);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    assert_true(g->finalized);
    assert_int_equal(g->n_nodes, 1);
    assert_int_equal(g->nodes[0].op, DS_OP_CONV);
    assert_int_equal(g->nodes[0].attrs.activation, DS_ACT_RELU);
    assert_int_equal(g->nodes[0].n_inputs, 3);
    assert_int_equal(g->n_outputs, 1);
    assert_string_equal(g->tensors[g->outputs[0]].name, "y");
    assert_int_equal(g->tensors[g->outputs[0]].producer, 0);
    /* w + folded bias; the BN constants and the old w are gone */
    assert_int_equal(ds_graph_param_count(g), 54 + 3);
    assert_int_equal(g->n_tensors, 4); /* x, y, w', b' */
    assert_int_equal(ds_graph_find_tensor(g, "c"), DS_TENSOR_NONE);
    ds_graph_free(g);
}

static void test_fold_clip_becomes_clip_activation(void **state)
{
    (void)state;
    ds_graph *g = conv_bn_relu(false, DS_OP_CLIP);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    assert_int_equal(g->n_nodes, 1);
    assert_int_equal(g->nodes[0].attrs.activation, DS_ACT_CLIP);
    assert_true(g->nodes[0].attrs.clip_min == 0.0f && g->nodes[0].attrs.clip_max == 6.0f);
    ds_graph_free(g);
}

static void test_fold_skips_bn_when_conv_output_is_graph_output(void **state)
{
    (void)state;
    ds_graph *g = conv_bn_relu(true, DS_OP_RELU);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    assert_int_equal(g->n_nodes, 3);
    assert_int_equal(g->n_outputs, 2);
    assert_string_equal(g->tensors[g->outputs[0]].name, "y");
    assert_string_equal(g->tensors[g->outputs[1]].name, "c");
    ds_graph_free(g);
}

static void test_fold_skips_relu_when_conv_has_two_readers(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 1, 3, 3);
    uint32_t w = add_w(g, "w", 4, 1, 1, 1, 1);
    uint32_t c = node2(g, DS_OP_CONV, x, w, NULL);
    uint32_t r = node1(g, DS_OP_RELU, c, NULL);
    uint32_t s = node2(g, DS_OP_ADD, r, c, NULL);
    /* a dead branch: never reaches an output, so it is dropped */
    uint32_t dead = node1(g, DS_OP_SIGMOID, x, NULL);
    (void)dead;
    assert_int_equal(finish(g, s), DSTACK_OK);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    assert_int_equal(g->n_nodes, 3);
    assert_int_equal(g->nodes[0].attrs.activation, DS_ACT_NONE);
    assert_int_equal(g->nodes[1].op, DS_OP_RELU);
    ds_graph_free(g);
}

static void test_fold_ignores_reads_from_dead_branches(void **state)
{
    (void)state;
    /* conv -> relu -> output, plus a Sigmoid of the conv output that feeds
     * nothing: the dead read must not keep the relu from fusing */
    ds_graph *g = ds_graph_new("g");
    uint32_t x = add_in(g, "x", 4, 1, 1, 3, 3);
    uint32_t w = add_w(g, "w", 4, 1, 1, 1, 1);
    uint32_t c = node2(g, DS_OP_CONV, x, w, NULL);
    uint32_t r = node1(g, DS_OP_RELU, c, NULL);
    node1(g, DS_OP_SIGMOID, c, NULL);
    assert_int_equal(finish(g, r), DSTACK_OK);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    assert_int_equal(g->n_nodes, 1);
    assert_int_equal(g->nodes[0].attrs.activation, DS_ACT_RELU);
    assert_int_equal(g->n_tensors, 3); /* x, w, relu output */
    ds_graph_free(g);
}

/* x[1,4,6,6] -> conv 3x3 (groups g) + bias -> BN -> act; a second branch
 * Gemm -> Relu after flatten. Returns the graph, finalized, not folded. */
static ds_graph *fold_case(uint32_t groups, ds_op_kind act)
{
    ds_graph *g = ds_graph_new("foldcase");
    uint32_t x = add_in(g, "x", 4, 1, 4, 6, 6);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.group = groups;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    a.stride[0] = 2;
    int64_t wd[4] = {4, 4 / groups, 3, 3};
    float *w = filled(test_numel(4, wd), -0.4f, 0.0137f);
    uint32_t cin[3] = {x, ds_graph_add_const(g, "w", 4, wd, w), add_w(g, "cb", 1, 4, 0, 0, 0)};
    uint32_t c = ds_graph_add_node(g, DS_OP_CONV, "conv", cin, 3, &a, NULL);
    float *sc = filled(4, 0.5f, 0.3f), *bi = filled(4, -0.2f, 0.1f);
    float *mu = filled(4, 0.05f, -0.02f), *va = filled(4, 0.2f, 0.7f);
    uint32_t bin[5] = {c, ds_graph_add_const(g, "sc", 1, (int64_t[]){4}, sc),
                       ds_graph_add_const(g, "bi", 1, (int64_t[]){4}, bi),
                       ds_graph_add_const(g, "mu", 1, (int64_t[]){4}, mu),
                       ds_graph_add_const(g, "va", 1, (int64_t[]){4}, va)};
    ds_op_attrs bn;
    ds_op_attrs_init(&bn);
    bn.epsilon = 1e-3f;
    uint32_t b = ds_graph_add_node(g, DS_OP_BATCHNORM, "bn", bin, 5, &bn, NULL);
    ds_op_attrs aa;
    ds_op_attrs_init(&aa);
    aa.clip_min = 0.0f, aa.clip_max = 0.05f;
    uint32_t r = ds_graph_add_node(g, act, "act", &b, 1, &aa, "features");
    ds_op_attrs f;
    ds_op_attrs_init(&f);
    f.axis = 1;
    uint32_t fl = node1(g, DS_OP_FLATTEN, r, &f);
    uint32_t gin[2] = {fl, add_w(g, "fw", 2, 4 * 3 * 6, 7, 0, 0)};
    uint32_t gm = ds_graph_add_node(g, DS_OP_GEMM, "fc", gin, 2, NULL, NULL);
    uint32_t y = ds_graph_add_node(g, DS_OP_RELU, "fcrelu", &gm, 1, NULL, "logits");
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    assert_int_equal(ds_graph_mark_output(g, r), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    return g;
}

static void run_fold_case(uint32_t groups, ds_op_kind act)
{
    ds_graph *plain = fold_case(groups, act), *folded = fold_case(groups, act);
    assert_int_equal(ds_graph_fold(folded), DSTACK_OK);
    /* conv+bn+act -> conv, flatten stays, gemm+relu -> gemm */
    assert_int_equal(folded->n_nodes, 3);
    assert_int_equal(folded->nodes[0].attrs.activation,
                     act == DS_OP_RELU ? DS_ACT_RELU : DS_ACT_CLIP);
    assert_int_equal(folded->nodes[2].op, DS_OP_GEMM);
    assert_int_equal(folded->nodes[2].attrs.activation, DS_ACT_RELU);
    assert_string_equal(folded->tensors[folded->outputs[0]].name, "logits");
    assert_string_equal(folded->tensors[folded->outputs[1]].name, "features");
    float *x = filled(144, -1.0f, 0.0151f);
    float y0[7], y1[7], f0[72], f1[72];
    const float *ins[1] = {x};
    float *o0[2] = {y0, f0}, *o1[2] = {y1, f1};
    test_run_graph(plain, 1, 1, 1, ins, o0);
    test_run_graph(folded, 1, 1, 1, ins, o1);
    test_assert_close(y1, y0, 7, 1e-5f);
    test_assert_close(f1, f0, 72, 1e-5f);
    free(x);
    ds_graph_free(plain);
    ds_graph_free(folded);
}

static void test_fold_conv_bn_relu_same_output_as_unfolded(void **state)
{
    (void)state;
    run_fold_case(1, DS_OP_RELU);
}

static void test_fold_grouped_conv_bn_clip_same_output_as_unfolded(void **state)
{
    (void)state;
    run_fold_case(2, DS_OP_CLIP);
    run_fold_case(4, DS_OP_RELU); /* depthwise */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_output_size_stride2_pad1),
        cmocka_unit_test(test_conv_output_size_dilation2_asymmetric_pads),
        cmocka_unit_test(test_conv_group_mismatch_fails_with_shape_and_names_node),
        cmocka_unit_test(test_conv_kernel_larger_than_padded_input_fails),
        cmocka_unit_test(test_maxpool_ceil_mode_adds_partial_window),
        cmocka_unit_test(test_pool_ceil_mode_drops_window_starting_in_right_pad),
        cmocka_unit_test(test_global_pool_keeps_rank),
        cmocka_unit_test(test_gemm_transposes_and_bias_broadcast),
        cmocka_unit_test(test_gemm_inner_mismatch_and_bad_bias_fail),
        cmocka_unit_test(test_matmul_broadcast_batch_and_1d_operands),
        cmocka_unit_test(test_add_numpy_broadcast_and_mismatch),
        cmocka_unit_test(test_sum_of_three_broadcasts),
        cmocka_unit_test(test_prelu_slope_must_broadcast_to_input),
        cmocka_unit_test(test_concat_sums_axis_and_checks_others),
        cmocka_unit_test(test_flatten_axes),
        cmocka_unit_test(test_reshape_zero_copies_and_minus_one_infers),
        cmocka_unit_test(test_reshape_errors),
        cmocka_unit_test(test_transpose_perm_and_default_reverse),
        cmocka_unit_test(test_softmax_axis_out_of_range_fails),
        cmocka_unit_test(test_batchnorm_param_size_checked),
        cmocka_unit_test(test_wrong_input_count_fails_with_shape),
        cmocka_unit_test(test_no_outputs_and_use_before_produce_are_invalid),
        cmocka_unit_test(test_adders_reject_bad_arguments),
        cmocka_unit_test(test_batchable_cnn_and_symbolic_batch),
        cmocka_unit_test(test_batchable_decisions_per_op),
        cmocka_unit_test(test_batchable_matmul_needs_constant_b),
        cmocka_unit_test(test_param_and_flop_counts_by_hand),
        cmocka_unit_test(test_fold_conv_bn_relu_into_one_conv_keeping_output_name),
        cmocka_unit_test(test_fold_clip_becomes_clip_activation),
        cmocka_unit_test(test_fold_skips_bn_when_conv_output_is_graph_output),
        cmocka_unit_test(test_fold_skips_relu_when_conv_has_two_readers),
        cmocka_unit_test(test_fold_ignores_reads_from_dead_branches),
        cmocka_unit_test(test_fold_conv_bn_relu_same_output_as_unfolded),
        cmocka_unit_test(test_fold_grouped_conv_bn_clip_same_output_as_unfolded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
