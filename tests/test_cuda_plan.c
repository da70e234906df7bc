/* test_cuda_plan.c - the cuda backend's program, without a GPU: which engine
 * runs each op, the fused epilogues, the residual fusion, and the memory plan
 * (reuse, no overlap of live tensors, batch scaling). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "graph/graph.h"

#if DS_WITH_CUDA
#include <math.h>

#include "exec/cuda/cuda_plan.h"

static uint32_t add_const(ds_graph *g, const char *name, uint32_t rank, const int64_t *dims) {
    int64_t n = 1;
    for (uint32_t i = 0; i < rank; i++) n *= dims[i];
    float *d = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) d[i] = 0.01f * (float)(i % 7);
    return ds_graph_add_const(g, name, rank, dims, d);
}

/* Conv cin->cout, k x k, symmetric pad, stride, group, optional bias, activation. */
static uint32_t add_conv(ds_graph *g, const char *name, uint32_t x, int64_t cin, int64_t cout,
                         uint32_t k, const uint32_t pads[4], uint32_t stride, uint32_t group,
                         int bias, ds_activation act) {
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.w", name);
    snprintf(bn, sizeof bn, "%s.b", name);
    int64_t wd[4] = {cout, cin / group, k, k};
    uint32_t ins[3] = {x, add_const(g, wn, 4, wd), 0};
    if (bias) {
        int64_t bd[1] = {cout};
        ins[2] = add_const(g, bn, 1, bd);
    }
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    memcpy(a.pads, pads, sizeof a.pads);
    a.stride[0] = a.stride[1] = stride;
    a.group = group;
    a.activation = act;
    if (act == DS_ACT_CLIP) {
        a.clip_min = 0.0f;
        a.clip_max = 6.0f;
    }
    return ds_graph_add_node(g, DS_OP_CONV, name, ins, bias ? 3 : 2, &a, NULL);
}

static uint32_t add_unary(ds_graph *g, ds_op_kind op, const char *name, uint32_t x) {
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    return ds_graph_add_node(g, op, name, &x, 1, &a, NULL);
}

static ds_graph *one_conv_graph(uint32_t cin, uint32_t cout, uint32_t k, const uint32_t pads[4],
                                uint32_t stride, uint32_t group, int bias, ds_activation act) {
    ds_graph *g = ds_graph_new("conv");
    int64_t xd[4] = {1, cin, 8, 8};
    uint32_t x = ds_graph_add_input(g, "x", 4, xd);
    uint32_t y = add_conv(g, "c", x, cin, cout, k, pads, stride, group, bias, act);
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    return g;
}

static const uint32_t PAD1[4] = {1, 1, 1, 1};
static const uint32_t PAD0[4] = {0, 0, 0, 0};

static void test_conv_bias_relu_maps_to_cudnn_fused_call(void **state) {
    (void)state;
    ds_graph *g = one_conv_graph(3, 4, 3, PAD1, 1, 1, 1, DS_ACT_RELU);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 4, &p), DSTACK_OK);
    assert_int_equal(p.n_steps, 1);
    const ds_cu_step *s = &p.steps[0];
    assert_int_equal(s->engine, DS_CU_ENGINE_CUDNN);
    assert_int_equal(s->epilogue, DS_CU_EPI_CUDNN_BIAS_RELU);
    assert_int_equal(s->conv.pad_h, 1);
    assert_int_equal(s->conv.pad_w, 1);
    assert_int_equal(s->conv.stride_h, 1);
    assert_int_equal(s->conv.group, 1);
    assert_int_equal(s->conv.c, 3);
    assert_int_equal(s->conv.k, 4);
    assert_int_equal(s->conv.kh, 3);
    assert_int_equal(s->conv.oh, 8);
    assert_int_equal(s->conv.ow, 8);
    assert_true(s->conv.has_bias);
    assert_int_equal(p.batch_mult, 4);
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_conv_relu6_uses_bias_act_kernel_with_bounds(void **state) {
    (void)state;
    ds_graph *g = one_conv_graph(3, 4, 3, PAD1, 2, 1, 1, DS_ACT_CLIP);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.steps[0].engine, DS_CU_ENGINE_CUDNN);
    assert_int_equal(p.steps[0].epilogue, DS_CU_EPI_KERNEL);
    assert_true(p.steps[0].act_lo == 0.0f);
    assert_true(p.steps[0].act_hi == 6.0f);
    assert_int_equal(p.steps[0].conv.stride_h, 2);
    assert_int_equal(p.steps[0].conv.oh, 4); /* (8 + 2 - 3) / 2 + 1 */
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_conv_without_bias_or_activation_has_no_epilogue(void **state) {
    (void)state;
    ds_graph *g = one_conv_graph(3, 4, 1, PAD0, 1, 1, 0, DS_ACT_NONE);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.steps[0].engine, DS_CU_ENGINE_CUDNN);
    assert_int_equal(p.steps[0].epilogue, DS_CU_EPI_NONE);
    assert_false(p.steps[0].conv.has_bias);
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_conv_asymmetric_pads_runs_direct_kernel(void **state) {
    (void)state;
    const uint32_t pads[4] = {0, 0, 1, 1}; /* SAME_UPPER, k2 s2 */
    ds_graph *g = one_conv_graph(3, 4, 2, pads, 2, 1, 1, DS_ACT_NONE);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.steps[0].engine, DS_CU_ENGINE_KERNEL);
    assert_int_equal(p.steps[0].epilogue, DS_CU_EPI_NONE); /* bias inside the kernel */
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_depthwise_conv_runs_direct_kernel_with_fused_clip(void **state) {
    (void)state;
    ds_graph *g = one_conv_graph(4, 4, 3, PAD1, 1, 4, 1, DS_ACT_CLIP);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.steps[0].engine, DS_CU_ENGINE_KERNEL);
    assert_true(p.steps[0].act_hi == 6.0f);
    ds_cu_program_free(&p);
    /* grouped but not depthwise stays on cuDNN */
    g = (ds_graph_free(g), one_conv_graph(4, 4, 3, PAD1, 1, 2, 1, DS_ACT_NONE));
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.steps[0].engine, DS_CU_ENGINE_CUDNN);
    assert_int_equal(p.steps[0].conv.group, 2);
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

/* x -> maxpool -> globalavgpool -> flatten -> gemm(relu) -> gemm -> softmax */
static void test_head_ops_map_to_kernels_cublas_and_copies(void **state) {
    (void)state;
    ds_graph *g = ds_graph_new("head");
    int64_t xd[4] = {1, 4, 8, 8};
    uint32_t x = ds_graph_add_input(g, "x", 4, xd);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.kernel[0] = a.kernel[1] = 2;
    a.stride[0] = a.stride[1] = 2;
    uint32_t mp = ds_graph_add_node(g, DS_OP_MAXPOOL, "mp", &x, 1, &a, NULL);
    uint32_t gap = add_unary(g, DS_OP_GLOBAL_AVGPOOL, "gap", mp);
    ds_op_attrs_init(&a);
    a.axis = 1;
    uint32_t fl = ds_graph_add_node(g, DS_OP_FLATTEN, "fl", &gap, 1, &a, NULL);
    int64_t wd[2] = {4, 5}, bd[1] = {5}, w2d[2] = {5, 3};
    uint32_t in1[3] = {fl, add_const(g, "w1", 2, wd), add_const(g, "b1", 1, bd)};
    ds_op_attrs_init(&a);
    a.activation = DS_ACT_RELU;
    uint32_t g1 = ds_graph_add_node(g, DS_OP_GEMM, "g1", in1, 3, &a, NULL);
    uint32_t in2[2] = {g1, add_const(g, "w2", 2, w2d)};
    ds_op_attrs_init(&a);
    uint32_t g2 = ds_graph_add_node(g, DS_OP_GEMM, "g2", in2, 2, &a, NULL);
    ds_op_attrs_init(&a);
    a.axis = 1;
    uint32_t sm = ds_graph_add_node(g, DS_OP_SOFTMAX, "sm", &g2, 1, &a, NULL);
    uint32_t cat_in[2] = {sm, g2};
    uint32_t cat = ds_graph_add_node(g, DS_OP_CONCAT, "cat", cat_in, 2, &a, NULL);
    assert_int_equal(ds_graph_mark_output(g, cat), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 2, &p), DSTACK_OK);
    const ds_cu_engine want[7] = {DS_CU_ENGINE_KERNEL, DS_CU_ENGINE_KERNEL, DS_CU_ENGINE_COPY,
                                  DS_CU_ENGINE_CUBLAS, DS_CU_ENGINE_CUBLAS, DS_CU_ENGINE_KERNEL,
                                  DS_CU_ENGINE_COPY};
    assert_int_equal(p.n_steps, 7);
    for (int i = 0; i < 7; i++) assert_int_equal(p.steps[i].engine, want[i]);
    assert_int_equal(p.steps[3].epilogue, DS_CU_EPI_KERNEL); /* Gemm + ReLU */
    assert_int_equal(p.steps[4].epilogue, DS_CU_EPI_NONE);
    assert_string_equal(ds_cu_engine_name(p.steps[3].engine), "cublas");
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

/* y = relu(conv(x) + x): one cuDNN call with z = x; Add and Relu skipped. */
static ds_graph *residual_graph(int extra_reader) {
    ds_graph *g = ds_graph_new("res");
    int64_t xd[4] = {1, 4, 8, 8};
    uint32_t x = ds_graph_add_input(g, "x", 4, xd);
    uint32_t c = add_conv(g, "c", x, 4, 4, 3, PAD1, 1, 1, 1, DS_ACT_NONE);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    uint32_t in[2] = {c, x};
    uint32_t s = ds_graph_add_node(g, DS_OP_ADD, "add", in, 2, &a, NULL);
    uint32_t r = add_unary(g, DS_OP_RELU, "relu", s);
    assert_int_equal(ds_graph_mark_output(g, r), DSTACK_OK);
    if (extra_reader) assert_int_equal(ds_graph_mark_output(g, add_unary(g, DS_OP_SIGMOID, "sig", c)), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    return g;
}

static void test_residual_conv_add_relu_fuses_into_one_cudnn_call(void **state) {
    (void)state;
    ds_graph *g = residual_graph(0);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.n_fused, 1);
    const ds_cu_step *c = &p.steps[0];
    assert_int_equal(c->epilogue, DS_CU_EPI_CUDNN_BIAS_ADD_RELU);
    assert_int_equal(c->z, g->inputs[0]);
    assert_int_equal(c->out, g->outputs[0]);
    assert_true(p.steps[1].skip);
    assert_true(p.steps[2].skip);
    /* the conv's and the add's outputs are never materialized */
    assert_true(p.offsets[g->nodes[0].output] == DS_CU_NO_OFFSET);
    assert_true(p.offsets[g->nodes[1].output] == DS_CU_NO_OFFSET);
    /* z and y are both live at the fused step: distinct memory */
    assert_true(p.offsets[c->z] != p.offsets[c->out]);
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_residual_not_fused_when_conv_output_has_another_reader(void **state) {
    (void)state;
    ds_graph *g = residual_graph(1);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.n_fused, 0);
    for (uint32_t i = 0; i < p.n_steps; i++) assert_false(p.steps[i].skip);
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

/* x -> relu -> relu -> relu -> relu: two 1 KiB buffers ping-pong. */
static ds_graph *chain_graph(int64_t n0) {
    ds_graph *g = ds_graph_new("chain");
    int64_t xd[4] = {n0, 1, 16, 16};
    uint32_t t = ds_graph_add_input(g, "x", 4, xd);
    for (int i = 0; i < 4; i++) t = add_unary(g, DS_OP_RELU, "r", t);
    assert_int_equal(ds_graph_mark_output(g, t), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    return g;
}

static void test_memory_chain_reuses_two_buffers(void **state) {
    (void)state;
    ds_graph *g = chain_graph(1);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_OK);
    assert_int_equal(p.tensor_bytes_sum, 5 * 1024);
    assert_int_equal(p.arena_bytes, 2 * 1024);
    ds_cu_program_free(&p);
    assert_true(g->batchable);
    assert_int_equal(ds_cu_program_build(g, 8, &p), DSTACK_OK);
    assert_int_equal(p.arena_bytes, 8 * 2 * 1024);
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_non_batchable_graph_plans_one_request(void **state) {
    (void)state;
    ds_graph *g = chain_graph(2); /* dims[0] = 2: a fixed-shape case */
    assert_false(g->batchable);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 8, &p), DSTACK_OK);
    assert_int_equal(p.batch_mult, 1);
    assert_int_equal(p.arena_bytes, 2 * 2 * 1024);
    int64_t d[DS_MAX_RANK];
    assert_int_equal(ds_cu_dims_at(g, g->inputs[0], 8, d), 4);
    assert_int_equal(d[0], 2); /* not substituted */
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_dims_at_substitutes_batch_for_non_constants_only(void **state) {
    (void)state;
    ds_graph *g = one_conv_graph(3, 4, 3, PAD1, 1, 1, 1, DS_ACT_NONE);
    int64_t d[DS_MAX_RANK];
    ds_cu_dims_at(g, g->inputs[0], 16, d);
    assert_int_equal(d[0], 16);
    assert_int_equal(d[1], 3);
    ds_cu_dims_at(g, g->nodes[0].inputs[1], 16, d); /* weights */
    assert_int_equal(d[0], 4);
    ds_graph_free(g);
}

static void check_no_live_overlap(const ds_graph *g, const ds_cu_program *p) {
    uint32_t *first = calloc(g->n_tensors, 4), *last = calloc(g->n_tensors, 4);
    bool *live = calloc(g->n_tensors, 1);
    assert_int_equal(ds_cu_lifetimes(g, p->steps, first, last, live), DSTACK_OK);
    for (uint32_t a = 0; a < g->n_tensors; a++) {
        if (!live[a]) {
            assert_true(p->offsets[a] == DS_CU_NO_OFFSET);
            continue;
        }
        uint64_t sa = (uint64_t)ds_tensor_numel(&g->tensors[a]) * 4 * p->batch_mult;
        assert_true(p->offsets[a] % DS_CU_ALIGN == 0);
        assert_true(p->offsets[a] + sa <= p->arena_bytes);
        for (uint32_t b = a + 1; b < g->n_tensors; b++) {
            if (!live[b] || first[a] > last[b] || first[b] > last[a]) continue;
            uint64_t sb = (uint64_t)ds_tensor_numel(&g->tensors[b]) * 4 * p->batch_mult;
            bool disjoint = p->offsets[a] + sa <= p->offsets[b] || p->offsets[b] + sb <= p->offsets[a];
            if (!disjoint) fail_msg("tensors %u and %u overlap while both live", a, b);
        }
    }
    free(first);
    free(last);
    free(live);
}

static void test_resnet50_memory_plan_reuses_and_never_overlaps_live_tensors(void **state) {
    (void)state;
    ds_zoo_params zp = {.image_size = 64, .classes = 10, .seed = 1};
    ds_graph *g = NULL;
    assert_int_equal(ds_zoo_build("resnet50", &zp, &g), DSTACK_OK);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 4, &p), DSTACK_OK);
    assert_true(p.arena_bytes < p.tensor_bytes_sum / 4);
    check_no_live_overlap(g, &p);
    uint32_t cudnn = 0, cublas = 0;
    for (uint32_t i = 0; i < p.n_steps; i++) {
        cudnn += !p.steps[i].skip && p.steps[i].engine == DS_CU_ENGINE_CUDNN;
        cublas += p.steps[i].engine == DS_CU_ENGINE_CUBLAS;
    }
    assert_int_equal(cudnn, 53);   /* every conv of resnet50 */
    assert_int_equal(cublas, 1);   /* the classifier */
    assert_int_equal(p.n_fused, 16); /* one per bottleneck block */
    ds_cu_program_free(&p);
    ds_graph_free(g);
}

static void test_zoo_models_build_programs(void **state) {
    (void)state;
    const char *names[] = {"resnet18", "mobilenet_v2", "squeezenet1_1", "googlenet", "densenet121", "alexnet"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        ds_zoo_params zp = {.image_size = 96, .classes = 10, .seed = 1};
        ds_graph *g = NULL;
        assert_int_equal(ds_zoo_build(names[i], &zp, &g), DSTACK_OK);
        assert_int_equal(ds_graph_fold(g), DSTACK_OK);
        ds_cu_program p;
        assert_int_equal(ds_cu_program_build(g, 2, &p), DSTACK_OK);
        check_no_live_overlap(g, &p);
        ds_cu_program_free(&p);
        ds_graph_free(g);
    }
}

static void test_program_rejects_unfinalized_graph_and_zero_batch(void **state) {
    (void)state;
    ds_graph *g = ds_graph_new("empty");
    ds_cu_program p;
    assert_int_equal(ds_cu_program_build(g, 1, &p), DSTACK_ERR_INVALID_ARGUMENT);
    ds_graph_free(g);
    g = chain_graph(1);
    assert_int_equal(ds_cu_program_build(g, 0, &p), DSTACK_ERR_INVALID_ARGUMENT);
    ds_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_bias_relu_maps_to_cudnn_fused_call),
        cmocka_unit_test(test_conv_relu6_uses_bias_act_kernel_with_bounds),
        cmocka_unit_test(test_conv_without_bias_or_activation_has_no_epilogue),
        cmocka_unit_test(test_conv_asymmetric_pads_runs_direct_kernel),
        cmocka_unit_test(test_depthwise_conv_runs_direct_kernel_with_fused_clip),
        cmocka_unit_test(test_head_ops_map_to_kernels_cublas_and_copies),
        cmocka_unit_test(test_residual_conv_add_relu_fuses_into_one_cudnn_call),
        cmocka_unit_test(test_residual_not_fused_when_conv_output_has_another_reader),
        cmocka_unit_test(test_memory_chain_reuses_two_buffers),
        cmocka_unit_test(test_non_batchable_graph_plans_one_request),
        cmocka_unit_test(test_dims_at_substitutes_batch_for_non_constants_only),
        cmocka_unit_test(test_resnet50_memory_plan_reuses_and_never_overlaps_live_tensors),
        cmocka_unit_test(test_zoo_models_build_programs),
        cmocka_unit_test(test_program_rejects_unfinalized_graph_and_zero_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
static void test_cuda_plan_not_built_without_cuda(void **state) {
    (void)state;
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cuda_plan_not_built_without_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
