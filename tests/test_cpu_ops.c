/* test_cpu_ops.c - every op of the cpu executor against values computed by
 * hand (the arithmetic is in the comments), on tensors small enough to
 * check on paper. */
#include "cpu_test_util.h"

#define T(rank_, ...) .rank = (rank_), .dims = {__VA_ARGS__}
#define TOL 1e-6f

static float *seq(int64_t n, float start)
{
    float *d = malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    for (int64_t i = 0; i < n; i++)
        d[i] = start + (float)i;
    return d;
}

static void check(float *got, const float *want, int64_t n)
{
    test_assert_close(got, want, n, TOL);
    free(got);
}

/* ---- convolution ---- */

static void test_conv_stride2_pad1_matches_hand_computed(void **state)
{
    (void)state;
    float *x = seq(16, 0); /* x[h][w] = 4h + w */
    float w[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, b[1] = {1};
    test_operand ops[3] = {{T(4, 1, 1, 4, 4), .data = x},
                           {T(4, 1, 1, 3, 3), .data = w, .is_const = true},
                           {T(1, 1), .data = b, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.stride[0] = a.stride[1] = 2;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    /* windows: rows/cols {-1..1} and {1..3}:
     * (0,0): 0+1+4+5 = 10      (0,1): 1+2+3+5+6+7 = 24
     * (1,0): 4+5+8+9+12+13 = 51 (1,1): 5+6+7+9+10+11+13+14+15 = 90; + bias 1 */
    float want[4] = {11, 25, 52, 91};
    check(test_run_op(DS_OP_CONV, &a, ops, 3, 4, (int64_t[]){1, 1, 2, 2}), want, 4);
    free(x);
}

static void test_conv_dilation2_matches_hand_computed(void **state)
{
    (void)state;
    float *x = seq(25, 0); /* x[h][w] = 5h + w */
    float w[4] = {1, 2, 3, 4};
    test_operand ops[2] = {{T(4, 1, 1, 5, 5), .data = x},
                           {T(4, 1, 1, 2, 2), .data = w, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.dilation[0] = a.dilation[1] = 2;
    /* y = 1 x[h][w] + 2 x[h][w+2] + 3 x[h+2][w] + 4 x[h+2][w+2]
     *   = 10 (5h + w) + 2*2 + 3*10 + 4*12 = 10 (5h + w) + 82 */
    float want[9];
    for (int h = 0; h < 3; h++)
        for (int ww = 0; ww < 3; ww++)
            want[h * 3 + ww] = 10.0f * (5 * h + ww) + 82.0f;
    check(test_run_op(DS_OP_CONV, &a, ops, 2, 4, (int64_t[]){1, 1, 3, 3}), want, 9);
    free(x);
}

static void test_conv_groups_pointwise_and_spatial(void **state)
{
    (void)state;
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}; /* ch0 = 1..4, ch1 = 5..8 (2x2) */
    /* 1x1 kernels, 2 groups, 4 outputs: y0 = 1 ch0, y1 = 2 ch0, y2 = 3 ch1, y3 = 4 ch1 */
    float w1[4] = {1, 2, 3, 4};
    test_operand ops[2] = {{T(4, 1, 2, 2, 2), .data = x},
                           {T(4, 4, 1, 1, 1), .data = w1, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.group = 2;
    float want1[16] = {1, 2, 3, 4, 2, 4, 6, 8, 15, 18, 21, 24, 20, 24, 28, 32};
    check(test_run_op(DS_OP_CONV, &a, ops, 2, 4, (int64_t[]){1, 4, 2, 2}), want1, 16);
    /* 2x2 kernels over the 2x2 planes: y0 = 1*1 + 1*4 = 5, y1 = 1*6 + 1*7 = 13 */
    float w2[8] = {1, 0, 0, 1, 0, 1, 1, 0};
    ops[1] = (test_operand){T(4, 2, 1, 2, 2), .data = w2, .is_const = true};
    float want2[2] = {5, 13};
    check(test_run_op(DS_OP_CONV, &a, ops, 2, 4, (int64_t[]){1, 2, 1, 1}), want2, 2);
}

static void test_conv_multichannel_im2col_matches_direct_sum(void **state)
{
    (void)state;
    /* 3 in channels, 2 out, 3x3 kernel, stride (1,2), pad (1,0,0,1) on 4x5:
     * compare with a direct six-loop sum written here. */
    int64_t C = 3, H = 4, W = 5, M = 2, kh = 3, kw = 3;
    float *x = seq(C * H * W, -7), *w = seq(M * C * kh * kw, -20);
    for (int i = 0; i < M * C * kh * kw; i++)
        w[i] *= 0.125f;
    float b[2] = {0.5f, -1.0f};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.stride[0] = 1, a.stride[1] = 2;
    a.pads[0] = 1, a.pads[1] = 0, a.pads[2] = 0, a.pads[3] = 1;
    int64_t OH = (H + 1 - kh) / 1 + 1, OW = (W + 1 - kw) / 2 + 1; /* 3, 2 */
    float want[2 * 3 * 2];
    for (int64_t m = 0; m < M; m++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double s = b[m];
                for (int64_t c = 0; c < C; c++)
                    for (int64_t i = 0; i < kh; i++)
                        for (int64_t j = 0; j < kw; j++) {
                            int64_t ih = oh - 1 + i, iw = ow * 2 + j;
                            if (ih < 0 || ih >= H || iw >= W)
                                continue;
                            s += (double)x[(c * H + ih) * W + iw] * w[((m * C + c) * kh + i) * kw + j];
                        }
                want[(m * OH + oh) * OW + ow] = (float)s;
            }
    test_operand ops[3] = {{T(4, 1, 3, 4, 5), .data = x},
                           {T(4, 2, 3, 3, 3), .data = w, .is_const = true},
                           {T(1, 2), .data = b, .is_const = true}};
    float *got = test_run_op(DS_OP_CONV, &a, ops, 3, 4, (int64_t[]){1, 2, 3, 2});
    test_assert_close(got, want, 12, 1e-5f);
    free(got);
    free(x);
    free(w);
}

static void test_depthwise_conv_pad1_stride1_and_stride2(void **state)
{
    (void)state;
    float x[18] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    float w[18] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    float b[2] = {0, 0.5f};
    test_operand ops[3] = {{T(4, 1, 2, 3, 3), .data = x},
                           {T(4, 2, 1, 3, 3), .data = w, .is_const = true},
                           {T(1, 2), .data = b, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.group = 2;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    /* ch0: sums of 3x3 neighbourhoods of [[1,2,3],[4,5,6],[7,8,9]];
     * ch1: ones under kernel [[0,1,2],[3,4,5],[6,7,8]]: the sum of the kernel
     * taps that land inside, e.g. corner (0,0) keeps 4+5+7+8 = 24; +0.5 bias */
    float want[18] = {12, 21, 16, 27, 45, 33, 24, 39, 28,
                      24.5f, 33.5f, 20.5f, 27.5f, 36.5f, 21.5f, 12.5f, 15.5f, 8.5f};
    check(test_run_op(DS_OP_CONV, &a, ops, 3, 4, (int64_t[]){1, 2, 3, 3}), want, 18);
    a.stride[0] = a.stride[1] = 2; /* the corners of the stride-1 result */
    float want2[8] = {12, 16, 24, 28, 24.5f, 20.5f, 12.5f, 8.5f};
    check(test_run_op(DS_OP_CONV, &a, ops, 3, 4, (int64_t[]){1, 2, 2, 2}), want2, 8);
}

/* Direct-sum reference convolution (groups, stride, dilation, pads). */
static void ref_conv(const float *x, const float *w, const float *b, float *y, int64_t C, int64_t H,
                     int64_t W, int64_t M, int64_t kh, int64_t kw, const ds_op_attrs *a,
                     int64_t OH, int64_t OW)
{
    int64_t G = a->group, Cg = C / G, Mg = M / G;
    for (int64_t m = 0; m < M; m++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double s = b ? b[m] : 0.0;
                int64_t g = m / Mg;
                for (int64_t c = 0; c < Cg; c++)
                    for (int64_t i = 0; i < kh; i++)
                        for (int64_t j = 0; j < kw; j++) {
                            int64_t ih = oh * a->stride[0] - a->pads[0] + i * a->dilation[0];
                            int64_t iw = ow * a->stride[1] - a->pads[1] + j * a->dilation[1];
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                continue;
                            s += (double)x[((g * Cg + c) * H + ih) * W + iw] *
                                 w[((m * Cg + c) * kh + i) * kw + j];
                        }
                y[(m * OH + oh) * OW + ow] = (float)s;
            }
}

static void test_depthwise_conv_variants_match_direct_sum(void **state)
{
    (void)state;
    /* kernel, stride, dilation, pads (t,l,b,r) on a 3-channel 9x11 input */
    struct { int k, s, d, p[4]; } v[] = {
        {3, 1, 1, {1, 1, 1, 1}}, {3, 2, 1, {1, 1, 1, 1}}, {3, 1, 2, {2, 2, 2, 2}},
        {5, 2, 1, {2, 2, 2, 2}}, {3, 1, 1, {0, 2, 1, 0}}, {3, 2, 1, {0, 0, 0, 0}},
        {1, 1, 1, {0, 0, 0, 0}}, {7, 1, 1, {3, 3, 3, 3}},
    };
    int64_t C = 3, H = 9, W = 11;
    float *x = seq(C * H * W, -50);
    for (size_t t = 0; t < sizeof v / sizeof v[0]; t++) {
        int64_t k = v[t].k;
        float *w = seq(C * k * k, -10);
        for (int64_t i = 0; i < C * k * k; i++)
            w[i] *= 0.25f;
        float b[3] = {0.5f, -0.25f, 2};
        ds_op_attrs a;
        ds_op_attrs_init(&a);
        a.group = 3;
        a.stride[0] = a.stride[1] = (uint32_t)v[t].s;
        a.dilation[0] = a.dilation[1] = (uint32_t)v[t].d;
        for (int i = 0; i < 4; i++)
            a.pads[i] = (uint32_t)v[t].p[i];
        int64_t ek = (k - 1) * v[t].d + 1;
        int64_t OH = (H + v[t].p[0] + v[t].p[2] - ek) / v[t].s + 1;
        int64_t OW = (W + v[t].p[1] + v[t].p[3] - ek) / v[t].s + 1;
        float *want = malloc((size_t)(C * OH * OW) * sizeof *want);
        ref_conv(x, w, b, want, C, H, W, C, k, k, &a, OH, OW);
        test_operand ops[3] = {{T(4, 1, 3, 9, 11), .data = x},
                               {T(4, 3, 1, k, k), .data = w, .is_const = true},
                               {T(1, 3), .data = b, .is_const = true}};
        float *got = test_run_op(DS_OP_CONV, &a, ops, 3, 4, (int64_t[]){1, 3, OH, OW});
        test_assert_close(got, want, C * OH * OW, 1e-6f);
        free(got);
        free(want);
        free(w);
    }
    free(x);
}

static void test_depthwise_conv_large_plane_edge_path_matches_direct_sum(void **state)
{
    (void)state;
    /* 2 x 400 x 401 planes: too big for the padded copy in the worker
     * scratch, so the kernel takes its interior/edge path */
    int64_t C = 2, H = 400, W = 401;
    float *x = malloc((size_t)(C * H * W) * sizeof *x);
    for (int64_t i = 0; i < C * H * W; i++)
        x[i] = (float)(i % 23) - 11.0f;
    struct { int k, s, d, p; } v[] = {{3, 1, 1, 1}, {3, 2, 1, 1}, {5, 2, 2, 3}};
    for (size_t t = 0; t < sizeof v / sizeof v[0]; t++) {
        int64_t k = v[t].k;
        float *w = seq(C * k * k, -6);
        float b[2] = {1, -1};
        ds_op_attrs a;
        ds_op_attrs_init(&a);
        a.group = 2;
        a.stride[0] = a.stride[1] = (uint32_t)v[t].s;
        a.dilation[0] = a.dilation[1] = (uint32_t)v[t].d;
        a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = (uint32_t)v[t].p;
        int64_t ek = (k - 1) * v[t].d + 1;
        int64_t OH = (H + 2 * v[t].p - ek) / v[t].s + 1, OW = (W + 2 * v[t].p - ek) / v[t].s + 1;
        float *want = malloc((size_t)(C * OH * OW) * sizeof *want);
        ref_conv(x, w, b, want, C, H, W, C, k, k, &a, OH, OW);
        test_operand ops[3] = {{T(4, 1, 2, 400, 401), .data = x},
                               {T(4, 2, 1, k, k), .data = w, .is_const = true},
                               {T(1, 2), .data = b, .is_const = true}};
        float *got = test_run_op(DS_OP_CONV, &a, ops, 3, 4, (int64_t[]){1, 2, OH, OW});
        test_assert_close(got, want, C * OH * OW, 1e-6f);
        free(got);
        free(want);
        free(w);
    }
    free(x);
}

static void test_conv_fused_relu_and_clip_activation(void **state)
{
    (void)state;
    float x[4] = {-2, -1, 1, 2};
    float w[1] = {3};
    test_operand ops[2] = {{T(4, 1, 1, 2, 2), .data = x},
                           {T(4, 1, 1, 1, 1), .data = w, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.activation = DS_ACT_RELU;
    float want[4] = {0, 0, 3, 6};
    check(test_run_op(DS_OP_CONV, &a, ops, 2, 4, (int64_t[]){1, 1, 2, 2}), want, 4);
    a.activation = DS_ACT_CLIP;
    a.clip_min = -4, a.clip_max = 5;
    float want2[4] = {-4, -3, 3, 5};
    check(test_run_op(DS_OP_CONV, &a, ops, 2, 4, (int64_t[]){1, 1, 2, 2}), want2, 4);
}

/* ---- pooling ---- */

static void test_maxpool_floor_and_ceil_mode(void **state)
{
    (void)state;
    float *x = seq(9, 1); /* [[1,2,3],[4,5,6],[7,8,9]] */
    test_operand ops[1] = {{T(4, 1, 1, 3, 3), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 2;
    a.stride[0] = a.stride[1] = 2;
    float want[1] = {5};
    check(test_run_op(DS_OP_MAXPOOL, &a, ops, 1, 4, (int64_t[]){1, 1, 1, 1}), want, 1);
    a.ceil_mode = true; /* partial windows at the right and bottom */
    float want2[4] = {5, 6, 8, 9};
    check(test_run_op(DS_OP_MAXPOOL, &a, ops, 1, 4, (int64_t[]){1, 1, 2, 2}), want2, 4);
    free(x);
}

static void test_maxpool_dilation_and_padding(void **state)
{
    (void)state;
    float *x = seq(16, 0); /* 4x4, x[h][w] = 4h + w */
    test_operand ops[1] = {{T(4, 1, 1, 4, 4), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 2;
    a.dilation[0] = a.dilation[1] = 2;
    /* taps (h,w),(h,w+2),(h+2,w),(h+2,w+2): the max is x[h+2][w+2] */
    float want[4] = {10, 11, 14, 15};
    check(test_run_op(DS_OP_MAXPOOL, &a, ops, 1, 4, (int64_t[]){1, 1, 2, 2}), want, 4);
    free(x);
    x = seq(9, 1);
    ops[0] = (test_operand){T(4, 1, 1, 3, 3), .data = x};
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 3;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    float want2[9] = {5, 6, 6, 8, 9, 9, 8, 9, 9}; /* padding never wins */
    check(test_run_op(DS_OP_MAXPOOL, &a, ops, 1, 4, (int64_t[]){1, 1, 3, 3}), want2, 9);
    free(x);
}

static void test_avgpool_count_include_pad_both_ways(void **state)
{
    (void)state;
    float *x = seq(9, 1);
    test_operand ops[1] = {{T(4, 1, 1, 3, 3), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 3;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    /* neighbourhood sums 12 21 16 / 27 45 33 / 24 39 28 over 4, 6 or 9 inputs */
    float want[9] = {3, 3.5f, 4, 4.5f, 5, 5.5f, 6, 6.5f, 7};
    check(test_run_op(DS_OP_AVGPOOL, &a, ops, 1, 4, (int64_t[]){1, 1, 3, 3}), want, 9);
    a.count_include_pad = true; /* always over 9 */
    float want2[9] = {12 / 9.f, 21 / 9.f, 16 / 9.f, 3, 5, 33 / 9.f, 24 / 9.f, 39 / 9.f, 28 / 9.f};
    check(test_run_op(DS_OP_AVGPOOL, &a, ops, 1, 4, (int64_t[]){1, 1, 3, 3}), want2, 9);
    free(x);
}

static void test_avgpool_ceil_mode_partial_windows_divide_by_inside(void **state)
{
    (void)state;
    float *x = seq(9, 1);
    test_operand ops[1] = {{T(4, 1, 1, 3, 3), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 2;
    a.stride[0] = a.stride[1] = 2;
    a.ceil_mode = true;
    /* (1+2+4+5)/4 = 3, (3+6)/2 = 4.5, (7+8)/2 = 7.5, 9/1 = 9; with no pads,
     * count_include_pad counts the same taps */
    float want[4] = {3, 4.5f, 7.5f, 9};
    for (int cip = 0; cip <= 1; cip++) {
        a.count_include_pad = cip;
        check(test_run_op(DS_OP_AVGPOOL, &a, ops, 1, 4, (int64_t[]){1, 1, 2, 2}), want, 4);
    }
    free(x);
}

static void test_global_avg_and_max_pool(void **state)
{
    (void)state;
    float *x = seq(8, 1);
    test_operand ops[1] = {{T(4, 1, 2, 2, 2), .data = x}};
    float want[2] = {2.5f, 6.5f}, want2[2] = {4, 8};
    check(test_run_op(DS_OP_GLOBAL_AVGPOOL, NULL, ops, 1, 4, (int64_t[]){1, 2, 1, 1}), want, 2);
    check(test_run_op(DS_OP_GLOBAL_MAXPOOL, NULL, ops, 1, 4, (int64_t[]){1, 2, 1, 1}), want2, 2);
    free(x);
}

/* ---- matrix products ---- */

static void test_gemm_alpha_beta_vector_bias(void **state)
{
    (void)state;
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[2] = {10, 20};
    test_operand ops[3] = {{T(2, 2, 3), .data = A},
                           {T(2, 3, 2), .data = B, .is_const = true},
                           {T(1, 2), .data = C, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.alpha = 2, a.beta = 0.5f;
    /* AB = [[4,5],[10,11]]; 2 AB + 0.5 [10,20] = [[13,20],[25,32]] */
    float want[4] = {13, 20, 25, 32};
    check(test_run_op(DS_OP_GEMM, &a, ops, 3, 2, (int64_t[]){2, 2}), want, 4);
}

static void test_gemm_transposes_and_column_bias(void **state)
{
    (void)state;
    float At[6] = {1, 4, 2, 5, 3, 6}; /* A^T stored [3,2] */
    float Bt[6] = {1, 0, 1, 0, 1, 1}; /* B^T stored [2,3] */
    float C[2] = {1, 2};              /* [2,1]: one value per row */
    test_operand ops[3] = {{T(2, 3, 2), .data = At},
                           {T(2, 2, 3), .data = Bt, .is_const = true},
                           {T(2, 2, 1), .data = C, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.trans_a = a.trans_b = true;
    float want[4] = {5, 6, 12, 13}; /* [[4,5],[10,11]] + [[1],[2]] */
    check(test_run_op(DS_OP_GEMM, &a, ops, 3, 2, (int64_t[]){2, 2}), want, 4);
    /* no C at all */
    float want2[4] = {4, 5, 10, 11};
    check(test_run_op(DS_OP_GEMM, &a, ops, 2, 2, (int64_t[]){2, 2}), want2, 4);
}

static void test_gemm_larger_than_one_tile_matches_naive(void **state)
{
    (void)state;
    /* 37 x 45 x 300: K spans two KC slices and N two NR panels plus an edge */
    int64_t M = 37, N = 45, K = 300;
    float *A = malloc((size_t)(M * K) * sizeof *A), *B = malloc((size_t)(K * N) * sizeof *B);
    for (int64_t i = 0; i < M * K; i++)
        A[i] = (float)((i * 7) % 13 - 6) / 8.0f;
    for (int64_t i = 0; i < K * N; i++)
        B[i] = (float)((i * 5) % 11 - 5) / 4.0f;
    float *want = malloc((size_t)(M * N) * sizeof *want);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0; /* exact: products of small dyadic rationals */
            for (int64_t k = 0; k < K; k++)
                s += (double)A[i * K + k] * B[k * N + j];
            want[i * N + j] = (float)s;
        }
    test_operand ops[2] = {{T(2, M, K), .data = A}, {T(2, K, N), .data = B, .is_const = true}};
    check(test_run_op(DS_OP_GEMM, NULL, ops, 2, 2, (int64_t[]){M, N}), want, M * N);
    check(test_run_op(DS_OP_MATMUL, NULL, ops, 2, 2, (int64_t[]){M, N}), want, M * N);
    free(A);
    free(B);
    free(want);
}

static void test_matmul_broadcast_batch_dims(void **state)
{
    (void)state;
    float A[12] = {1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0}; /* [2,2,3] */
    float B[6] = {1, 0, 0, 1, 1, 1};                    /* [3,2] */
    test_operand ops[2] = {{T(3, 2, 2, 3), .data = A}, {T(2, 3, 2), .data = B, .is_const = true}};
    /* A0 B = [[4,5],[10,11]], A1 B = [[1,0],[0,1]] */
    float want[8] = {4, 5, 10, 11, 1, 0, 0, 1};
    check(test_run_op(DS_OP_MATMUL, NULL, ops, 2, 3, (int64_t[]){2, 2, 2}), want, 8);
    /* A [2,3] against B [2,3,2] = (B, 2B): A broadcast over B's batch */
    float B2[12] = {1, 0, 0, 1, 1, 1, 2, 0, 0, 2, 2, 2};
    test_operand ops2[2] = {{T(2, 2, 3), .data = A}, {T(3, 2, 3, 2), .data = B2}};
    float want2[8] = {4, 5, 10, 11, 8, 10, 20, 22};
    check(test_run_op(DS_OP_MATMUL, NULL, ops2, 2, 3, (int64_t[]){2, 2, 2}), want2, 8);
}

static void test_matmul_1d_operands(void **state)
{
    (void)state;
    float a[3] = {1, 2, 3}, B[6] = {1, 0, 0, 1, 1, 1}, A[6] = {1, 2, 3, 4, 5, 6}, ones[3] = {1, 1, 1};
    test_operand ops[2] = {{T(1, 3), .data = a}, {T(2, 3, 2), .data = B}};
    float want[2] = {4, 5}; /* [1,2,3] B */
    check(test_run_op(DS_OP_MATMUL, NULL, ops, 2, 1, (int64_t[]){2}), want, 2);
    test_operand ops2[2] = {{T(2, 2, 3), .data = A}, {T(1, 3), .data = ones}};
    float want2[2] = {6, 15}; /* row sums */
    check(test_run_op(DS_OP_MATMUL, NULL, ops2, 2, 1, (int64_t[]){2}), want2, 2);
}

/* ---- elementwise ---- */

static void test_add_mul_broadcast(void **state)
{
    (void)state;
    float x[6] = {1, 2, 3, 4, 5, 6}, b[3] = {10, 20, 30}, col[2] = {1, 2}, row[3] = {1, 10, 100};
    test_operand ops[2] = {{T(2, 2, 3), .data = x}, {T(1, 3), .data = b, .is_const = true}};
    float want[6] = {11, 22, 33, 14, 25, 36};
    check(test_run_op(DS_OP_ADD, NULL, ops, 2, 2, (int64_t[]){2, 3}), want, 6);
    /* [2,1] * [1,3]: the outer product */
    test_operand ops2[2] = {{T(2, 2, 1), .data = col}, {T(2, 1, 3), .data = row}};
    float want2[6] = {1, 10, 100, 2, 20, 200};
    check(test_run_op(DS_OP_MUL, NULL, ops2, 2, 2, (int64_t[]){2, 3}), want2, 6);
    /* the smaller operand first: [3] + [2,3] */
    test_operand ops3[2] = {{T(1, 3), .data = b}, {T(2, 2, 3), .data = x}};
    check(test_run_op(DS_OP_ADD, NULL, ops3, 2, 2, (int64_t[]){2, 3}), want, 6);
}

static void test_add_channel_bias_4d(void **state)
{
    (void)state;
    float *x = seq(8, 0);            /* [1,2,2,2] */
    float b[2] = {100, 200};         /* [2,1,1] */
    test_operand ops[2] = {{T(4, 1, 2, 2, 2), .data = x}, {T(3, 2, 1, 1), .data = b, .is_const = true}};
    float want[8] = {100, 101, 102, 103, 204, 205, 206, 207};
    check(test_run_op(DS_OP_ADD, NULL, ops, 2, 4, (int64_t[]){1, 2, 2, 2}), want, 8);
    free(x);
}

static void test_sum_of_three_with_broadcast(void **state)
{
    (void)state;
    float a[3] = {1, 2, 3}, b[1] = {10}, c[6] = {100, 200, 300, 400, 500, 600};
    test_operand ops[3] = {{T(1, 3), .data = a}, {T(1, 1), .data = b}, {T(2, 2, 3), .data = c}};
    float want[6] = {111, 212, 313, 411, 512, 613};
    check(test_run_op(DS_OP_SUM, NULL, ops, 3, 2, (int64_t[]){2, 3}), want, 6);
}

static void test_prelu_per_channel_slope(void **state)
{
    (void)state;
    float x[4] = {-1, 2, -3, 4}, s[2] = {0.5f, 0.25f};
    test_operand ops[2] = {{T(4, 1, 2, 1, 2), .data = x}, {T(3, 2, 1, 1), .data = s, .is_const = true}};
    float want[4] = {-0.5f, 2, -0.75f, 4};
    check(test_run_op(DS_OP_PRELU, NULL, ops, 2, 4, (int64_t[]){1, 2, 1, 2}), want, 4);
}

static void test_unary_activations(void **state)
{
    (void)state;
    float x[5] = {-5, -1, 0, 1, 3};
    test_operand ops[1] = {{T(1, 5), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    float relu[5] = {0, 0, 0, 1, 3};
    check(test_run_op(DS_OP_RELU, &a, ops, 1, 1, (int64_t[]){5}), relu, 5);
    a.clip_min = -1.5f, a.clip_max = 2;
    float clip[5] = {-1.5f, -1, 0, 1, 2};
    check(test_run_op(DS_OP_CLIP, &a, ops, 1, 1, (int64_t[]){5}), clip, 5);
    a.alpha = 0.1f;
    float leaky[5] = {-0.5f, -0.1f, 0, 1, 3};
    check(test_run_op(DS_OP_LEAKY_RELU, &a, ops, 1, 1, (int64_t[]){5}), leaky, 5);
    a.alpha = 0.2f, a.beta = 0.5f; /* max(0, min(1, 0.2x + 0.5)) */
    float hsig[5] = {0, 0.3f, 0.5f, 0.7f, 1};
    check(test_run_op(DS_OP_HARD_SIGMOID, &a, ops, 1, 1, (int64_t[]){5}), hsig, 5);
    /* x * max(0, min(1, x/6 + 1/2)): 1 -> 2/3, 3 -> 3, -1 -> -1/3 */
    float hswish[5] = {0, -1.0f / 3, 0, 2.0f / 3, 3};
    check(test_run_op(DS_OP_HARD_SWISH, &a, ops, 1, 1, (int64_t[]){5}), hswish, 5);
    float idn[5] = {-5, -1, 0, 1, 3};
    check(test_run_op(DS_OP_IDENTITY, &a, ops, 1, 1, (int64_t[]){5}), idn, 5);
}

static void test_sigmoid_tanh_at_log_points(void **state)
{
    (void)state;
    float x[3] = {0, logf(3.0f), logf(2.0f)};
    test_operand ops[1] = {{T(1, 3), .data = x}};
    /* sigmoid(ln 3) = 1 / (1 + 1/3) = 0.75; tanh(ln 2) = (2 - 1/2) / (2 + 1/2) = 0.6 */
    float sig[3] = {0.5f, 0.75f, 2.0f / 3.0f};
    check(test_run_op(DS_OP_SIGMOID, NULL, ops, 1, 1, (int64_t[]){3}), sig, 3);
    float th[3] = {0, 0.8f, 0.6f};
    check(test_run_op(DS_OP_TANH, NULL, ops, 1, 1, (int64_t[]){3}), th, 3);
}

static void test_clip_bounds_from_constant_inputs(void **state)
{
    (void)state;
    float x[4] = {-3, -1, 1, 3}, lo[1] = {-2}, hi[1] = {2};
    test_operand ops[3] = {{T(1, 4), .data = x}, {.rank = 0, .data = lo, .is_const = true},
                           {.rank = 0, .data = hi, .is_const = true}};
    float want[4] = {-2, -1, 1, 2};
    check(test_run_op(DS_OP_CLIP, NULL, ops, 3, 1, (int64_t[]){4}), want, 4);
    /* min absent: only the max applies */
    ops[1].data = NULL;
    float want2[4] = {-3, -1, 1, 2};
    check(test_run_op(DS_OP_CLIP, NULL, ops, 3, 1, (int64_t[]){4}), want2, 4);
}

/* ---- normalization ---- */

static void test_batchnorm_per_channel(void **state)
{
    (void)state;
    float x[4] = {1, 2, 3, 4};
    float scale[2] = {1, 2}, bias[2] = {0, 1}, mean[2] = {1, 3}, var[2] = {3, 0};
    test_operand ops[5] = {{T(4, 1, 2, 1, 2), .data = x},
                           {T(1, 2), .data = scale, .is_const = true},
                           {T(1, 2), .data = bias, .is_const = true},
                           {T(1, 2), .data = mean, .is_const = true},
                           {T(1, 2), .data = var, .is_const = true}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.epsilon = 1.0f; /* sqrt(var + eps) = 2 and 1 */
    /* ch0: (x - 1) / 2 = 0, 0.5; ch1: (x - 3) * 2 + 1 = 1, 3 */
    float want[4] = {0, 0.5f, 1, 3};
    check(test_run_op(DS_OP_BATCHNORM, &a, ops, 5, 4, (int64_t[]){1, 2, 1, 2}), want, 4);
}

static void test_lrn_odd_and_even_size(void **state)
{
    (void)state;
    float x[3] = {1, 2, 3};
    test_operand ops[1] = {{T(4, 1, 3, 1, 1), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.size = 3, a.alpha = 3, a.beta = 1, a.bias = 1; /* alpha / size = 1 */
    /* windows {0,1}, {0,1,2}, {1,2}: sq = 5, 14, 13 -> x / (1 + sq) */
    float want[3] = {1.0f / 6, 2.0f / 15, 3.0f / 14};
    check(test_run_op(DS_OP_LRN, &a, ops, 1, 4, (int64_t[]){1, 3, 1, 1}), want, 3);
    a.size = 2, a.alpha = 2; /* floor(1/2) = 0 before, ceil(1/2) = 1 after */
    /* windows {0,1}, {1,2}, {2}: sq = 5, 13, 9 */
    float want2[3] = {1.0f / 6, 2.0f / 14, 3.0f / 10};
    check(test_run_op(DS_OP_LRN, &a, ops, 1, 4, (int64_t[]){1, 3, 1, 1}), want2, 3);
    a.size = 3, a.alpha = 3, a.beta = 0.5f, a.bias = 3; /* (3 + 5)^0.5 = sqrt 8 */
    float want3[3] = {1.0f / sqrtf(8), 2.0f / sqrtf(17), 3.0f / 4};
    check(test_run_op(DS_OP_LRN, &a, ops, 1, 4, (int64_t[]){1, 3, 1, 1}), want3, 3);
}

static void test_softmax_opset13_vs_legacy(void **state)
{
    (void)state;
    float x[4] = {0, 0, logf(3.0f), 0}; /* [1,2,2] */
    test_operand ops[1] = {{T(3, 1, 2, 2), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.axis = 1;
    /* along axis 1: column 0 is (0, ln 3) -> (1/4, 3/4), column 1 (0, 0) -> halves */
    float want[4] = {0.25f, 0.5f, 0.75f, 0.5f};
    check(test_run_op(DS_OP_SOFTMAX, &a, ops, 1, 3, (int64_t[]){1, 2, 2}), want, 4);
    /* legacy: one row of 4: exp = 1, 1, 3, 1 over 6 */
    a.softmax_legacy = true;
    float want2[4] = {1.0f / 6, 1.0f / 6, 0.5f, 1.0f / 6};
    check(test_run_op(DS_OP_SOFTMAX, &a, ops, 1, 3, (int64_t[]){1, 2, 2}), want2, 4);
    /* large values do not overflow: the max is subtracted first */
    float big[2] = {1000, 1000};
    test_operand ops2[1] = {{T(2, 1, 2), .data = big}};
    a.softmax_legacy = false;
    float want3[2] = {0.5f, 0.5f};
    check(test_run_op(DS_OP_SOFTMAX, &a, ops2, 1, 2, (int64_t[]){1, 2}), want3, 2);
}

/* ---- layout ---- */

static void test_concat_axis1_and_axis0(void **state)
{
    (void)state;
    float a[2] = {1, 2}, b[4] = {3, 4, 5, 6};
    test_operand ops[2] = {{T(3, 1, 1, 2), .data = a}, {T(3, 1, 2, 2), .data = b}};
    ds_op_attrs at;
    ds_op_attrs_init(&at);
    at.axis = 1;
    float want[6] = {1, 2, 3, 4, 5, 6};
    check(test_run_op(DS_OP_CONCAT, &at, ops, 2, 3, (int64_t[]){1, 3, 2}), want, 6);
    /* [2,2] ++ [2,2] along the last axis interleaves rows */
    float c[4] = {1, 2, 3, 4}, d[4] = {5, 6, 7, 8};
    test_operand ops2[2] = {{T(2, 2, 2), .data = c}, {T(2, 2, 2), .data = d, .is_const = true}};
    float want2[8] = {1, 2, 5, 6, 3, 4, 7, 8};
    check(test_run_op(DS_OP_CONCAT, &at, ops2, 2, 2, (int64_t[]){2, 4}), want2, 8);
    at.axis = 0;
    float want3[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    check(test_run_op(DS_OP_CONCAT, &at, ops2, 2, 2, (int64_t[]){4, 2}), want3, 8);
}

static void test_transpose_2d_and_3d(void **state)
{
    (void)state;
    float x[6] = {1, 2, 3, 4, 5, 6};
    test_operand ops[1] = {{T(2, 2, 3), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.perm[0] = 1, a.perm[1] = 0;
    float want[6] = {1, 4, 2, 5, 3, 6};
    check(test_run_op(DS_OP_TRANSPOSE, &a, ops, 1, 2, (int64_t[]){3, 2}), want, 6);
    /* x[i][j][k] = 4i + 2j + k; perm (1,2,0): out[j][k][i] = 4i + 2j + k */
    float *x3 = seq(8, 0);
    test_operand ops3[1] = {{T(3, 2, 2, 2), .data = x3}};
    a.perm[0] = 1, a.perm[1] = 2, a.perm[2] = 0;
    float want3[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    check(test_run_op(DS_OP_TRANSPOSE, &a, ops3, 1, 3, (int64_t[]){2, 2, 2}), want3, 8);
    free(x3);
}

static void test_reshape_and_flatten_keep_element_order(void **state)
{
    (void)state;
    float *x = seq(24, 0);
    test_operand ops[1] = {{T(3, 2, 3, 4), .data = x}};
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.shape_rank = 2;
    a.shape[0] = -1, a.shape[1] = 6;
    check(test_run_op(DS_OP_RESHAPE, &a, ops, 1, 2, (int64_t[]){4, 6}), x, 24);
    ds_op_attrs_init(&a);
    a.axis = 2;
    check(test_run_op(DS_OP_FLATTEN, &a, ops, 1, 2, (int64_t[]){6, 4}), x, 24);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_stride2_pad1_matches_hand_computed),
        cmocka_unit_test(test_conv_dilation2_matches_hand_computed),
        cmocka_unit_test(test_conv_groups_pointwise_and_spatial),
        cmocka_unit_test(test_conv_multichannel_im2col_matches_direct_sum),
        cmocka_unit_test(test_depthwise_conv_pad1_stride1_and_stride2),
        cmocka_unit_test(test_depthwise_conv_variants_match_direct_sum),
        cmocka_unit_test(test_depthwise_conv_large_plane_edge_path_matches_direct_sum),
        cmocka_unit_test(test_conv_fused_relu_and_clip_activation),
        cmocka_unit_test(test_maxpool_floor_and_ceil_mode),
        cmocka_unit_test(test_maxpool_dilation_and_padding),
        cmocka_unit_test(test_avgpool_count_include_pad_both_ways),
        cmocka_unit_test(test_avgpool_ceil_mode_partial_windows_divide_by_inside),
        cmocka_unit_test(test_global_avg_and_max_pool),
        cmocka_unit_test(test_gemm_alpha_beta_vector_bias),
        cmocka_unit_test(test_gemm_transposes_and_column_bias),
        cmocka_unit_test(test_gemm_larger_than_one_tile_matches_naive),
        cmocka_unit_test(test_matmul_broadcast_batch_dims),
        cmocka_unit_test(test_matmul_1d_operands),
        cmocka_unit_test(test_add_mul_broadcast),
        cmocka_unit_test(test_add_channel_bias_4d),
        cmocka_unit_test(test_sum_of_three_with_broadcast),
        cmocka_unit_test(test_prelu_per_channel_slope),
        cmocka_unit_test(test_unary_activations),
        cmocka_unit_test(test_sigmoid_tanh_at_log_points),
        cmocka_unit_test(test_clip_bounds_from_constant_inputs),
        cmocka_unit_test(test_batchnorm_per_channel),
        cmocka_unit_test(test_lrn_odd_and_even_size),
        cmocka_unit_test(test_softmax_opset13_vs_legacy),
        cmocka_unit_test(test_concat_axis1_and_axis0),
        cmocka_unit_test(test_transpose_2d_and_3d),
        cmocka_unit_test(test_reshape_and_flatten_keep_element_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
