/* api_soak.c - overload and soak through the public API (issue 14, item 9).
 *
 * First the rate the cpu backend serves tiny_cnn is measured. Then 16
 * submitter threads offer ten times that rate for LOAD seconds, polling
 * stops for STOP seconds (submitters go on: QUEUE_FULL must come, since
 * unpolled completions count against the queue), then polling resumes for
 * STOP seconds more, and everything is drained. Checked: every accepted
 * ticket is answered exactly once with its own user pointer, QUEUE_FULL was
 * seen while polling was stopped, and resident memory after warm-up stays
 * flat (sampled from /proc/self/statm).
 *
 * Environment: DSTACK_SOAK_SECONDS (LOAD, default 2; make soak uses 60),
 * DSTACK_SOAK_STOP_SECONDS (default 1; make soak: 10), DSTACK_SOAK_THREADS
 * (default 16). */
#define _DEFAULT_SOURCE /* usleep */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "api_common.h"

#define SLOTS_PER_THREAD 128
#define MAX_THREADS 64
#define RSS_SAMPLES 1024

enum { SLOT_FREE, SLOT_BUSY };

typedef struct slot {
    atomic_int state;
    dstack_ticket ticket;
    atomic_int answers;
    float out[TINY_OUT_FLOATS];
    dstack_buffer ib, ob;
} slot;

typedef struct soak {
    dstack_ctx *ctx;
    dstack_model *model;
    int threads;
    double interval_ns;            /* per submitter, between offers */
    atomic_bool stop_submitting, stop_polling, done_polling;
    atomic_uint_fast64_t offered, accepted, queue_full, queue_full_paused, answered, doubled,
        foreign, slot_waits;
    slot slots[MAX_THREADS][SLOTS_PER_THREAD];
} soak;

static float ref_in[TINY_SAMPLES][TINY_IN_FLOATS];
static float ref_out[TINY_SAMPLES][TINY_OUT_FLOATS];

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double env_d(const char *name, double def)
{
    const char *s = getenv(name);
    return s && atof(s) > 0 ? atof(s) : def;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

typedef struct sub_arg {
    soak *s;
    int thread;
} sub_arg;

static void *submitter(void *p)
{
    sub_arg *a = p;
    soak *s = a->s;
    uint64_t next = mono_ns();
    int cursor = 0;
    while (!atomic_load(&s->stop_submitting)) {
        uint64_t now = mono_ns();
        if (now < next) {
            struct timespec ts = {0, (long)(next - now)};
            nanosleep(&ts, NULL);
        }
        next += (uint64_t)s->interval_ns;
        slot *sl = NULL;
        for (int k = 0; k < SLOTS_PER_THREAD && !sl; k++) {
            slot *c = &s->slots[a->thread][(cursor + k) % SLOTS_PER_THREAD];
            if (atomic_load(&c->state) == SLOT_FREE) {
                sl = c;
                cursor = (cursor + k + 1) % SLOTS_PER_THREAD;
            }
        }
        if (!sl) { /* the client is out of buffers: its limit, not the library's */
            atomic_fetch_add(&s->slot_waits, 1);
            continue;
        }
        int sample = (a->thread + cursor) % TINY_SAMPLES;
        sl->ib = (dstack_buffer){ref_in[sample], sizeof ref_in[0]};
        sl->ob = (dstack_buffer){sl->out, sizeof sl->out};
        dstack_request r = io_request(&sl->ib, &sl->ob);
        r.user_data = sl;
        atomic_store(&sl->state, SLOT_BUSY); /* before submit: the poller may answer at once */
        atomic_fetch_add(&s->offered, 1);
        dstack_ticket t;
        dstack_status st = dstack_submit(s->ctx, s->model, &r, &t);
        if (st == DSTACK_OK) {
            /* The ticket is written after submit returns; the poller reads
             * it only after this store (answers are checked by user_data). */
            sl->ticket = t;
            atomic_fetch_add(&s->accepted, 1);
            continue;
        }
        atomic_store(&sl->state, SLOT_FREE);
        assert_int_equal(st, DSTACK_ERR_QUEUE_FULL);
        atomic_fetch_add(&s->queue_full, 1);
        if (atomic_load(&s->stop_polling))
            atomic_fetch_add(&s->queue_full_paused, 1);
    }
    return NULL;
}

static void *poller(void *p)
{
    soak *s = p;
    dstack_completion c[64];
    while (!atomic_load(&s->done_polling)) {
        if (atomic_load(&s->stop_polling)) {
            usleep(1000);
            continue;
        }
        size_t n = 0;
        assert_int_equal(dstack_poll(s->ctx, c, 64, 10000, &n), DSTACK_OK);
        for (size_t i = 0; i < n; i++) {
            slot *sl = c[i].user_data;
            if (!sl) {
                atomic_fetch_add(&s->foreign, 1);
                continue;
            }
            if (atomic_fetch_add(&sl->answers, 1) != 0 || atomic_load(&sl->state) != SLOT_BUSY)
                atomic_fetch_add(&s->doubled, 1);
            assert_int_equal(c[i].status, DSTACK_OK);
            atomic_store(&sl->answers, 0);
            atomic_store(&sl->state, SLOT_FREE);
            atomic_fetch_add(&s->answered, 1);
        }
    }
    return NULL;
}

/* Requests per second the backend serves when kept busy from one thread. */
static double measure_service_rate(soak *s)
{
    uint64_t t0 = mono_ns(), served = 0;
    dstack_buffer ib = {ref_in[0], sizeof ref_in[0]};
    static float out[64][TINY_OUT_FLOATS];
    while (mono_ns() - t0 < 500000000ull) {
        dstack_buffer ob[64];
        int k = 0;
        for (; k < 64; k++) {
            ob[k] = (dstack_buffer){out[k], sizeof out[k]};
            dstack_request r = io_request(&ib, &ob[k]);
            dstack_ticket t;
            if (dstack_submit(s->ctx, s->model, &r, &t) != DSTACK_OK)
                break;
        }
        dstack_completion c[64];
        for (int got = 0; got < k;) {
            size_t n = 0;
            assert_int_equal(dstack_poll(s->ctx, c, 64, 1000000, &n), DSTACK_OK);
            got += (int)n;
        }
        served += (uint64_t)k;
    }
    return (double)served / ((double)(mono_ns() - t0) / 1e9);
}

static void test_overload_soak_loses_nothing_and_stays_flat(void **state)
{
    (void)state;
    assert_int_equal(load_tiny_reference(ref_in, ref_out), 0);
    double load_s = env_d("DSTACK_SOAK_SECONDS", 2), stop_s = env_d("DSTACK_SOAK_STOP_SECONDS", 1);
    static soak s;
    memset(&s, 0, sizeof s);
    s.threads = (int)env_d("DSTACK_SOAK_THREADS", 16);
    assert_true(s.threads >= 1 && s.threads <= MAX_THREADS);
    assert_int_equal(open_cpu(&s.ctx, 256), DSTACK_OK);
    assert_int_equal(register_tiny(s.ctx, 8, 0, &s.model), DSTACK_OK);
    double served_rps = measure_service_rate(&s);
    dstack_model_stats before;
    dstack_model_stats_init(&before);
    assert_int_equal(dstack_stats(s.ctx, s.model, &before), DSTACK_OK);
    double offered_rps = 10 * served_rps;
    s.interval_ns = 1e9 * s.threads / offered_rps;

    pthread_t subs[MAX_THREADS], pol;
    sub_arg args[MAX_THREADS];
    uint64_t t0 = mono_ns();
    assert_int_equal(pthread_create(&pol, NULL, poller, &s), 0);
    for (int i = 0; i < s.threads; i++) {
        args[i] = (sub_arg){&s, i};
        assert_int_equal(pthread_create(&subs[i], NULL, submitter, &args[i]), 0);
    }
    long rss[RSS_SAMPLES];
    int n_rss = 0;
    double total_s = load_s + 2 * stop_s, warm_s = load_s / 4;
    for (;;) {
        double t = (double)(mono_ns() - t0) / 1e9;
        if (t >= total_s)
            break;
        bool pause = t >= load_s && t < load_s + stop_s;
        atomic_store(&s.stop_polling, pause);
        if (t >= warm_s && n_rss < RSS_SAMPLES)
            rss[n_rss++] = rss_kb();
        usleep(total_s > 10 ? 250000 : 50000);
    }
    atomic_store(&s.stop_polling, false);
    atomic_store(&s.stop_submitting, true);
    for (int i = 0; i < s.threads; i++)
        pthread_join(subs[i], NULL);
    uint64_t deadline = mono_ns() + 30000000000ull;
    while (atomic_load(&s.answered) < atomic_load(&s.accepted) && mono_ns() < deadline)
        usleep(1000);
    atomic_store(&s.done_polling, true);
    pthread_join(pol, NULL);
    double secs = (double)(mono_ns() - t0) / 1e9;

    long rss_warm = n_rss ? rss[0] : 0, rss_max = 0, rss_end = n_rss ? rss[n_rss - 1] : 0;
    for (int i = 0; i < n_rss; i++)
        rss_max = rss[i] > rss_max ? rss[i] : rss_max;
    uint64_t lost = atomic_load(&s.accepted) - atomic_load(&s.answered);
    print_message("soak: %.0f s load + %.0f s unpolled + %.0f s resumed (%.1f s in all), %d "
                  "submitters offering %.0f/s = 10 x the %.0f/s served; offered %llu, accepted "
                  "%llu, QUEUE_FULL %llu (%llu while unpolled), answered %llu, lost %llu, doubled "
                  "%llu, foreign %llu; RSS after warm-up %ld KB, max %ld KB, end %ld KB\n",
                  load_s, stop_s, stop_s, secs, s.threads, offered_rps, served_rps,
                  (unsigned long long)s.offered, (unsigned long long)s.accepted,
                  (unsigned long long)s.queue_full, (unsigned long long)s.queue_full_paused,
                  (unsigned long long)s.answered, (unsigned long long)lost,
                  (unsigned long long)s.doubled, (unsigned long long)s.foreign, rss_warm, rss_max,
                  rss_end);
    assert_int_equal(lost, 0);
    assert_int_equal(atomic_load(&s.doubled), 0);
    assert_int_equal(atomic_load(&s.foreign), 0);
    assert_true(atomic_load(&s.queue_full_paused) > 0);
    assert_true(atomic_load(&s.accepted) > 0);
    /* Flat: after warm-up, resident memory may not grow by more than 16 MB. */
    assert_true(rss_max - rss_warm < 16 * 1024);

    dstack_model_stats st;
    dstack_model_stats_init(&st);
    assert_int_equal(dstack_stats(s.ctx, s.model, &st), DSTACK_OK);
    assert_int_equal(st.completed_ok - before.completed_ok, atomic_load(&s.accepted));
    assert_int_equal(st.rejected_queue_full - before.rejected_queue_full, atomic_load(&s.queue_full));
    assert_int_equal(dstack_shutdown(s.ctx), DSTACK_OK);
    dstack_completion c;
    size_t n = 0;
    assert_int_equal(dstack_poll(s.ctx, &c, 1, 0, &n), DSTACK_ERR_SHUTTING_DOWN);
    dstack_destroy(s.ctx);
}

int main(void)
{
    (void)max_rel_err;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overload_soak_loses_nothing_and_stays_flat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
