#define _DEFAULT_SOURCE /* usleep */
/* api_sched.c - the scheduler, the planner and the sim backend through the
 * public header only: knees and batches after registration, overrides,
 * multi-sample requests, huge poll timeouts, context statistics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "api_common.h"

static dstack_status open_sim(dstack_ctx **ctx, dstack_policy policy)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_SIM;
    o.policy = policy;
    return dstack_create(&o, ctx);
}

static dstack_status register_zoo(dstack_ctx *ctx, const char *name, uint64_t slo_us, uint32_t fixed_sm,
                                  uint32_t fixed_batch, dstack_model **m)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = name;
    d.slo_us = slo_us;
    d.fixed_sm_count = fixed_sm;
    d.fixed_batch = fixed_batch;
    return dstack_register_model(ctx, &d, m);
}

static void test_sim_backend_names_the_device_and_runs_dstack(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_sim(&ctx, DSTACK_POLICY_DSTACK), DSTACK_OK);
    dstack_ctx_info ci;
    dstack_ctx_info_init(&ci);
    assert_int_equal(dstack_ctx_info_get(ctx, &ci), DSTACK_OK);
    assert_int_equal(ci.backend, DSTACK_BACKEND_SIM);
    assert_non_null(strstr(ci.device_name, "sim"));
    assert_int_equal(ci.sm_count, 132);
    assert_int_equal(ci.partition_unit_sms, 8);
    assert_int_equal(ci.partition_units, 15);
    assert_int_equal(ci.policy, DSTACK_POLICY_DSTACK);
    assert_string_equal(ci.policy_name, "dstack");
    assert_null(strstr(ci.note, "temporal"));
    dstack_destroy(ctx);
    /* partitioning NONE: one unit of all 132 SMs */
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_SIM;
    o.partitioning = DSTACK_PARTITION_NONE;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_OK);
    assert_int_equal(dstack_ctx_info_get(ctx, &ci), DSTACK_OK);
    assert_int_equal(ci.partition_units, 1);
    assert_int_equal(ci.partition_unit_sms, 132);
    dstack_destroy(ctx);
}

static void test_registration_on_sim_chooses_knee_batch_and_prediction(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_sim(&ctx, DSTACK_POLICY_DSTACK), DSTACK_OK);
    dstack_model *m;
    assert_int_equal(register_zoo(ctx, "resnet50", 25000, 0, 0, &m), DSTACK_OK);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    print_message("resnet50 on sim: knee %u SMs, batch %u, predicted %llu us\n", info.sm_count, info.batch_size,
                  (unsigned long long)info.predicted_latency_us);
    assert_int_equal(info.sm_count % 8, 0);
    assert_true(info.sm_count >= 8 && info.sm_count < 120); /* a knee, not the whole device */
    assert_true(info.batch_size >= 1 && info.batch_size <= info.max_batch);
    assert_true(info.predicted_latency_us > 0);
    /* 2 L(b) must fit the SLO (the batch ahead plus its own) */
    assert_true(2 * info.predicted_latency_us <= 25000);
    /* overrides win */
    dstack_model *f;
    assert_int_equal(register_zoo(ctx, "resnet50", 25000, 40, 4, &f), DSTACK_OK);
    assert_int_equal(dstack_model_info_get(ctx, f, &info), DSTACK_OK);
    assert_int_equal(info.sm_count, 40);
    assert_int_equal(info.batch_size, 4);
    dstack_destroy(ctx);
}

/* A request of batch_size samples runs as one batch; the
 * simulator (on the real clock through the API) takes about the predicted
 * time. The bound is loose because of thread wake-up latency on a loaded
 * machine; the exact check is in virtual time (test_plan). */
static void test_sim_meets_its_prediction_through_the_api(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    /* static_spatial runs the model on exactly its knee (dstack would give a
     * lone model the whole free device, faster than predicted for the knee) */
    assert_int_equal(open_sim(&ctx, DSTACK_POLICY_STATIC_SPATIAL), DSTACK_OK);
    dstack_model *m;
    assert_int_equal(register_zoo(ctx, "vgg19", 100000, 0, 8, &m), DSTACK_OK);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    size_t in_f = info.inputs[0].bytes / 4, out_f = info.outputs[0].bytes / 4;
    float *in = calloc(in_f, 4), *out = malloc(8 * out_f * 4);
    for (size_t i = 0; i < 8 * out_f; i++)
        out[i] = 1.0f;
    dstack_buffer bi = {in, info.inputs[0].bytes}, bo = {out, 8 * info.outputs[0].bytes};
    dstack_buffer bin8 = {NULL, 8 * info.inputs[0].bytes};
    float *in8 = calloc(8 * in_f, 4);
    bin8.data = in8;
    dstack_request r = io_request(&bin8, &bo);
    r.n_samples = 8; /* one request of 8 samples: one batch */
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, &c, 1, 10 * 1000000LL, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c.status, DSTACK_OK);
    assert_int_equal(c.batch_size, 8);
    double ran_us = (double)(c.end_ns - c.start_ns) / 1e3;
    print_message("vgg19 batch 8 on %u SMs: predicted %llu us, ran %.0f us\n", info.sm_count,
                  (unsigned long long)info.predicted_latency_us, ran_us);
    assert_true(ran_us >= 0.9 * (double)info.predicted_latency_us);
    assert_true(ran_us <= 1.5 * (double)info.predicted_latency_us + 5000);
    for (size_t i = 0; i < 8 * out_f; i++)
        assert_true(out[i] == 0.0f); /* the sim writes zeros */
    (void)bi;
    free(in);
    free(in8);
    free(out);
    dstack_destroy(ctx);
}

static void test_context_stats_show_what_the_scheduler_does(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_sim(&ctx, DSTACK_POLICY_DSTACK), DSTACK_OK);
    dstack_model *a, *b;
    assert_int_equal(register_zoo(ctx, "mobilenet_v2", 50000, 0, 4, &a), DSTACK_OK);
    assert_int_equal(register_zoo(ctx, "alexnet", 50000, 0, 4, &b), DSTACK_OK);
    dstack_model_info ia, ib;
    dstack_model_info_init(&ia);
    dstack_model_info_init(&ib);
    dstack_model_info_get(ctx, a, &ia);
    dstack_model_info_get(ctx, b, &ib);
    float *in = calloc(ia.inputs[0].bytes / 4 * 4, 4), *out = calloc(4 * 1000, 4);
    dstack_buffer bi = {in, 4 * ia.inputs[0].bytes}, bo = {out, 4 * ia.outputs[0].bytes};
    dstack_request r = io_request(&bi, &bo);
    r.n_samples = 4;
    dstack_ticket t;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(dstack_submit(ctx, a, &r, &t), DSTACK_OK);
        assert_int_equal(dstack_submit(ctx, b, &r, &t), DSTACK_OK);
        dstack_completion c[2];
        size_t got = 0, n;
        while (got < 2) {
            assert_int_equal(dstack_poll(ctx, c, 2, 5 * 1000000LL, &n), DSTACK_OK);
            assert_true(n > 0);
            got += n;
        }
    }
    dstack_ctx_stats cs;
    dstack_ctx_stats_init(&cs);
    assert_int_equal(dstack_ctx_stats_get(ctx, &cs), DSTACK_OK);
    assert_int_equal(cs.batches, 6);
    assert_int_equal(cs.samples, 24);
    assert_true(cs.gpu_utilization > 0 && cs.gpu_utilization <= 1);
    assert_int_equal(cs.units_total, 15);
    assert_int_equal(cs.batches_running, 0);
    assert_true(cs.cycle_us > 0);
    assert_string_equal(cs.policy_name, "dstack");
    dstack_model_stats s;
    dstack_model_stats_init(&s);
    assert_int_equal(dstack_stats(ctx, a, &s), DSTACK_OK);
    assert_int_equal(s.batch_size, 4);
    assert_int_equal(s.sm_count, ia.sm_count);
    assert_true(s.gpu_share > 0 && s.gpu_share < 1);
    assert_true(s.arrival_rps == 0); /* 12 samples: not known yet (dstack.h); measured in the next test */
    assert_int_equal(dstack_ctx_stats_get(ctx, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    cs.struct_size = 3;
    assert_int_equal(dstack_ctx_stats_get(ctx, &cs), DSTACK_ERR_INVALID_ARGUMENT);
    free(in);
    free(out);
    dstack_destroy(ctx);
}

/* Under dstack the planner sizes every model's share together: after the
 * four-CNN mix has run at 200 req/s each for a while, the planned shares
 * fit the device's 15 units. Planned alone at that rate they
 * add up to 21 units (tests/test_plan.c), and the policy time-shared. */
static void test_planner_fits_the_shares_of_the_mix_to_the_device(void **state)
{
    (void)state;
    static const char *const names[] = {"resnet50", "mobilenet_v2", "vgg19", "alexnet"};
    enum { N = 4, ROUNDS = 160, PERIOD_US = 5000 };
    dstack_ctx *ctx;
    assert_int_equal(open_sim(&ctx, DSTACK_POLICY_DSTACK), DSTACK_OK);
    dstack_model *m[N];
    dstack_model_info info[N];
    float *in[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(register_zoo(ctx, names[i], 25000, 0, 0, &m[i]), DSTACK_OK);
        dstack_model_info_init(&info[i]);
        assert_int_equal(dstack_model_info_get(ctx, m[i], &info[i]), DSTACK_OK);
        in[i] = calloc(info[i].inputs[0].bytes / 4, 4);
        assert_non_null(in[i]);
    }
    dstack_ctx_info ci;
    dstack_ctx_info_init(&ci);
    assert_int_equal(dstack_ctx_info_get(ctx, &ci), DSTACK_OK);
    uint32_t device_sms = ci.partition_units * ci.partition_unit_sms, registered = 0;
    for (int i = 0; i < N; i++)
        registered += info[i].sm_count;
    /* registration plans each model alone for a full queue: they overlap */
    print_message("registered shares add up to %u SMs of %u\n", registered, device_sms);
    assert_true(registered > device_sms);
    size_t out_bytes = info[0].outputs[0].bytes;
    float *out = calloc((size_t)N * ROUNDS, out_bytes);
    assert_non_null(out);
    size_t done = 0, n;
    dstack_completion c[64];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int k = 0; k < ROUNDS; k++) {
        for (int i = 0; i < N; i++) {
            dstack_buffer bi = {in[i], info[i].inputs[0].bytes};
            dstack_buffer bo = {(char *)out + ((size_t)k * N + i) * out_bytes, out_bytes};
            dstack_request r = io_request(&bi, &bo);
            dstack_ticket t;
            assert_int_equal(dstack_submit(ctx, m[i], &r, &t), DSTACK_OK);
        }
        assert_int_equal(dstack_poll(ctx, c, 64, 0, &n), DSTACK_OK);
        done += n;
        usleep(PERIOD_US);
    }
    /* the rate as sent (a loaded machine sends slower than 200/s) and as
     * measured, read before the drain lets it decay */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sent = ROUNDS / ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    double measured[N];
    for (int i = 0; i < N; i++) {
        dstack_model_stats s;
        dstack_model_stats_init(&s);
        assert_int_equal(dstack_stats(ctx, m[i], &s), DSTACK_OK);
        measured[i] = s.arrival_rps;
        assert_true(measured[i] > 0.5 * sent && measured[i] < 2 * sent);
    }
    while (done < (size_t)N * ROUNDS) {
        assert_int_equal(dstack_poll(ctx, c, 64, 5 * 1000000LL, &n), DSTACK_OK);
        assert_true(n > 0);
        done += n;
    }
    uint32_t sms = 0;
    for (int i = 0; i < N; i++) {
        /* the share is planned from the rate: its batch keeps up with it
         * (an idle or registration plan on these shares would not) */
        assert_int_equal(dstack_model_info_get(ctx, m[i], &info[i]), DSTACK_OK);
        double keeps = info[i].predicted_latency_us ? info[i].batch_size * 1e6 / info[i].predicted_latency_us : 0;
        print_message("%s: sent %.0f req/s, measured %.0f, share %u SMs, batch %u in %.2f ms: %.0f req/s\n",
                      names[i], sent, measured[i], info[i].sm_count, info[i].batch_size,
                      info[i].predicted_latency_us / 1e3, keeps);
        assert_true(keeps >= 0.8 * measured[i]);
        sms += info[i].sm_count;
        free(in[i]);
    }
    print_message("planned shares add up to %u SMs of %u (%u units of %u SMs)\n", sms, device_sms, ci.partition_units,
                  ci.partition_unit_sms);
    assert_true(sms <= device_sms);
    /* every request answered: run, or refused as late (wall-clock time on
     * a loaded machine may make some late; the count is what must hold) */
    for (int i = 0; i < N; i++) {
        dstack_model_stats s;
        dstack_model_stats_init(&s);
        assert_int_equal(dstack_stats(ctx, m[i], &s), DSTACK_OK);
        print_message("%s: %llu ok, %llu late, SLO attainment %.1f%%\n", names[i],
                      (unsigned long long)s.completed_ok, (unsigned long long)s.deadline_missed,
                      100 * s.slo_attainment);
        assert_int_equal(s.completed_ok + s.deadline_missed, ROUNDS);
    }
    free(out);
    dstack_destroy(ctx);
}

/* A model's info says the share it runs on: temporal and streams run every
 * batch on the whole device (132 SMs), and static_spatial on its home
 * partition, the knees scaled down to fit (found by a new user: both
 * reported the knee, and static_spatial planned batches for it). */
static uint32_t info_sms(dstack_ctx *ctx, dstack_model *m)
{
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    return info.sm_count;
}

static void test_info_reports_the_share_the_policy_runs(void **state)
{
    (void)state;
    static const dstack_policy whole[] = {DSTACK_POLICY_TEMPORAL, DSTACK_POLICY_STREAMS};
    for (int p = 0; p < 2; p++) {
        dstack_ctx *ctx;
        dstack_model *m;
        assert_int_equal(open_sim(&ctx, whole[p]), DSTACK_OK);
        assert_int_equal(register_zoo(ctx, "resnet50", 25000, 0, 0, &m), DSTACK_OK);
        assert_int_equal(info_sms(ctx, m), 132);
        dstack_destroy(ctx);
    }
    /* six models planned alone ask for more than 15 units: their homes
     * are smaller than their knees, and add up to at most the device */
    static const char *const names[] = {"resnet50", "vgg19", "mobilenet_v2", "alexnet", "resnet34", "googlenet"};
    dstack_ctx *ctx;
    dstack_model *m[6];
    assert_int_equal(open_sim(&ctx, DSTACK_POLICY_STATIC_SPATIAL), DSTACK_OK);
    uint32_t knee_sum = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(register_zoo(ctx, names[i], 30000, 0, 0, &m[i]), DSTACK_OK);
        knee_sum += info_sms(ctx, m[i]);
    }
    assert_true(knee_sum > 132); /* the knees alone do not fit */
    uint32_t home_sum = 0;
    for (int tries = 0; tries < 50; tries++) { /* the planner runs every 100 ms */
        usleep(50000);
        home_sum = 0;
        for (int i = 0; i < 6; i++)
            home_sum += info_sms(ctx, m[i]);
        if (home_sum <= 132)
            break;
    }
    print_message("static_spatial: knees %u SMs, homes %u SMs\n", knee_sum, home_sum);
    assert_true(home_sum <= 132 && home_sum >= 6 * 8);
    dstack_destroy(ctx);
}

static void test_cpu_has_no_knee(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    dstack_model *m;
    assert_int_equal(register_tiny(ctx, 8, 0, &m), DSTACK_OK);
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(ctx, m, &info), DSTACK_OK);
    assert_int_equal(info.sm_count, 0); /* as documented: not applicable on cpu */
    assert_int_equal(info.batch_size, 8);
    /* with an SLO the batch is sized from one timed run */
    dstack_model *s;
    assert_int_equal(register_tiny(ctx, 8, 1000000, &s), DSTACK_OK);
    assert_int_equal(dstack_model_info_get(ctx, s, &info), DSTACK_OK);
    assert_int_equal(info.sm_count, 0);
    assert_true(info.predicted_latency_us > 0);
    assert_true(info.batch_size >= 1 && info.batch_size <= 8);
    dstack_destroy(ctx);
}

/* One request of 4 samples gives the same outputs as ONNX Runtime on the
 * 4 samples, with one completion. */
static void test_multi_sample_request_matches_the_reference(void **state)
{
    (void)state;
    static float in[TINY_SAMPLES][TINY_IN_FLOATS], ref[TINY_SAMPLES][TINY_OUT_FLOATS], out[TINY_SAMPLES][TINY_OUT_FLOATS];
    assert_int_equal(load_tiny_reference(in, ref), 0);
    dstack_ctx *ctx;
    assert_int_equal(open_cpu(&ctx, 8), DSTACK_OK);
    dstack_model *m;
    assert_int_equal(register_tiny(ctx, 4, 0, &m), DSTACK_OK);
    dstack_buffer bi = {in, sizeof in}, bo = {out, sizeof out};
    dstack_request r = io_request(&bi, &bo);
    r.n_samples = TINY_SAMPLES;
    dstack_ticket t;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, &c, 1, 10 * 1000000LL, &n), DSTACK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(c.status, DSTACK_OK);
    assert_int_equal(c.ticket, t);
    assert_int_equal(c.batch_size, TINY_SAMPLES);
    assert_true(max_rel_err(&out[0][0], &ref[0][0], TINY_SAMPLES * TINY_OUT_FLOATS) < 1e-4);
    /* the buffers must hold n_samples samples; more than max_batch is refused */
    bi.bytes = sizeof in[0];
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_SIZE_MISMATCH);
    r.n_samples = 5;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_INVALID_ARGUMENT);
    /* capacity counts samples: 8, so two 4-sample requests fit, a third not */
    bi.bytes = sizeof in;
    r.n_samples = TINY_SAMPLES;
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_OK);
    assert_int_equal(dstack_submit(ctx, m, &r, &t), DSTACK_ERR_QUEUE_FULL);
    dstack_destroy(ctx);
}

typedef struct later {
    dstack_ctx *ctx;
    dstack_model *m;
    float *in, *out;
    size_t in_bytes, out_bytes;
} later;

static void *submit_later(void *p)
{
    later *l = p;
    usleep(100000);
    dstack_buffer bi = {l->in, l->in_bytes}, bo = {l->out, l->out_bytes};
    dstack_request r = io_request(&bi, &bo);
    dstack_ticket t;
    dstack_submit(l->ctx, l->m, &r, &t);
    return NULL;
}

/* "Wait forever" with INT64_MAX blocks until a completion arrives; it
 * used to overflow and return at once with nothing. */
static void test_poll_with_the_largest_timeout_waits(void **state)
{
    (void)state;
    dstack_ctx *ctx;
    assert_int_equal(open_cpu(&ctx, 0), DSTACK_OK);
    later l = {ctx, NULL, calloc(TINY_IN_FLOATS, 4), calloc(TINY_OUT_FLOATS, 4), TINY_IN_FLOATS * 4,
               TINY_OUT_FLOATS * 4};
    assert_int_equal(register_tiny(ctx, 4, 0, &l.m), DSTACK_OK);
    pthread_t th;
    pthread_create(&th, NULL, submit_later, &l);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(ctx, &c, 1, INT64_MAX, &n), DSTACK_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_int_equal(n, 1);
    double waited = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    assert_true(waited >= 0.08);
    pthread_join(th, NULL);
    /* also the largest values below it */
    assert_int_equal(dstack_poll(ctx, &c, 1, 0, &n), DSTACK_OK);
    assert_int_equal(n, 0);
    free(l.in);
    free(l.out);
    dstack_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_backend_names_the_device_and_runs_dstack),
        cmocka_unit_test(test_registration_on_sim_chooses_knee_batch_and_prediction),
        cmocka_unit_test(test_sim_meets_its_prediction_through_the_api),
        cmocka_unit_test(test_context_stats_show_what_the_scheduler_does),
        cmocka_unit_test(test_planner_fits_the_shares_of_the_mix_to_the_device),
        cmocka_unit_test(test_info_reports_the_share_the_policy_runs),
        cmocka_unit_test(test_cpu_has_no_knee),
        cmocka_unit_test(test_multi_sample_request_matches_the_reference),
        cmocka_unit_test(test_poll_with_the_largest_timeout_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
