/* api_basic.c - every public function through include/dstack.h only: the
 * status of each bad argument, and one request path checked against ONNX
 * Runtime's outputs for the same ONNX file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_common.h"

static float ref_in[TINY_SAMPLES][TINY_IN_FLOATS];
static float ref_out[TINY_SAMPLES][TINY_OUT_FLOATS];

static void test_version_and_status_strings(void **state)
{
    (void)state;
    assert_int_equal(dstack_version(), DSTACK_VERSION_NUMBER);
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", DSTACK_VERSION_MAJOR, DSTACK_VERSION_MINOR, DSTACK_VERSION_PATCH);
    assert_string_equal(dstack_version_string(), v);
    for (int a = DSTACK_OK; a <= DSTACK_ERR_INTERNAL; a++) {
        assert_string_not_equal(dstack_strerror((dstack_status)a), "unknown status");
        for (int b = a + 1; b <= DSTACK_ERR_INTERNAL; b++)
            assert_string_not_equal(dstack_strerror((dstack_status)a), dstack_strerror((dstack_status)b));
    }
    assert_string_equal(dstack_strerror((dstack_status)999), "unknown status");
    assert_string_equal(dstack_strerror((dstack_status)-1), "unknown status");
}

static void test_create_rejects_bad_options(void **state)
{
    (void)state;
    dstack_options o;
    dstack_ctx *ctx = (dstack_ctx *)0x1;
    assert_int_equal(dstack_create(NULL, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    memset(&o, 0, sizeof o); /* never initialised */
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_ERR_INVALID_ARGUMENT);
    assert_ptr_equal(ctx, (dstack_ctx *)0x1); /* untouched on failure */
    assert_true(strstr(dstack_last_error(), "struct_size") != NULL);
    dstack_options_init(&o);
    o.backend = (dstack_backend)42;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_ERR_INVALID_ARGUMENT);
    dstack_options_init(&o);
    o.queue_capacity = 0;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_ERR_INVALID_ARGUMENT);
    dstack_options_init(&o);
    o.policy = (dstack_policy)99;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_ERR_INVALID_ARGUMENT);
    dstack_options_init(&o);
    o.device = -1;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_ERR_INVALID_ARGUMENT);
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.policy = DSTACK_POLICY_IDEAL;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_ERR_UNSUPPORTED);
    assert_ptr_equal(ctx, (dstack_ctx *)0x1);
}

/* A program built against a newer header passes a bigger struct: accepted
 * while the fields we don't know are zero, refused when they are not. */
static void test_options_from_a_newer_header(void **state)
{
    (void)state;
    struct {
        dstack_options o;
        uint64_t future_field;
    } newer;
    dstack_options_init(&newer.o);
    newer.o.struct_size = sizeof newer;
    newer.o.backend = DSTACK_BACKEND_CPU;
    newer.future_field = 0;
    dstack_ctx *ctx = NULL;
    assert_int_equal(dstack_create(&newer.o, &ctx), DSTACK_OK);
    dstack_destroy(ctx);
    newer.future_field = 7;
    assert_int_equal(dstack_create(&newer.o, &ctx), DSTACK_ERR_UNSUPPORTED);
}

static void test_cuda_without_gpu_is_no_device_and_auto_falls_back(void **state)
{
    (void)state;
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CUDA;
    dstack_ctx *ctx = NULL;
    dstack_status st = dstack_create(&o, &ctx);
    if (st == DSTACK_OK) { /* a machine with a GPU: nothing to prove here */
        dstack_destroy(ctx);
        skip();
    }
    assert_true(st == DSTACK_ERR_NO_DEVICE || st == DSTACK_ERR_UNSUPPORTED);
    assert_true(strlen(dstack_last_error()) > 0);
    dstack_options_init(&o);
    o.cpu_threads = 1;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_OK);
    dstack_ctx_info info;
    dstack_ctx_info_init(&info);
    assert_int_equal(dstack_ctx_info_get(ctx, &info), DSTACK_OK);
    assert_int_equal(info.backend, DSTACK_BACKEND_CPU);
    assert_true(strstr(info.note, "cuda") != NULL);
    assert_true(strstr(info.note, "cpu") != NULL);
    assert_int_equal(info.n_models, 0);
    assert_int_equal(dstack_ctx_info_get(ctx, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    dstack_destroy(ctx);
    dstack_destroy(NULL); /* a no-op */
}

static void test_register_rejects_bad_descriptions(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    dstack_model_desc d;
    dstack_model *m = (dstack_model *)0x1;
    dstack_model_desc_init(&d);
    assert_int_equal(dstack_register_model(NULL, &d, &m), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_register_model(ctx, NULL, &m), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_register_model(ctx, &d, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_INVALID_ARGUMENT); /* no source */
    d.source = DSTACK_SOURCE_ONNX_FILE;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_INVALID_ARGUMENT); /* no path */
    d.path = "/nonexistent/model.onnx";
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_NOT_FOUND);
    assert_true(strstr(dstack_last_error(), "/nonexistent/model.onnx") != NULL);
    d.path = test_data_dir(); /* a directory */
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_IO);
    d.source = DSTACK_SOURCE_ONNX_BYTES;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_INVALID_ARGUMENT);
    static const char junk[] = "this is not a protobuf \xff\xff\xff\xff";
    d.bytes = junk;
    d.n_bytes = sizeof junk;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_PARSE);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = "no_such_net";
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_NOT_FOUND);
    d.path = "resnet18";
    d.max_batch = 0;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_INVALID_ARGUMENT);
    d.max_batch = 4;
    d.fixed_batch = 8;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_INVALID_ARGUMENT);
    d.fixed_batch = 0;
    d.source = (dstack_model_source)77;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_INVALID_ARGUMENT);
    assert_ptr_equal(m, (dstack_model *)0x1);
    dstack_ctx_info info;
    dstack_ctx_info_init(&info);
    dstack_ctx_info_get(ctx, &info);
    assert_int_equal(info.n_models, 0); /* nothing half-registered */
    dstack_destroy(ctx);
}

static void test_model_info_describes_the_onnx_file(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 8, 0, &m), DSTACK_OK);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    assert_string_equal(info.name, "tiny_cnn");
    assert_int_equal(info.n_inputs, 1);
    assert_int_equal(info.n_outputs, 1);
    assert_string_equal(info.inputs[0].name, "input");
    assert_int_equal(info.inputs[0].rank, 4);
    assert_int_equal(info.inputs[0].dims[0], 1);
    assert_int_equal(info.inputs[0].dims[1], 3);
    assert_int_equal(info.inputs[0].dims[3], 8);
    assert_int_equal(info.inputs[0].bytes, TINY_IN_FLOATS * sizeof(float));
    assert_int_equal(info.outputs[0].bytes, TINY_OUT_FLOATS * sizeof(float));
    assert_int_equal(info.max_batch, 8);
    assert_int_equal(info.batchable, 1); /* a CNN: a batch runs in one pass */
    assert_true(info.batch_size >= 1 && info.batch_size <= 8);
    /* 4*3*3*3 + 4 conv, 5*4 + 5 fc */
    assert_int_equal(info.param_count, 4 * 27 + 4 + 20 + 5);
    /* at least the conv's 2 * 4*64*27 multiply-adds */
    assert_true(info.flops_per_request >= 2 * 4 * 64 * 27);
    assert_int_equal(dstack_model_info_get(ctx, NULL, &info), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_model_info_get(ctx, (dstack_model *)&info, &info), DSTACK_ERR_NOT_FOUND);
    dstack_destroy(ctx);
}

static dstack_request one_request(dstack_buffer *in, dstack_buffer *out, float *x, float *y, void *user)
{
    in->data = x;
    in->bytes = TINY_IN_FLOATS * sizeof(float);
    out->data = y;
    out->bytes = TINY_OUT_FLOATS * sizeof(float);
    dstack_request r = io_request(in, out);
    r.user_data = user;
    return r;
}

static void test_outputs_match_onnxruntime(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    float y[TINY_SAMPLES][TINY_OUT_FLOATS];
    dstack_buffer in[TINY_SAMPLES], out[TINY_SAMPLES];
    for (int i = 0; i < TINY_SAMPLES; i++) {
        for (int k = 0; k < TINY_OUT_FLOATS; k++)
            y[i][k] = NAN;
        dstack_request r = one_request(&in[i], &out[i], ref_in[i], y[i], (void *)(intptr_t)i);
        dstack_ticket t;
        assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    }
    int seen[TINY_SAMPLES] = {0};
    for (int got = 0; got < TINY_SAMPLES;) {
        dstack_completion c[4];
        size_t n = 0;
        assert_int_equal(dstack_poll(ctx, c, 4, 5000000, &n), DSTACK_OK);
        assert_true(n > 0);
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(c[k].status, DSTACK_OK);
            assert_ptr_equal(c[k].model, m);
            seen[(intptr_t)c[k].user_data]++;
        }
        got += (int)n;
    }
    for (int i = 0; i < TINY_SAMPLES; i++) {
        assert_int_equal(seen[i], 1);
        double e = max_rel_err(y[i], ref_out[i], TINY_OUT_FLOATS);
        if (e > 1e-4)
            fail_msg("request %d: max relative error %g against onnxruntime", i, e);
    }
    dstack_model_stats s;
    dstack_model_stats_init(&s);
    assert_int_equal(dstack_stats(ctx, m, &s), DSTACK_OK);
    assert_int_equal(s.submitted, TINY_SAMPLES);
    assert_int_equal(s.completed_ok, TINY_SAMPLES);
    assert_true(s.latency_p50_us <= s.latency_p99_us && s.latency_p99_us <= s.latency_max_us);
    assert_true(s.slo_attainment == 1.0);
    dstack_destroy(ctx);
}

static void test_submit_rejects_bad_requests(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    float x[TINY_IN_FLOATS] = {0}, y[TINY_OUT_FLOATS];
    dstack_buffer in, out;
    dstack_request r = one_request(&in, &out, x, y, NULL);
    dstack_ticket t = 12345;
    assert_int_equal(dstack_submit(NULL, m, &r, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_submit(ctx, NULL, &r, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_submit(ctx, m, NULL, &t), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_submit(ctx, m, &r, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    in.bytes = 150528;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_SIZE_MISMATCH);
    assert_true(strstr(dstack_last_error(), "768") != NULL); /* says what it expects */
    in.bytes = TINY_IN_FLOATS * sizeof(float);
    out.bytes = 0;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_SIZE_MISMATCH);
    out.bytes = TINY_OUT_FLOATS * sizeof(float);
    r.n_inputs = 2;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_SIZE_MISMATCH);
    r.n_inputs = 1;
    out.data = NULL;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_INVALID_ARGUMENT);
    out.data = y;
    r.struct_size = 0;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_INVALID_ARGUMENT);
    r.struct_size = sizeof r;
    int not_a_model;
    assert_int_equal(dstack_submit(ctx, (dstack_model *)&not_a_model, &r, &t), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(t, 12345); /* untouched by every failure */
    dstack_model_stats s;
    dstack_model_stats_init(&s);
    dstack_stats(ctx, m, &s);
    assert_int_equal(s.submitted, 0);
    dstack_destroy(ctx);
}

static void test_poll_and_stats_arguments(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    dstack_completion c[2];
    size_t n = 77;
    assert_int_equal(dstack_poll(NULL, c, 2, 0, &n), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_poll(ctx, NULL, 2, 0, &n), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_poll(ctx, c, 0, 0, &n), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_poll(ctx, c, 2, 0, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(n, 77);
    assert_int_equal(dstack_poll(ctx, c, 2, 0, &n), DSTACK_OK); /* nothing: returns at once */
    assert_int_equal(n, 0);
    assert_int_equal(dstack_poll(ctx, c, 2, 2000, &n), DSTACK_OK); /* bounded wait */
    assert_int_equal(n, 0);
    dstack_model_stats s;
    dstack_model_stats_init(&s);
    assert_int_equal(dstack_stats(NULL, m, &s), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_stats(ctx, m, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    s.struct_size = 0;
    assert_int_equal(dstack_stats(ctx, m, &s), DSTACK_ERR_INVALID_ARGUMENT);
    dstack_model_stats_init(&s);
    assert_int_equal(dstack_stats(ctx, (dstack_model *)&s, &s), DSTACK_ERR_NOT_FOUND);
    dstack_destroy(ctx);
}

static void test_unregister_then_handle_is_unknown(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m, *m2;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m2), DSTACK_OK);
    assert_int_equal(dstack_unregister_model(NULL, m), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_unregister_model(ctx, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_unregister_model(ctx, m), DSTACK_OK);
    assert_int_equal(dstack_unregister_model(ctx, m), DSTACK_ERR_NOT_FOUND);
    float x[TINY_IN_FLOATS] = {0}, y[TINY_OUT_FLOATS];
    dstack_buffer in, out;
    dstack_request r = one_request(&in, &out, x, y, NULL);
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_NOT_FOUND);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(dstack_submit(ctx, m2, &r, &t), DSTACK_OK); /* the other lives on */
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, &c, 1, 5000000, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c.status, DSTACK_OK);
    dstack_ctx_info ci;
    dstack_ctx_info_init(&ci);
    dstack_ctx_info_get(ctx, &ci);
    assert_int_equal(ci.n_models, 1);
    dstack_destroy(ctx);
}

static void test_past_deadline_completes_as_missed(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    float x[TINY_IN_FLOATS] = {0}, y[TINY_OUT_FLOATS] = {-3, -3, -3, -3, -3};
    dstack_buffer in, out;
    dstack_request r = one_request(&in, &out, x, y, NULL);
    r.deadline_ns = 1; /* long gone */
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, &c, 1, 5000000, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c.ticket, t);
    assert_int_equal(c.status, DSTACK_ERR_DEADLINE_MISSED);
    assert_int_equal(c.batch_size, 0);
    assert_true(y[0] == -3.0f); /* it never ran */
    dstack_model_stats s;
    dstack_model_stats_init(&s);
    dstack_stats(ctx, m, &s);
    assert_int_equal(s.deadline_missed, 1);
    dstack_destroy(ctx);
}

static void test_queue_full_is_distinct_and_drops_nothing(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 2), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    float x[TINY_IN_FLOATS] = {0}, y[3][TINY_OUT_FLOATS];
    dstack_buffer in[3], out[3];
    dstack_ticket t[3];
    for (int i = 0; i < 2; i++) {
        dstack_request r = one_request(&in[i], &out[i], x, y[i], NULL);
        assert_int_equal(dstack_submit(ctx, m, &r, &t[i]), DSTACK_OK);
    }
    dstack_request r = one_request(&in[2], &out[2], x, y[2], NULL);
    assert_int_equal(dstack_submit(ctx, m, &r, &t[2]), DSTACK_ERR_QUEUE_FULL);
    dstack_completion c[2];
    size_t got = 0;
    while (got < 2) {
        size_t n = 0;
        assert_int_equal(dstack_poll(ctx, c + got, 2 - got, 5000000, &n), DSTACK_OK);
        got += n;
    }
    assert_int_equal(dstack_submit(ctx, m, &r, &t[2]), DSTACK_OK);
    dstack_destroy(ctx);
}

static void test_host_alloc_buffers_serve_requests(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    void *x = (void *)0x1, *y = NULL;
    assert_int_equal(dstack_host_alloc(NULL, 16, &x), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_host_alloc(ctx, 0, &x), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_host_alloc(ctx, 16, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    assert_ptr_equal(x, (void *)0x1);
    assert_int_equal(dstack_host_alloc(ctx, sizeof ref_in[1], &x), DSTACK_OK);
    assert_int_equal(dstack_host_alloc(ctx, sizeof ref_out[1], &y), DSTACK_OK);
    assert_int_equal((uintptr_t)x % 64, 0);
    memcpy(x, ref_in[1], sizeof ref_in[1]);
    dstack_buffer in, out;
    dstack_request r = one_request(&in, &out, x, y, NULL);
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, &c, 1, 5000000, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c.status, DSTACK_OK);
    assert_true(max_rel_err(y, ref_out[1], TINY_OUT_FLOATS) < 1e-4);
    dstack_host_free(ctx, x);
    dstack_host_free(ctx, y);
    dstack_host_free(ctx, NULL); /* no-op */
    dstack_destroy(ctx);
}

static void test_shutdown_then_everything_refused_and_poll_ends(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    dstack_model *m;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    assert_int_equal(dstack_shutdown(NULL), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(dstack_shutdown(ctx), DSTACK_OK);
    assert_int_equal(dstack_shutdown(ctx), DSTACK_OK); /* idempotent */
    float x[TINY_IN_FLOATS] = {0}, y[TINY_OUT_FLOATS];
    dstack_buffer in, out;
    dstack_request r = one_request(&in, &out, x, y, NULL);
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_SHUTTING_DOWN);
    dstack_model *m2;
    assert_int_equal(register_tiny(ctx, 4, 0, &m2), DSTACK_ERR_SHUTTING_DOWN);
    dstack_completion c;
    size_t n = 5;
    assert_int_equal(dstack_poll(ctx, &c, 1, -1, &n), DSTACK_ERR_SHUTTING_DOWN);
    dstack_destroy(ctx);
}

int main(void)
{
    if (load_tiny_reference(ref_in, ref_out) != 0) {
        fprintf(stderr, "cannot read the reference data under %s\n", test_data_dir());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_and_status_strings),
        cmocka_unit_test(test_create_rejects_bad_options),
        cmocka_unit_test(test_options_from_a_newer_header),
        cmocka_unit_test(test_cuda_without_gpu_is_no_device_and_auto_falls_back),
        cmocka_unit_test(test_register_rejects_bad_descriptions),
        cmocka_unit_test(test_model_info_describes_the_onnx_file),
        cmocka_unit_test(test_outputs_match_onnxruntime),
        cmocka_unit_test(test_submit_rejects_bad_requests),
        cmocka_unit_test(test_poll_and_stats_arguments),
        cmocka_unit_test(test_unregister_then_handle_is_unknown),
        cmocka_unit_test(test_past_deadline_completes_as_missed),
        cmocka_unit_test(test_queue_full_is_distinct_and_drops_nothing),
        cmocka_unit_test(test_host_alloc_buffers_serve_requests),
        cmocka_unit_test(test_shutdown_then_everything_refused_and_poll_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
