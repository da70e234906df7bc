/* test_sched.c - the request path against a fake executor.
 *
 * The fake backend runs each batch on a thread of its own after a set delay
 * and writes out[i] = 2 * in[i] + batch_index_marker, so a test can see that
 * every request got its own answer, in a batch, exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sched/policy.h"
#include "sched/sched.h"
#include "util/hist.h"

/* ---- a fake executor ---- */

typedef struct fake_exec {
    ds_executor base;
    useconds_t delay_us;
    dstack_status run_status;  /* returned by run (refusal) */
    dstack_status done_status; /* reported through done */
    pthread_mutex_t lock;
    int running, max_running;
    uint32_t max_batch_seen;
    int runs;
} fake_exec;

typedef struct fake_job {
    fake_exec *fx;
    ds_exec_batch b;
    const void **in;
    void **out;
    ds_exec_done_fn done;
    void *arg;
} fake_job;

static void *fake_job_main(void *p)
{
    fake_job *j = p;
    if (j->fx->delay_us)
        usleep(j->fx->delay_us);
    for (uint32_t i = 0; i < j->b.batch; i++) {
        const float *in = j->in[i];
        float *out = j->out[i];
        out[0] = 2.0f * in[0];
        out[1] = (float)j->b.batch;
    }
    pthread_mutex_lock(&j->fx->lock);
    j->fx->running--;
    pthread_mutex_unlock(&j->fx->lock);
    ds_exec_done_fn done = j->done;
    void *arg = j->arg;
    dstack_status st = j->fx->done_status;
    free(j->in);
    free(j->out);
    free(j);
    done(arg, st);
    return NULL;
}

static dstack_status fake_run(ds_executor *ex, ds_exec_plan *plan, const ds_exec_batch *b,
                              const ds_partition *part, ds_exec_done_fn done, void *arg)
{
    (void)plan;
    (void)part;
    fake_exec *fx = (fake_exec *)ex;
    if (fx->run_status != DSTACK_OK)
        return fx->run_status;
    fake_job *j = calloc(1, sizeof *j);
    j->fx = fx;
    j->b = *b;
    j->in = malloc(b->batch * sizeof *j->in);
    j->out = malloc(b->batch * sizeof *j->out);
    memcpy(j->in, b->inputs, b->batch * sizeof *j->in);
    memcpy(j->out, b->outputs, b->batch * sizeof *j->out);
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&fx->lock);
    fx->runs++;
    fx->running++;
    if (fx->running > fx->max_running)
        fx->max_running = fx->running;
    if (b->batch > fx->max_batch_seen)
        fx->max_batch_seen = b->batch;
    pthread_mutex_unlock(&fx->lock);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_create(&t, &at, fake_job_main, j);
    pthread_attr_destroy(&at);
    return DSTACK_OK;
}

static dstack_status fake_partition(ds_executor *ex, uint32_t first, uint32_t count, ds_partition *out)
{
    (void)ex;
    out->first_unit = first;
    out->unit_count = count;
    out->sm_count = count;
    out->handle = NULL;
    return DSTACK_OK;
}

static const ds_executor_ops fake_ops = {"fake", NULL, NULL, fake_run, fake_partition, NULL};

static fake_exec *fake_new(useconds_t delay_us)
{
    fake_exec *fx = calloc(1, sizeof *fx);
    fx->base.ops = &fake_ops;
    fx->base.device.n_units = 4;
    fx->base.device.unit_sms = 1;
    fx->base.device.sm_count = 4;
    fx->delay_us = delay_us;
    pthread_mutex_init(&fx->lock, NULL);
    return fx;
}

static void fake_free(fake_exec *fx)
{
    /* detached jobs are all done once the scheduler has shut down */
    pthread_mutex_destroy(&fx->lock);
    free(fx);
}

/* ---- helpers ---- */

typedef struct rig {
    fake_exec *fx;
    ds_sched *s;
    dstack_model *m;
} rig;

static void rig_open(rig *r, useconds_t delay_us, uint32_t capacity, uint32_t batch, uint64_t slo_ns)
{
    r->fx = fake_new(delay_us);
    ds_sched_config cfg = {&ds_clock_monotonic, &r->fx->base, ds_policy_find(DSTACK_POLICY_TEMPORAL), capacity};
    assert_int_equal(ds_sched_create(&cfg, &r->s), DSTACK_OK);
    ds_sched_model_config mc = {0};
    mc.n_inputs = 1;
    mc.n_outputs = 1;
    mc.input_bytes[0] = sizeof(float);
    mc.output_bytes[0] = 2 * sizeof(float);
    mc.batch_size = batch;
    mc.max_batch = batch;
    mc.unit_count = 4;
    mc.slo_ns = slo_ns;
    mc.owner = r;
    assert_int_equal(ds_sched_add_model(r->s, &mc, &r->m), DSTACK_OK);
}

static void rig_close(rig *r)
{
    ds_sched_destroy(r->s);
    fake_free(r->fx);
}

static dstack_status submit_one(rig *r, float *in, float *out, void *user, dstack_ticket *t)
{
    dstack_buffer bi = {in, sizeof(float)};
    dstack_buffer bo = {out, 2 * sizeof(float)};
    dstack_request req = {sizeof req, &bi, 1, &bo, 1, user, 0};
    return ds_sched_submit(r->s, r->m, &req, t);
}

static size_t drain(rig *r, dstack_completion *c, size_t want, int64_t timeout_us)
{
    size_t got = 0;
    while (got < want) {
        size_t n = 0;
        dstack_status st = ds_sched_poll(r->s, c + got, want - got, timeout_us, &n);
        if (st != DSTACK_OK || n == 0)
            break;
        got += n;
    }
    return got;
}

/* ---- tests ---- */

static void test_every_request_answered_once_with_its_own_output(void **state)
{
    (void)state;
    enum { N = 200 };
    rig r;
    rig_open(&r, 200, 1024, 8, 0);
    static float in[N], out[N][2];
    dstack_ticket tickets[N];
    for (int i = 0; i < N; i++) {
        in[i] = (float)i;
        out[i][0] = out[i][1] = -1;
        assert_int_equal(submit_one(&r, &in[i], out[i], &in[i], &tickets[i]), DSTACK_OK);
    }
    static dstack_completion c[N];
    assert_int_equal(drain(&r, c, N, 2000000), N);
    char seen[N] = {0};
    for (int k = 0; k < N; k++) {
        assert_int_equal(c[k].status, DSTACK_OK);
        int i = (int)((float *)c[k].user_data - in);
        assert_true(i >= 0 && i < N);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        assert_int_equal(c[k].ticket, tickets[i]);
        assert_true(c[k].batch_size >= 1 && c[k].batch_size <= 8);
        assert_true(c[k].submit_ns <= c[k].start_ns && c[k].start_ns <= c[k].end_ns);
        assert_float_equal(out[i][0], 2.0f * (float)i, 0);
        assert_float_equal(out[i][1], (float)c[k].batch_size, 0);
    }
    /* temporal: never two batches at once, never above the batch size */
    assert_int_equal(r.fx->max_running, 1);
    assert_true(r.fx->max_batch_seen <= 8);
    assert_true(r.fx->max_batch_seen > 1); /* requests queued behind a batch were batched */
    dstack_model_stats st = {sizeof st};
    assert_int_equal(ds_sched_stats(r.s, r.m, &st), DSTACK_OK);
    assert_int_equal(st.submitted, N);
    assert_int_equal(st.completed_ok, N);
    assert_true(st.mean_batch > 1.0);
    rig_close(&r);
}

static void test_queue_full_counts_unpolled_completions(void **state)
{
    (void)state;
    rig r;
    rig_open(&r, 0, 4, 4, 0);
    float in[5] = {1, 2, 3, 4, 5}, out[5][2];
    dstack_ticket t;
    for (int i = 0; i < 4; i++)
        assert_int_equal(submit_one(&r, &in[i], out[i], NULL, &t), DSTACK_OK);
    /* four outstanding, none polled: the fifth is refused, nothing dropped */
    assert_int_equal(submit_one(&r, &in[4], out[4], NULL, &t), DSTACK_ERR_QUEUE_FULL);
    dstack_completion c[4];
    assert_int_equal(drain(&r, c, 4, 2000000), 4);
    assert_int_equal(submit_one(&r, &in[4], out[4], NULL, &t), DSTACK_OK);
    assert_int_equal(drain(&r, c, 1, 2000000), 1);
    dstack_model_stats st = {sizeof st};
    ds_sched_stats(r.s, r.m, &st);
    assert_int_equal(st.rejected_queue_full, 1);
    assert_int_equal(st.completed_ok, 5);
    rig_close(&r);
}

static void test_expired_requests_complete_as_deadline_missed_without_running(void **state)
{
    (void)state;
    rig r;
    /* each batch takes 50 ms, the SLO is 10 ms: whatever queues behind the
     * first batch expires before its own batch would start */
    rig_open(&r, 50000, 64, 1, 10 * 1000000ull);
    float in[6] = {0}, out[6][2];
    dstack_ticket t;
    for (int i = 0; i < 6; i++) {
        out[i][0] = -7;
        assert_int_equal(submit_one(&r, &in[i], out[i], &out[i], &t), DSTACK_OK);
    }
    dstack_completion c[6];
    assert_int_equal(drain(&r, c, 6, 3000000), 6);
    int ok = 0, missed = 0;
    for (int k = 0; k < 6; k++) {
        float *o = c[k].user_data;
        if (c[k].status == DSTACK_OK) {
            ok++;
        } else {
            assert_int_equal(c[k].status, DSTACK_ERR_DEADLINE_MISSED);
            assert_int_equal(c[k].batch_size, 0);
            assert_float_equal(o[0], -7.0f, 0); /* never ran: output untouched */
            missed++;
        }
    }
    assert_true(ok >= 1);
    assert_true(missed >= 4);
    dstack_model_stats st = {sizeof st};
    ds_sched_stats(r.s, r.m, &st);
    assert_int_equal(st.deadline_missed, (uint64_t)missed);
    assert_true(st.slo_attainment < 0.5);
    rig_close(&r);
}

static void test_shutdown_cancels_queued_and_finishes_running(void **state)
{
    (void)state;
    rig r;
    rig_open(&r, 30000, 128, 2, 0);
    float in[50] = {0}, out[50][2];
    dstack_ticket t;
    for (int i = 0; i < 50; i++)
        assert_int_equal(submit_one(&r, &in[i], out[i], NULL, &t), DSTACK_OK);
    usleep(5000);
    ds_sched_shutdown(&*r.s);
    assert_int_equal(submit_one(&r, &in[0], out[0], NULL, &t), DSTACK_ERR_SHUTTING_DOWN);
    dstack_completion c[60];
    size_t got = drain(&r, c, 60, 100000);
    assert_int_equal(got, 50);
    int ok = 0, cancelled = 0;
    for (size_t k = 0; k < got; k++) {
        if (c[k].status == DSTACK_OK)
            ok++;
        else if (c[k].status == DSTACK_ERR_CANCELLED)
            cancelled++;
    }
    assert_int_equal(ok + cancelled, 50);
    assert_true(cancelled > 0);
    size_t n = 99;
    assert_int_equal(ds_sched_poll(r.s, c, 1, 0, &n), DSTACK_ERR_SHUTTING_DOWN);
    rig_close(&r);
}

static void test_executor_refusal_and_failure_reach_the_caller(void **state)
{
    (void)state;
    rig r;
    rig_open(&r, 0, 16, 4, 0);
    float in = 1, out[2];
    dstack_ticket t;
    r.fx->run_status = DSTACK_ERR_DEVICE;
    assert_int_equal(submit_one(&r, &in, out, NULL, &t), DSTACK_OK);
    dstack_completion c;
    assert_int_equal(drain(&r, &c, 1, 2000000), 1);
    assert_int_equal(c.status, DSTACK_ERR_DEVICE);
    r.fx->run_status = DSTACK_OK;
    r.fx->done_status = DSTACK_ERR_DEVICE;
    assert_int_equal(submit_one(&r, &in, out, NULL, &t), DSTACK_OK);
    assert_int_equal(drain(&r, &c, 1, 2000000), 1);
    assert_int_equal(c.status, DSTACK_ERR_DEVICE);
    dstack_model_stats st = {sizeof st};
    ds_sched_stats(r.s, r.m, &st);
    assert_int_equal(st.failed, 2);
    rig_close(&r);
}

static void test_removed_model_is_refused_and_its_queue_cancelled(void **state)
{
    (void)state;
    rig r;
    rig_open(&r, 20000, 64, 1, 0);
    float in[10] = {0}, out[10][2];
    dstack_ticket t;
    for (int i = 0; i < 10; i++)
        assert_int_equal(submit_one(&r, &in[i], out[i], NULL, &t), DSTACK_OK);
    void *owner = NULL;
    assert_int_equal(ds_sched_remove_model(r.s, r.m, &owner), DSTACK_OK);
    assert_ptr_equal(owner, &r);
    assert_int_equal(submit_one(&r, &in[0], out[0], NULL, &t), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(ds_sched_remove_model(r.s, r.m, &owner), DSTACK_ERR_NOT_FOUND);
    dstack_completion c[10];
    assert_int_equal(drain(&r, c, 10, 100000), 10);
    int cancelled = 0;
    for (int k = 0; k < 10; k++)
        cancelled += c[k].status == DSTACK_ERR_CANCELLED;
    assert_true(cancelled >= 8);
    rig_close(&r);
}

static void test_wrong_buffers_are_refused_with_size_mismatch(void **state)
{
    (void)state;
    rig r;
    rig_open(&r, 0, 8, 1, 0);
    float in = 0, out[2];
    dstack_buffer bi = {&in, 3};
    dstack_buffer bo = {out, sizeof out};
    dstack_request req = {sizeof req, &bi, 1, &bo, 1, NULL, 0};
    dstack_ticket t;
    assert_int_equal(ds_sched_submit(r.s, r.m, &req, &t), DSTACK_ERR_SIZE_MISMATCH);
    bi.bytes = sizeof in;
    req.n_outputs = 2;
    assert_int_equal(ds_sched_submit(r.s, r.m, &req, &t), DSTACK_ERR_SIZE_MISMATCH);
    req.n_outputs = 1;
    bi.data = NULL;
    assert_int_equal(ds_sched_submit(r.s, r.m, &req, &t), DSTACK_ERR_INVALID_ARGUMENT);
    int not_a_model;
    bi.data = &in;
    assert_int_equal(ds_sched_submit(r.s, (dstack_model *)&not_a_model, &req, &t), DSTACK_ERR_NOT_FOUND);
    rig_close(&r);
}

static void test_temporal_picks_oldest_head_on_the_whole_device(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_TEMPORAL);
    assert_non_null(p);
    ds_sched_model_view mv[3] = {
        {.queued = 5, .queued_samples = 5, .oldest_submit_ns = 300, .batch_size = 4, .unit_count = 2},
        {.queued = 2, .queued_samples = 2, .oldest_submit_ns = 100, .batch_size = 8, .unit_count = 1},
        {.queued = 0, .batch_size = 8},
    };
    ds_sched_view v = {1000, 3, mv, 16, 0, 0};
    ds_sched_decision d;
    uint64_t wake;
    assert_true(p->pick(NULL, &v, &d, &wake));
    assert_int_equal(d.model, 1);
    assert_int_equal(d.batch, 2); /* all it has, below its batch size */
    assert_int_equal(d.first_unit, 0);
    assert_int_equal(d.unit_count, 16);
    mv[1].queued = mv[1].queued_samples = 0;
    assert_true(p->pick(NULL, &v, &d, &wake));
    assert_int_equal(d.model, 0);
    assert_int_equal(d.batch, 4); /* capped at its batch size */
    v.n_running = 1; /* something runs: temporal waits */
    assert_false(p->pick(NULL, &v, &d, &wake));
    assert_int_equal(wake, 0); /* nothing to time: it waits for the batch to end */
}

static void test_hist_quantiles_within_one_32nd(void **state)
{
    (void)state;
    ds_hist *h = calloc(1, sizeof *h);
    for (uint64_t v = 1; v <= 10000; v++)
        ds_hist_record(h, v);
    uint64_t p50 = ds_hist_quantile(h, 0.5), p99 = ds_hist_quantile(h, 0.99);
    assert_true(p50 <= 5000 && p50 >= 5000 - 5000 / 32);
    assert_true(p99 <= 9900 && p99 >= 9900 - 9900 / 32);
    assert_int_equal(h->max, 10000);
    for (uint64_t v = 1; v < (1ull << 40); v = v * 3 + 1)
        assert_true(ds_hist_bucket_floor(ds_hist_bucket(v)) <= v &&
                    v - ds_hist_bucket_floor(ds_hist_bucket(v)) <= v / 32);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_request_answered_once_with_its_own_output),
        cmocka_unit_test(test_queue_full_counts_unpolled_completions),
        cmocka_unit_test(test_expired_requests_complete_as_deadline_missed_without_running),
        cmocka_unit_test(test_shutdown_cancels_queued_and_finishes_running),
        cmocka_unit_test(test_executor_refusal_and_failure_reach_the_caller),
        cmocka_unit_test(test_removed_model_is_refused_and_its_queue_cancelled),
        cmocka_unit_test(test_wrong_buffers_are_refused_with_size_mismatch),
        cmocka_unit_test(test_temporal_picks_oldest_head_on_the_whole_device),
        cmocka_unit_test(test_hist_quantiles_within_one_32nd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
