/* test_cpu_exec.c - the cpu executor as a whole: batched runs equal single
 * runs, non-batchable graphs loop per request, the memory arena's reuse
 * does not corrupt live tensors, thread counts agree, bad calls fail
 * cleanly. */
#include <pthread.h>

#include "cpu_test_util.h"

static float *rand_floats(int64_t n, uint32_t seed, float scale)
{
    float *d = malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    uint32_t s = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        d[i] = scale * ((float)(s >> 8) / (float)(1u << 24) - 0.5f);
    }
    return d;
}

static uint32_t cst(ds_graph *g, const char *name, uint32_t rank, const int64_t *dims, uint32_t seed,
                    float scale)
{
    uint32_t id = ds_graph_add_const(g, name, rank, dims,
                                     rand_floats(test_numel(rank, dims), seed, scale));
    assert_int_not_equal(id, DS_TENSOR_NONE);
    return id;
}

static uint32_t add_node(ds_graph *g, ds_op_kind op, const uint32_t *in, uint32_t n,
                         const ds_op_attrs *a)
{
    uint32_t id = ds_graph_add_node(g, op, ds_op_name(op), in, n, a, NULL);
    assert_int_not_equal(id, DS_TENSOR_NONE);
    return id;
}

/* x[1,3,12,12] -> conv3x3(ch) + BN -> relu -> maxpool 2x2 -> depthwise 3x3 ->
 * add (residual) -> conv1x1(2ch) -> avgpool 3x3 s2 p1 -> GAP -> flatten ->
 * gemm(10) -> softmax: a batchable CNN touching most kernels. */
static ds_graph *small_cnn(int64_t ch)
{
    ds_graph *g = ds_graph_new("small_cnn");
    int64_t xd[4] = {1, 3, 12, 12};
    uint32_t x = ds_graph_add_input(g, "x", 4, xd);
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    uint32_t c1[3] = {x, cst(g, "w1", 4, (int64_t[]){ch, 3, 3, 3}, 1, 0.5f),
                      cst(g, "b1", 1, (int64_t[]){ch}, 2, 0.1f)};
    uint32_t t = add_node(g, DS_OP_CONV, c1, 3, &a);
    float *var = rand_floats(ch, 3, 0.5f);
    for (int64_t i = 0; i < ch; i++)
        var[i] += 0.5f;
    uint32_t bn[5] = {t, cst(g, "s", 1, (int64_t[]){ch}, 4, 1.0f), cst(g, "bb", 1, (int64_t[]){ch}, 5, 1.0f),
                      cst(g, "m", 1, (int64_t[]){ch}, 6, 1.0f),
                      ds_graph_add_const(g, "v", 1, (int64_t[]){ch}, var)};
    t = add_node(g, DS_OP_BATCHNORM, bn, 5, NULL);
    t = add_node(g, DS_OP_RELU, &t, 1, NULL);
    ds_op_attrs p;
    ds_op_attrs_init(&p);
    p.kernel[0] = p.kernel[1] = 2;
    p.stride[0] = p.stride[1] = 2;
    uint32_t pooled = add_node(g, DS_OP_MAXPOOL, &t, 1, &p);
    a.group = (uint32_t)ch;
    uint32_t dw[2] = {pooled, cst(g, "wd", 4, (int64_t[]){ch, 1, 3, 3}, 7, 0.7f)};
    t = add_node(g, DS_OP_CONV, dw, 2, &a);
    uint32_t res[2] = {t, pooled};
    t = add_node(g, DS_OP_ADD, res, 2, NULL);
    ds_op_attrs_init(&a);
    uint32_t pw[2] = {t, cst(g, "wp", 4, (int64_t[]){2 * ch, ch, 1, 1}, 8, 0.5f)};
    t = add_node(g, DS_OP_CONV, pw, 2, &a);
    ds_op_attrs_init(&p);
    p.kernel[0] = p.kernel[1] = 3;
    p.stride[0] = p.stride[1] = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    t = add_node(g, DS_OP_AVGPOOL, &t, 1, &p);
    t = add_node(g, DS_OP_GLOBAL_AVGPOOL, &t, 1, NULL);
    ds_op_attrs_init(&a);
    a.axis = 1;
    t = add_node(g, DS_OP_FLATTEN, &t, 1, &a);
    uint32_t fc[3] = {t, cst(g, "fw", 2, (int64_t[]){2 * ch, 10}, 9, 1.0f),
                      cst(g, "fb", 1, (int64_t[]){10}, 10, 1.0f)};
    t = add_node(g, DS_OP_GEMM, fc, 3, NULL);
    ds_op_attrs_init(&a);
    a.axis = 1;
    uint32_t y = ds_graph_add_node(g, DS_OP_SOFTMAX, "softmax", &t, 1, &a, "prob");
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    assert_true(g->batchable);
    return g;
}

/* Run `g` for `batch` requests whose inputs come from seeds 100 + r. */
static float **run_requests(const ds_graph *g, uint32_t threads, uint32_t max_batch, uint32_t batch,
                            bool one_by_one)
{
    int64_t nin = ds_tensor_numel(&g->tensors[g->inputs[0]]);
    int64_t nout = ds_tensor_numel(&g->tensors[g->outputs[0]]);
    float **in = calloc(batch, sizeof *in), **out = calloc(batch, sizeof *out);
    for (uint32_t r = 0; r < batch; r++) {
        in[r] = rand_floats(nin, 100 + r, 4.0f);
        out[r] = calloc((size_t)nout, sizeof(float));
    }
    if (one_by_one)
        for (uint32_t r = 0; r < batch; r++)
            test_run_graph(g, threads, max_batch, 1, (const float *const *)&in[r], &out[r]);
    else
        test_run_graph(g, threads, max_batch, batch, (const float *const *)in, out);
    for (uint32_t r = 0; r < batch; r++)
        free(in[r]);
    free(in);
    return out;
}

static void free_outputs(float **o, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(o[i]);
    free(o);
}

static void test_batch_of_5_equals_5_single_runs(void **state)
{
    (void)state;
    ds_graph *g = small_cnn(8);
    float **batched = run_requests(g, 2, 8, 5, false);
    float **single = run_requests(g, 2, 8, 5, true);
    for (uint32_t r = 0; r < 5; r++) {
        test_assert_close(batched[r], single[r], 10, 1e-6f);
        float s = 0;
        for (int i = 0; i < 10; i++)
            s += batched[r][i];
        assert_true(fabsf(s - 1.0f) < 1e-5f); /* softmax rows */
    }
    /* different inputs give different outputs: the batch is not one sample 5 times */
    assert_true(memcmp(batched[0], batched[1], 10 * sizeof(float)) != 0);
    free_outputs(batched, 5);
    free_outputs(single, 5);
    ds_graph_free(g);
}

static void test_thread_counts_1_and_3_agree(void **state)
{
    (void)state;
    ds_graph *g = small_cnn(24); /* enough channels for several GEMM tiles */
    float **one = run_requests(g, 1, 4, 3, false);
    float **three = run_requests(g, 3, 4, 3, false);
    for (uint32_t r = 0; r < 3; r++)
        test_assert_close(three[r], one[r], 10, 1e-6f);
    free_outputs(one, 3);
    free_outputs(three, 3);
    ds_graph_free(g);
}

static void test_non_batchable_graph_runs_each_request_alone(void **state)
{
    (void)state;
    /* x[2,3] with softmax over axis 0: the stored shape is the whole request */
    ds_graph *g = ds_graph_new("colsoftmax");
    uint32_t x = ds_graph_add_input(g, "x", 2, (int64_t[]){2, 3});
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.axis = 0;
    uint32_t y = add_node(g, DS_OP_SOFTMAX, &x, 1, &a);
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    assert_false(g->batchable);
    /* request r: column j is (0, ln(r + 1 + j)) -> (1, v) / (1 + v) */
    float in[3][6], out[3][6];
    const float *ins[3];
    float *outs[3];
    for (int r = 0; r < 3; r++) {
        for (int j = 0; j < 3; j++) {
            in[r][j] = 0;
            in[r][3 + j] = logf((float)(r + 1 + j));
        }
        ins[r] = in[r];
        outs[r] = out[r];
    }
    test_run_graph(g, 2, 4, 3, ins, outs);
    for (int r = 0; r < 3; r++) {
        float want[6];
        for (int j = 0; j < 3; j++) {
            float v = (float)(r + 1 + j);
            want[j] = 1.0f / (1.0f + v);
            want[3 + j] = v / (1.0f + v);
        }
        test_assert_close(out[r], want, 6, 1e-6f);
    }
    ds_graph_free(g);
}

static void test_arena_reuse_keeps_skip_connection_intact(void **state)
{
    (void)state;
    /* t0 = relu(x); t_{i+1} = (t_i * 2 - 1) for 12 steps, each a fresh tensor
     * whose predecessor dies at once, so the arena recycles them; t0 must
     * survive to the final add(t0, t12) and a second output. */
    ds_graph *g = ds_graph_new("chain");
    int64_t d[2] = {1, 50};
    uint32_t x = ds_graph_add_input(g, "x", 2, d);
    uint32_t t0 = add_node(g, DS_OP_RELU, &x, 1, NULL);
    float *two = malloc(sizeof *two), *minus1 = malloc(sizeof *minus1);
    *two = 2, *minus1 = -1;
    uint32_t c2 = ds_graph_add_const(g, "two", 0, NULL, two);
    uint32_t cm = ds_graph_add_const(g, "minus1", 0, NULL, minus1);
    uint32_t t = t0;
    for (int i = 0; i < 12; i++) {
        uint32_t m[2] = {t, c2};
        t = add_node(g, DS_OP_MUL, m, 2, NULL);
        uint32_t s[2] = {t, cm};
        t = add_node(g, DS_OP_ADD, s, 2, NULL);
    }
    uint32_t fin[2] = {t0, t};
    uint32_t y = add_node(g, DS_OP_ADD, fin, 2, NULL);
    uint32_t mid = t;
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    assert_int_equal(ds_graph_mark_output(g, mid), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    assert_true(g->batchable);
    const uint32_t B = 4;
    float *ins[4], *outs[8];
    for (uint32_t r = 0; r < B; r++) {
        ins[r] = rand_floats(50, 7 + r, 2.0f);
        outs[2 * r] = calloc(50, sizeof(float));
        outs[2 * r + 1] = calloc(50, sizeof(float));
    }
    test_run_graph(g, 2, B, B, (const float *const *)ins, outs);
    for (uint32_t r = 0; r < B; r++) {
        for (int i = 0; i < 50; i++) {
            float v0 = ins[r][i] < 0 ? 0 : ins[r][i], v = v0;
            for (int k = 0; k < 12; k++)
                v = v * 2 - 1;
            assert_true(outs[2 * r][i] == v0 + v);
            assert_true(outs[2 * r + 1][i] == v);
        }
        free(ins[r]);
        free(outs[2 * r]);
        free(outs[2 * r + 1]);
    }
    ds_graph_free(g);
}

static void test_graph_output_may_be_an_input(void **state)
{
    (void)state;
    ds_graph *g = ds_graph_new("passthrough");
    uint32_t x = ds_graph_add_input(g, "x", 2, (int64_t[]){1, 3});
    uint32_t y = add_node(g, DS_OP_SIGMOID, &x, 1, NULL);
    assert_int_equal(ds_graph_mark_output(g, x), DSTACK_OK);
    assert_int_equal(ds_graph_mark_output(g, y), DSTACK_OK);
    assert_int_equal(ds_graph_finalize(g), DSTACK_OK);
    float in0[3] = {0, 1, 2}, in1[3] = {3, 4, 5};
    float o[4][3];
    const float *ins[2] = {in0, in1};
    float *outs[4] = {o[0], o[1], o[2], o[3]};
    test_run_graph(g, 1, 2, 2, ins, outs);
    test_assert_close(o[0], in0, 3, 0);
    test_assert_close(o[2], in1, 3, 0);
    assert_true(fabsf(o[1][0] - 0.5f) < 1e-7f);
    assert_true(fabsf(o[3][2] - 1.0f / (1.0f + expf(-5.0f))) < 1e-7f);
    ds_graph_free(g);
}

static void test_executor_device_partition_and_bad_calls(void **state)
{
    (void)state;
    ds_executor_config cfg = {0};
    cfg.cpu_threads = 3;
    ds_executor *ex = NULL;
    assert_int_equal(ds_exec_cpu_create(&cfg, &ex), DSTACK_OK);
    assert_string_equal(ex->ops->name, "cpu");
    assert_string_equal(ex->device.name, "cpu");
    assert_int_equal(ex->device.sm_count, 3);
    assert_int_equal(ex->device.n_units, 1);
    assert_int_equal(ex->device.unit_sms, 3);
    assert_int_equal(ex->device.partitioning, DSTACK_PARTITION_NONE);
    ds_partition part;
    assert_int_equal(ex->ops->partition_get(ex, 0, 1, &part), DSTACK_OK);
    assert_int_equal(part.sm_count, 3);
    assert_int_equal(ex->ops->partition_get(ex, 0, 2, &part), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ex->ops->partition_get(ex, 1, 1, &part), DSTACK_ERR_INVALID_ARGUMENT);

    ds_graph *g = small_cnn(4);
    ds_exec_plan *p = NULL;
    ds_plan_options o = {.max_batch = 2, .precision = DSTACK_PRECISION_FP16};
    assert_int_equal(ex->ops->plan_create(ex, g, &o, &p), DSTACK_ERR_UNSUPPORTED);
    assert_non_null(strstr(ds_error_message(), "float32"));
    o.precision = DSTACK_PRECISION_TF32;
    assert_int_equal(ex->ops->plan_create(ex, g, &o, &p), DSTACK_ERR_UNSUPPORTED);
    o.precision = DSTACK_PRECISION_FP32;
    o.max_batch = 0;
    assert_int_equal(ex->ops->plan_create(ex, g, &o, &p), DSTACK_ERR_INVALID_ARGUMENT);
    o.max_batch = 2;
    assert_int_equal(ex->ops->plan_create(ex, g, &o, &p), DSTACK_OK);

    float in[3 * 12 * 12] = {0}, out[10];
    const void *ins[3] = {in, in, in};
    void *outs[3] = {out, out, out};
    int calls[2] = {0, -1};
    ds_exec_batch b = {.batch = 3, .inputs = ins, .outputs = outs};
    assert_int_equal(ex->ops->run(ex, p, &b, &part, test_done_cb, calls),
                     DSTACK_ERR_INVALID_ARGUMENT); /* above max_batch */
    b.batch = 0;
    assert_int_equal(ex->ops->run(ex, p, &b, &part, test_done_cb, calls),
                     DSTACK_ERR_INVALID_ARGUMENT);
    b.batch = 1;
    ins[0] = NULL;
    assert_int_equal(ex->ops->run(ex, p, &b, &part, test_done_cb, calls),
                     DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(calls[0], 0); /* done is never called on failure */
    ins[0] = in;
    assert_int_equal(ex->ops->run(ex, p, &b, NULL, test_done_cb, calls), DSTACK_OK);
    assert_int_equal(calls[0], 1);
    ex->ops->plan_destroy(ex, p);

    /* an unfinalized graph is refused */
    ds_graph *raw = ds_graph_new("raw");
    assert_int_equal(ex->ops->plan_create(ex, raw, &o, &p), DSTACK_ERR_INVALID_ARGUMENT);
    ds_graph_free(raw);
    ds_graph_free(g);
    ex->ops->destroy(ex);
}

typedef struct concurrent_arg {
    ds_executor *ex;
    ds_exec_plan *plan;
    const ds_graph *g;
    float *in[2], *out[2];
    int calls[2];
    int rounds;
} concurrent_arg;

static void *run_rounds(void *p)
{
    concurrent_arg *a = p;
    ds_exec_batch b = {.batch = 2, .inputs = (const void *const *)a->in,
                       .outputs = (void *const *)a->out};
    for (int r = 0; r < a->rounds; r++)
        if (a->ex->ops->run(a->ex, a->plan, &b, NULL, test_done_cb, a->calls) != DSTACK_OK)
            return NULL;
    return p;
}

static void test_two_plans_run_concurrently_on_one_executor(void **state)
{
    (void)state;
    ds_graph *g1 = small_cnn(16), *g2 = small_cnn(8);
    ds_executor_config cfg = {0};
    cfg.cpu_threads = 2;
    ds_executor *ex = NULL;
    assert_int_equal(ds_exec_cpu_create(&cfg, &ex), DSTACK_OK);
    ds_plan_options o = {.max_batch = 2, .precision = DSTACK_PRECISION_FP32};
    concurrent_arg args[2] = {{.ex = ex, .g = g1, .rounds = 5}, {.ex = ex, .g = g2, .rounds = 5}};
    float *want[2][2];
    for (int t = 0; t < 2; t++) {
        assert_int_equal(ex->ops->plan_create(ex, args[t].g, &o, &args[t].plan), DSTACK_OK);
        for (int r = 0; r < 2; r++) {
            args[t].in[r] = rand_floats(3 * 12 * 12, 40 + 2 * t + r, 3.0f);
            args[t].out[r] = calloc(10, sizeof(float));
            want[t][r] = calloc(10, sizeof(float));
        }
        test_run_graph(args[t].g, 1, 2, 2, (const float *const *)args[t].in, want[t]);
    }
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, run_rounds, &args[t]), 0);
    for (int t = 0; t < 2; t++) {
        void *ret = NULL;
        pthread_join(th[t], &ret);
        assert_ptr_equal(ret, &args[t]);
        assert_int_equal(args[t].calls[0], 5);
        for (int r = 0; r < 2; r++) {
            test_assert_close(args[t].out[r], want[t][r], 10, 1e-6f);
            free(args[t].in[r]);
            free(args[t].out[r]);
            free(want[t][r]);
        }
        ex->ops->plan_destroy(ex, args[t].plan);
    }
    ex->ops->destroy(ex);
    ds_graph_free(g1);
    ds_graph_free(g2);
}

static void test_default_thread_count_is_online_cores(void **state)
{
    (void)state;
    ds_executor *ex = NULL;
    assert_int_equal(ds_exec_cpu_create(NULL, &ex), DSTACK_OK);
    assert_true(ex->device.sm_count >= 1);
    ex->ops->destroy(ex);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_of_5_equals_5_single_runs),
        cmocka_unit_test(test_thread_counts_1_and_3_agree),
        cmocka_unit_test(test_non_batchable_graph_runs_each_request_alone),
        cmocka_unit_test(test_arena_reuse_keeps_skip_connection_intact),
        cmocka_unit_test(test_graph_output_may_be_an_input),
        cmocka_unit_test(test_executor_device_partition_and_bad_calls),
        cmocka_unit_test(test_two_plans_run_concurrently_on_one_executor),
        cmocka_unit_test(test_default_thread_count_is_online_cores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
