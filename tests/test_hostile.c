/* test_hostile.c - the findings of issue 14, one regression test each.
 *
 * Each model is built to hurt (tests/hostile_models.h) and registered
 * through the public API on the cpu backend. The tests do not depend on the
 * machine's speed: a complexity finding uses a size that took minutes when
 * quadratic and asserts a bound far above what the fixed code needs; a
 * budget finding asserts the status and that the message names the op.
 *
 * DSTACK_HOSTILE_SCALE=N multiplies the chain sizes (10 gives the 10^6-node
 * measurement of bench/results/reliability.md); times are printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dstack.h"
#include "hostile_models.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t scale(void)
{
    const char *s = getenv("DSTACK_HOSTILE_SCALE");
    return s && atoi(s) > 0 ? (uint32_t)atoi(s) : 1;
}

static dstack_ctx *cpu_ctx(void)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.cpu_threads = 1;
    dstack_ctx *ctx = NULL;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_OK);
    return ctx;
}

/* Register `b` with max_batch; returns the status, *secs the time taken. */
static dstack_status register_bytes(dstack_ctx *ctx, const pbuf *b, uint32_t max_batch,
                                    dstack_model **m, double *secs)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_BYTES;
    d.bytes = b->p;
    d.n_bytes = b->n;
    d.max_batch = max_batch;
    double t0 = now_s();
    dstack_status st = dstack_register_model(ctx, &d, m);
    if (secs)
        *secs = now_s() - t0;
    return st;
}

/* ---- 1: nesting ---- */

typedef struct nest_job {
    pbuf bytes;
    dstack_status st;
    char msg[256];
} nest_job;

static void *register_in_thread(void *p)
{
    nest_job *j = p;
    dstack_ctx *ctx = cpu_ctx();
    dstack_model *m = NULL;
    j->st = register_bytes(ctx, &j->bytes, 1, &m, NULL);
    snprintf(j->msg, sizeof j->msg, "%s", dstack_last_error());
    dstack_destroy(ctx);
    return NULL;
}

/* On a 512 KiB thread stack, as a host's worker thread may have: protobuf-c's
 * recursive unpack overflowed it long before 20,000 levels. */
static void expect_nesting_refused(pbuf bytes)
{
    nest_job j = {.bytes = bytes};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    pthread_t t;
    assert_int_equal(pthread_create(&t, &attr, register_in_thread, &j), 0);
    pthread_join(t, NULL);
    pthread_attr_destroy(&attr);
    hm_free(&j.bytes);
    assert_int_equal(j.st, DSTACK_ERR_PARSE);
    assert_non_null(strstr(j.msg, "nested"));
}

static void test_typeproto_nested_20000_deep_is_parse_error(void **state)
{
    (void)state;
    expect_nesting_refused(hm_nested_types(20000));
}

static void test_graph_attributes_nested_10000_deep_are_parse_error(void **state)
{
    (void)state;
    expect_nesting_refused(hm_nested_graph_attrs(10000));
}

/* ---- 2, 3: quadratic registration ---- */

static void expect_registers_within(pbuf b, uint32_t n, const char *what, double bound_s)
{
    dstack_ctx *ctx = cpu_ctx();
    dstack_model *m = NULL;
    double secs;
    dstack_status st = register_bytes(ctx, &b, 1, &m, &secs);
    print_message("%s: %u, %.1f MB: registered in %.2f s\n", what, n, b.n / 1e6, secs);
    if (st != DSTACK_OK)
        print_message("  %s: %s\n", dstack_strerror(st), dstack_last_error());
    assert_int_equal(st, DSTACK_OK);
    assert_true(secs < bound_s);
    assert_int_equal(dstack_unregister_model(ctx, m), DSTACK_OK);
    dstack_destroy(ctx);
    hm_free(&b);
}

/* 100,000 Relus took 10 s when the arena planner compared every pair; at
 * 300,000 that is 90 s. Linear planning needs well under a second. */
static void test_relu_chain_300k_registers_in_linear_time(void **state)
{
    (void)state;
    uint32_t n = 300000 * scale();
    expect_registers_within(hm_chain(n, "Relu", 0), n, "Relu chain", 30.0 * scale());
}

/* 100,000 Dropouts with mask outputs did not finish in 5 minutes. */
static void test_dropout_masks_100k_register_in_linear_time(void **state)
{
    (void)state;
    uint32_t n = 100000 * scale();
    expect_registers_within(hm_chain(n, "Dropout", 1), n, "Dropout+mask chain", 30.0 * scale());
}

/* 60,000 names colliding in FNV-1a's low bits took 30 s; 131,072 take about
 * 150 s with an unseeded hash, well under a second with the keyed one. */
static void test_fnv_colliding_initializer_names_do_not_flood(void **state)
{
    (void)state;
    uint32_t n = 1u << HM_COLLIDE_POSITIONS;
    expect_registers_within(hm_colliding_inits(n), n, "colliding initializer names", 30.0);
}

/* ---- 4: work per request ---- */

/* The 65535 window over a 1x1 input, 1024x1024 outputs: about 160 s per
 * request when every output checked 65535 taps; each output has one. */
static void test_maxpool_65535_window_costs_only_its_real_taps(void **state)
{
    (void)state;
    dstack_ctx *ctx = cpu_ctx();
    pbuf b = hm_maxpool(1, 1, 65535, 64, 65534);
    dstack_model *m = NULL;
    assert_int_equal(register_bytes(ctx, &b, 1, &m, NULL), DSTACK_OK);
    hm_free(&b);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    assert_int_equal(info.outputs[0].dims[2], 1024);
    /* Every output sees the one pixel once, and costs 1 to write. */
    assert_int_equal(info.flops_per_request, 2ull * 1024 * 1024);
    float x = 3.0f;
    float *y = malloc(info.outputs[0].bytes);
    dstack_buffer in = {&x, sizeof x}, out = {y, info.outputs[0].bytes};
    dstack_request r;
    dstack_request_init(&r);
    r.inputs = &in;
    r.n_inputs = 1;
    r.outputs = &out;
    r.n_outputs = 1;
    dstack_ticket t;
    double t0 = now_s();
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    dstack_completion c;
    size_t n = 0;
    while (n == 0)
        assert_int_equal(dstack_poll(ctx, &c, 1, 1000000, &n), DSTACK_OK);
    double secs = now_s() - t0;
    print_message("65535-window MaxPool, 1024x1024 outputs: one request in %.3f s\n", secs);
    assert_int_equal(c.status, DSTACK_OK);
    assert_true(secs < 20.0);
    assert_true(y[0] == 3.0f && y[1024 * 1024 - 1] == 3.0f);
    free(y);
    dstack_destroy(ctx);
}

/* A 2048x2048 window over a 2048x2048 input with 1024 pads visits ~10^13
 * taps per request (hours on a cpu): refused at registration, naming it. */
static void test_pool_work_over_budget_is_refused_naming_the_op(void **state)
{
    (void)state;
    dstack_ctx *ctx = cpu_ctx();
    pbuf b = hm_maxpool(2048, 2048, 2048, 1, 1024);
    dstack_model *m = NULL;
    dstack_status st = register_bytes(ctx, &b, 1, &m, NULL);
    print_message("%s\n", dstack_last_error());
    assert_int_equal(st, DSTACK_ERR_RESOURCE_LIMIT);
    assert_non_null(strstr(dstack_last_error(), "MaxPool"));
    assert_non_null(strstr(dstack_last_error(), "max_request_ops"));
    /* A caller who means it can raise the budget. */
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.cpu_threads = 1;
    o.max_request_ops = UINT64_MAX;
    dstack_ctx *big = NULL;
    assert_int_equal(dstack_create(&o, &big), DSTACK_OK);
    assert_int_equal(register_bytes(big, &b, 1, &m, NULL), DSTACK_OK);
    dstack_destroy(big);
    hm_free(&b);
    dstack_destroy(ctx);
}

/* ---- 5: memory ---- */

/* A broadcast Add of 1 GiB per request asked for a 34 GB arena at batch 32. */
static void test_broadcast_add_over_memory_budget_is_refused(void **state)
{
    (void)state;
    dstack_ctx *ctx = cpu_ctx();
    pbuf b = hm_broadcast_add(16384, 1);
    dstack_model *m = NULL;
    dstack_status st = register_bytes(ctx, &b, 32, &m, NULL);
    print_message("%s\n", dstack_last_error());
    assert_int_equal(st, DSTACK_ERR_RESOURCE_LIMIT);
    assert_non_null(strstr(dstack_last_error(), "Add"));
    hm_free(&b);
    dstack_destroy(ctx);
}

/* 16 outputs of 1 GiB each: no single tensor is over, their sum is. */
static void test_sixteen_large_outputs_over_memory_budget_are_refused(void **state)
{
    (void)state;
    dstack_ctx *ctx = cpu_ctx();
    pbuf b = hm_broadcast_add(16384, 16);
    dstack_model *m = NULL;
    dstack_status st = register_bytes(ctx, &b, 1, &m, NULL);
    print_message("%s\n", dstack_last_error());
    assert_int_equal(st, DSTACK_ERR_RESOURCE_LIMIT);
    assert_non_null(strstr(dstack_last_error(), "max_model_memory_bytes"));
    hm_free(&b);
    dstack_destroy(ctx);
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* 10 MB of empty initializers unpacked to 1.27 GB before failing. In a
 * child, so that the peak RSS measured is this registration's alone. */
static void test_empty_initializers_cannot_amplify_parse_memory(void **state)
{
    (void)state;
    pbuf b = hm_empty_inits(5000000);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        long before = max_rss_kb();
        dstack_ctx *ctx = cpu_ctx();
        dstack_model *m = NULL;
        dstack_status st = register_bytes(ctx, &b, 1, &m, NULL);
        long grown_mb = (max_rss_kb() - before) / 1024;
        fprintf(stderr, "5M empty initializers (%.1f MB): %s (%s), peak RSS grew %ld MB\n",
                b.n / 1e6, dstack_strerror(st), dstack_last_error(), grown_mb);
        dstack_destroy(ctx);
        _exit(st == DSTACK_ERR_RESOURCE_LIMIT && grown_mb < 400 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    hm_free(&b);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- 6: empty repeated attributes ---- */

/* strides and pads as INTS with no values: memcpy(dst, NULL, 0) before
 * (UBSan stops there under make sanitize); the defaults now. */
static void test_empty_ints_attributes_mean_defaults(void **state)
{
    (void)state;
    dstack_ctx *ctx = cpu_ctx();
    pbuf b = hm_empty_ints_pool();
    dstack_model *m = NULL;
    assert_int_equal(register_bytes(ctx, &b, 1, &m, NULL), DSTACK_OK);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    assert_int_equal(info.outputs[0].dims[2], 3); /* 4x4, kernel 2, stride 1 */
    hm_free(&b);
    dstack_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_initializers_cannot_amplify_parse_memory),
        cmocka_unit_test(test_typeproto_nested_20000_deep_is_parse_error),
        cmocka_unit_test(test_graph_attributes_nested_10000_deep_are_parse_error),
        cmocka_unit_test(test_relu_chain_300k_registers_in_linear_time),
        cmocka_unit_test(test_dropout_masks_100k_register_in_linear_time),
        cmocka_unit_test(test_fnv_colliding_initializer_names_do_not_flood),
        cmocka_unit_test(test_maxpool_65535_window_costs_only_its_real_taps),
        cmocka_unit_test(test_pool_work_over_budget_is_refused_naming_the_op),
        cmocka_unit_test(test_broadcast_add_over_memory_budget_is_refused),
        cmocka_unit_test(test_sixteen_large_outputs_over_memory_budget_are_refused),
        cmocka_unit_test(test_empty_ints_attributes_mean_defaults),
    };
    if (getenv("DSTACK_TEST_FILTER")) /* run one finding alone: a glob of test names */
        cmocka_set_test_filter(getenv("DSTACK_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
