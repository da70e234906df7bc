/* api_limits.c - the public API at the edges of its values, through
 * include/dstack.h only: sizes and SLOs near their limits, the messages of
 * refusals a user meets first, what the header promises about struct sizes,
 * statistics and locking, and the zoo's names. Each test here failed before
 * the fix it guards (issue 15). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "api_common.h"

static float tiny_in[TINY_IN_FLOATS];
static float tiny_out[TINY_OUT_FLOATS];

static dstack_request tiny_request(dstack_buffer *in, dstack_buffer *out)
{
    in->data = tiny_in;
    in->bytes = sizeof tiny_in;
    out->data = tiny_out;
    out->bytes = sizeof tiny_out;
    return io_request(in, out);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* (bytes + 63) / 64 * 64 wrapped to 0 for these, and the call said OK. */
static void test_host_alloc_near_size_max_is_out_of_memory(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    const size_t huge[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 62, SIZE_MAX - 63, SIZE_MAX - 64,
                           (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        void *p = (void *)0x1;
        assert_int_equal(dstack_host_alloc(ctx, huge[i], &p), DSTACK_ERR_OUT_OF_MEMORY);
        assert_ptr_equal(p, (void *)0x1); /* untouched on failure */
        assert_true(dstack_last_error()[0] != '\0');
    }
    /* sizes that are not multiples of the alignment still get all they asked */
    const size_t odd[] = {1, 63, 65, 4097};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        unsigned char *p = NULL;
        assert_int_equal(dstack_host_alloc(ctx, odd[i], (void **)&p), DSTACK_OK);
        assert_int_equal((uintptr_t)p % 64, 0);
        memset(p, 0xA5, odd[i]);
        dstack_host_free(ctx, p);
    }
    dstack_destroy(ctx);
}

/* slo_us = 18446744073709551 was accepted, now + slo_ns wrapped, and every
 * request completed DEADLINE_MISSED. */
static void test_slo_over_the_limit_is_refused_and_the_limit_works(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m = (dstack_model *)0x1;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    const uint64_t too_big[] = {18446744073709551ull, DSTACK_MAX_SLO_US + 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof too_big / sizeof too_big[0]; i++) {
        assert_int_equal(register_tiny(ctx, 4, too_big[i], &m), DSTACK_ERR_INVALID_ARGUMENT);
        assert_ptr_equal(m, (dstack_model *)0x1);
        assert_true(strstr(dstack_last_error(), "slo_us") != NULL);
    }
    assert_int_equal(register_tiny(ctx, 4, DSTACK_MAX_SLO_US, &m), DSTACK_OK);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    assert_true(info.slo_us == DSTACK_MAX_SLO_US);
    dstack_buffer in, out;
    dstack_request r = tiny_request(&in, &out);
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, &c, 1, 10 * 1000 * 1000, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c.status, DSTACK_OK);
    float ref_in[TINY_SAMPLES][TINY_IN_FLOATS], ref_out[TINY_SAMPLES][TINY_OUT_FLOATS];
    assert_int_equal(load_tiny_reference(ref_in, ref_out), 0);
    memcpy(tiny_in, ref_in[0], sizeof tiny_in);
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    assert_int_equal(dstack_poll(ctx, &c, 1, 10 * 1000 * 1000, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c.status, DSTACK_OK);
    assert_true(max_rel_err(tiny_out, ref_out[0], TINY_OUT_FLOATS) < 1e-4);
    assert_true(c.deadline_ns > c.submit_ns); /* did not wrap */
    assert_true(c.deadline_ns - c.submit_ns == DSTACK_MAX_SLO_US * 1000u);
    dstack_destroy(ctx);
}

/* A directory opened fine, and seeking to its end gave LONG_MAX. */
static void test_directory_as_model_path_says_directory(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_FILE;
    d.path = test_data_dir();
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_IO);
    assert_true(strstr(dstack_last_error(), "is a directory") != NULL);
    assert_null(strstr(dstack_last_error(), "9223372036854775807"));
    dstack_destroy(ctx);
}

/* The alias's errors named the architecture the user never typed. */
static void test_zoo_alias_errors_name_the_alias(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = "squeezenet";
    d.zoo_image_size = 16; /* too small for its last 3x3 window */
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_SHAPE);
    assert_true(strstr(dstack_last_error(), "'squeezenet'") != NULL);
    assert_null(strstr(dstack_last_error(), "squeezenet1_1"));
    dstack_destroy(ctx);
}

static void test_zoo_names_are_enumerated(void **state)
{
    (void)state;
    size_t n = dstack_zoo_count();
    assert_true(n >= 13);
    int seen_resnet50 = 0, seen_squeezenet = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = dstack_zoo_name(i);
        assert_non_null(name);
        assert_true(strlen(name) > 0 && strlen(name) < DSTACK_NAME_LEN);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(name, dstack_zoo_name(j));
        seen_resnet50 |= !strcmp(name, "resnet50");
        seen_squeezenet |= !strcmp(name, "squeezenet");
    }
    assert_true(seen_resnet50 && seen_squeezenet);
    assert_null(dstack_zoo_name(n));
    assert_null(dstack_zoo_name(SIZE_MAX));
    /* every name is one register knows: the smallest ones really build */
    dstack_ctx *ctx;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = "no_such_model";
    dstack_model *m;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_NOT_FOUND);
    for (size_t i = 0; i < n; i++)
        assert_true(strstr(dstack_last_error(), dstack_zoo_name(i)) != NULL);
    dstack_destroy(ctx);
}

/* The header promised INVALID_ARGUMENT for a struct_size that does not reach
 * past `policy`; 8, 12 and 16 were accepted. */
static void test_ctx_info_refuses_struct_size_short_of_policy(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    const size_t need = offsetof(dstack_ctx_info, policy) + sizeof(dstack_policy);
    for (size_t size = sizeof(size_t); size < need; size += 4) {
        dstack_ctx_info info;
        memset(&info, 0xAB, sizeof info);
        info.struct_size = size;
        assert_int_equal(dstack_ctx_info_get(ctx, &info), DSTACK_ERR_INVALID_ARGUMENT);
        assert_int_equal(info.struct_size, size);
        assert_int_equal((int)info.backend, (int)0xABABABAB); /* untouched */
    }
    /* exactly that much is enough, and nothing past it is written */
    union {
        dstack_ctx_info info;
        unsigned char bytes[sizeof(dstack_ctx_info)];
    } u;
    memset(&u, 0xAB, sizeof u);
    u.info.struct_size = need;
    assert_int_equal(dstack_ctx_info_get(ctx, &u.info), DSTACK_OK);
    assert_int_equal(u.info.backend, DSTACK_BACKEND_CPU);
    assert_int_equal(u.info.struct_size, need);
    for (size_t i = need; i < sizeof u; i++)
        assert_int_equal(u.bytes[i], 0xAB);
    dstack_destroy(ctx);
}

/* slo_attainment is documented as slo_met / (ok + deadline missed +
 * failed): cancelled requests do not lower it. */
static void test_slo_attainment_leaves_cancelled_out(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 1, 0, &m), DSTACK_OK);
    dstack_buffer in, out;
    dstack_request r = tiny_request(&in, &out);
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    dstack_completion c[64];
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, c, 64, 10 * 1000 * 1000, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c[0].status, DSTACK_OK);
    /* a past deadline: judged, and missed */
    r.deadline_ns = 1;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    assert_int_equal(dstack_poll(ctx, c, 64, 10 * 1000 * 1000, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c[0].status, DSTACK_ERR_DEADLINE_MISSED);
    /* many queued at once, then shutdown: the ones not yet run are cancelled */
    r.deadline_ns = 0;
    for (int i = 0; i < 32; i++)
        assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    assert_int_equal(dstack_shutdown(ctx), DSTACK_OK);
    size_t total = 0;
    while (dstack_poll(ctx, c, 64, 1000000, &n) == DSTACK_OK)
        total += n;
    assert_int_equal(total, 32);
    dstack_model_stats s;
    dstack_model_stats_init(&s);
    assert_int_equal(dstack_stats(ctx, m, &s), DSTACK_OK);
    uint64_t judged = s.completed_ok + s.deadline_missed + s.failed;
    assert_true(s.deadline_missed == 1);
    assert_true(s.completed_ok + s.cancelled == 33);
    assert_true(judged > 0);
    assert_true(s.slo_attainment == (double)s.slo_met / (double)judged);
    dstack_destroy(ctx);
}

typedef struct slow_register {
    dstack_ctx *ctx;
    atomic_int started, done;
    dstack_status st;
} slow_register;

static void *register_resnet50(void *arg)
{
    slow_register *sr = arg;
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = "resnet50";
    d.max_batch = 1;
    dstack_model *m;
    atomic_store(&sr->started, 1);
    sr->st = dstack_register_model(sr->ctx, &d, &m);
    atomic_store(&sr->done, 1);
    return NULL;
}

/* model_info_get took the lock a registration holds while it builds the
 * model: 0.27 s behind resnet50. */
static void test_model_info_does_not_wait_for_a_registration(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    slow_register sr = {.ctx = ctx};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, register_resnet50, &sr), 0);
    while (!atomic_load(&sr.started))
        ;
    struct timespec pause = {0, 30 * 1000 * 1000}; /* well inside the registration */
    nanosleep(&pause, NULL);
    int overlapped = 0;
    double worst = 0;
    for (int i = 0; i < 20 && !atomic_load(&sr.done); i++) {
        dstack_model_info info;
        dstack_model_info_init(&info);
        double t0 = now_s();
        assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
        double dt = now_s() - t0;
        if (dt > worst)
            worst = dt;
        overlapped += !atomic_load(&sr.done);
        assert_int_equal(info.n_inputs, 1);
    }
    pthread_join(th, NULL);
    assert_int_equal(sr.st, DSTACK_OK);
    /* the registration was still running when the reads came back */
    assert_true(overlapped > 0);
    assert_true(worst < 0.05);
    dstack_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_alloc_near_size_max_is_out_of_memory),
        cmocka_unit_test(test_slo_over_the_limit_is_refused_and_the_limit_works),
        cmocka_unit_test(test_directory_as_model_path_says_directory),
        cmocka_unit_test(test_zoo_alias_errors_name_the_alias),
        cmocka_unit_test(test_zoo_names_are_enumerated),
        cmocka_unit_test(test_ctx_info_refuses_struct_size_short_of_policy),
        cmocka_unit_test(test_slo_attainment_leaves_cancelled_out),
        cmocka_unit_test(test_model_info_does_not_wait_for_a_registration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
