/* api_concurrency.c - exactly-once under concurrency, through the public API.
 *
 * 4 threads submit 10 000 requests (retrying on QUEUE_FULL), 1 thread polls;
 * every accepted ticket must come back exactly once with the right output.
 * Then the shutdown paths: shutdown with requests in flight answers every
 * ticket (OK or CANCELLED), and destroy with requests in flight returns
 * without touching freed memory (run this file under ASan and TSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "api_common.h"

#define SUBMITTERS 4
#define PER_THREAD 2500
#define TOTAL (SUBMITTERS * PER_THREAD)

static float ref_in[TINY_SAMPLES][TINY_IN_FLOATS];
static float ref_out[TINY_SAMPLES][TINY_OUT_FLOATS];

typedef struct run {
    dstack_ctx *ctx;
    dstack_model *model;
    float (*out)[TINY_OUT_FLOATS];     /* TOTAL outputs */
    dstack_buffer *in_bufs, *out_bufs; /* TOTAL each */
    atomic_int *answered;              /* per request: completions seen */
    atomic_int accepted;
    atomic_int submitters_done;
    atomic_int queue_full_seen;
    int stop_after;                    /* per thread: stop submitting after this many (shutdown tests) */
    atomic_int refused_shutting_down;
    dstack_status poll_end;
    int polled;
} run;

typedef struct submitter_arg {
    run *r;
    int thread;
} submitter_arg;

static void *submitter(void *p)
{
    submitter_arg *a = p;
    run *r = a->r;
    for (int k = 0; k < PER_THREAD && k < r->stop_after; k++) {
        int i = a->thread * PER_THREAD + k;
        r->in_bufs[i] = (dstack_buffer){ref_in[i % TINY_SAMPLES], sizeof ref_in[0]};
        r->out_bufs[i] = (dstack_buffer){r->out[i], sizeof r->out[0]};
        dstack_request req = io_request(&r->in_bufs[i], &r->out_bufs[i]);
        req.user_data = (void *)(intptr_t)i;
        dstack_ticket t;
        dstack_status st;
        while ((st = dstack_submit(r->ctx, r->model, &req, &t)) == DSTACK_ERR_QUEUE_FULL) {
            atomic_fetch_add(&r->queue_full_seen, 1);
            nanosleep(&(struct timespec){0, 20000}, NULL); /* back off, as a client would */
        }
        if (st == DSTACK_ERR_SHUTTING_DOWN) {
            atomic_fetch_add(&r->refused_shutting_down, 1);
            break;
        }
        if (st != DSTACK_OK) {
            fprintf(stderr, "submit %d: %s: %s\n", i, dstack_strerror(st), dstack_last_error());
            abort();
        }
        atomic_fetch_add(&r->accepted, 1);
    }
    atomic_fetch_add(&r->submitters_done, 1);
    return NULL;
}

static void *poller(void *p)
{
    run *r = p;
    dstack_completion c[64];
    for (;;) {
        size_t n = 0;
        dstack_status st = dstack_poll(r->ctx, c, 64, 20000, &n);
        if (st != DSTACK_OK) {
            r->poll_end = st;
            return NULL;
        }
        for (size_t k = 0; k < n; k++) {
            intptr_t i = (intptr_t)c[k].user_data;
            atomic_fetch_add(&r->answered[i], 1);
            if (c[k].status != DSTACK_OK && c[k].status != DSTACK_ERR_CANCELLED) {
                fprintf(stderr, "request %ld: %s\n", (long)i, dstack_strerror(c[k].status));
                abort();
            }
            if (c[k].status == DSTACK_OK &&
                max_rel_err(r->out[i], ref_out[i % TINY_SAMPLES], TINY_OUT_FLOATS) > 1e-4) {
                fprintf(stderr, "request %ld: wrong output\n", (long)i);
                abort();
            }
        }
        r->polled += (int)n;
        if (r->polled == TOTAL)
            return NULL;
    }
}

static run *run_new(uint32_t queue_capacity, int stop_after)
{
    run *r = calloc(1, sizeof *r);
    r->out = calloc(TOTAL, sizeof *r->out);
    r->in_bufs = calloc(TOTAL, sizeof *r->in_bufs);
    r->out_bufs = calloc(TOTAL, sizeof *r->out_bufs);
    r->answered = calloc(TOTAL, sizeof *r->answered);
    r->stop_after = stop_after;
    assert_int_equal(open_cpu(&r->ctx, queue_capacity), DSTACK_OK);
    assert_int_equal(register_tiny(r->ctx, 16, 0, &r->model), DSTACK_OK);
    return r;
}

static void run_free(run *r)
{
    free(r->out);
    free(r->in_bufs);
    free(r->out_bufs);
    free(r->answered);
    free(r);
}

static void start_submitters(run *r, pthread_t *th, submitter_arg *args)
{
    for (int t = 0; t < SUBMITTERS; t++) {
        args[t] = (submitter_arg){r, t};
        pthread_create(&th[t], NULL, submitter, &args[t]);
    }
}

static void test_ten_thousand_requests_four_submitters_one_poller_exactly_once(void **state)
{
    (void)state;
    run *r = run_new(256, PER_THREAD);
    pthread_t th[SUBMITTERS], pt;
    submitter_arg args[SUBMITTERS];
    pthread_create(&pt, NULL, poller, r);
    start_submitters(r, th, args);
    for (int t = 0; t < SUBMITTERS; t++)
        pthread_join(th[t], NULL);
    pthread_join(pt, NULL);
    assert_int_equal(atomic_load(&r->accepted), TOTAL);
    assert_int_equal(r->polled, TOTAL);
    for (int i = 0; i < TOTAL; i++)
        if (atomic_load(&r->answered[i]) != 1)
            fail_msg("request %d answered %d times", i, atomic_load(&r->answered[i]));
    dstack_model_stats s;
    dstack_model_stats_init(&s);
    assert_int_equal(dstack_stats(r->ctx, r->model, &s), DSTACK_OK);
    assert_int_equal(s.completed_ok, TOTAL);
    assert_int_equal(s.submitted, TOTAL);
    printf("  10000 requests: %llu batches, mean batch %.2f, %llu QUEUE_FULL retries, %.0f req/s\n",
           (unsigned long long)s.batches, s.mean_batch, (unsigned long long)s.rejected_queue_full,
           s.throughput_rps);
    dstack_destroy(r->ctx);
    run_free(r);
}

static void test_shutdown_with_requests_in_flight_answers_every_ticket(void **state)
{
    (void)state;
    run *r = run_new(512, PER_THREAD);
    pthread_t th[SUBMITTERS], pt;
    submitter_arg args[SUBMITTERS];
    pthread_create(&pt, NULL, poller, r);
    start_submitters(r, th, args);
    while (atomic_load(&r->accepted) < 1000)
        sched_yield();
    assert_int_equal(dstack_shutdown(r->ctx), DSTACK_OK);
    for (int t = 0; t < SUBMITTERS; t++)
        pthread_join(th[t], NULL);
    pthread_join(pt, NULL); /* ends when poll says SHUTTING_DOWN */
    assert_int_equal(r->poll_end, DSTACK_ERR_SHUTTING_DOWN);
    int accepted = atomic_load(&r->accepted);
    assert_int_equal(r->polled, accepted);
    int answered = 0;
    for (int i = 0; i < TOTAL; i++) {
        int a = atomic_load(&r->answered[i]);
        assert_true(a == 0 || a == 1);
        answered += a;
    }
    assert_int_equal(answered, accepted);
    dstack_destroy(r->ctx);
    run_free(r);
}

static void test_destroy_with_requests_in_flight(void **state)
{
    (void)state;
    run *r = run_new(1024, 250); /* 1000 <= capacity: nobody polls */
    pthread_t th[SUBMITTERS];
    submitter_arg args[SUBMITTERS];
    start_submitters(r, th, args);
    for (int t = 0; t < SUBMITTERS; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(atomic_load(&r->accepted), SUBMITTERS * 250);
    dstack_destroy(r->ctx); /* nobody polled: queued ones are dropped with the context */
    run_free(r);
}

int main(void)
{
    if (load_tiny_reference(ref_in, ref_out) != 0) {
        fprintf(stderr, "cannot read the reference data under %s\n", test_data_dir());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ten_thousand_requests_four_submitters_one_poller_exactly_once),
        cmocka_unit_test(test_shutdown_with_requests_in_flight_answers_every_ticket),
        cmocka_unit_test(test_destroy_with_requests_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
