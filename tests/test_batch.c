/* test_batch.c - the SLO-bounded batch optimizer (src/batch/batch.h) and the
 * arrival-rate tracker (src/util/rate.h), in virtual time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdbool.h>

#include "batch/batch.h"
#include "batch/latency.h"
#include "util/rate.h"

#define MAX_BATCH 32

/* L(b) = 2 ms + 0.5 ms b: throughput b / L(b) rises with b, so the optimizer
 * takes the largest feasible b. With a 25 ms SLO, W(b) = 4000 + 1000 b +
 * (b - 1) 1e6 / lambda us, hence b = 2 at 100/s, 11 at 1000/s, 19 at
 * 10000/s, 21 when saturated. */
static double linear_latency(void *user, uint32_t b)
{
    (void)user;
    return 2000.0 + 500.0 * b;
}

static ds_batch_plan pick(uint64_t slo_us, double rate, uint32_t share)
{
    ds_batch_query q = {MAX_BATCH, slo_us, rate, share};
    ds_batch_plan p;
    assert_int_equal(ds_batch_pick_for_slo(&q, linear_latency, NULL, &p), DSTACK_OK);
    return p;
}

static void test_batch_grows_with_the_arrival_rate(void **unused)
{
    (void)unused;
    assert_int_equal(pick(25000, 100.0, 56).batch, 2);
    assert_int_equal(pick(25000, 1000.0, 56).batch, 11);
    assert_int_equal(pick(25000, 10000.0, 56).batch, 19);
    assert_int_equal(pick(25000, INFINITY, 56).batch, 21);
    uint32_t prev = 0;
    for (double rate = 10.0; rate < 1e6; rate *= 1.3) {
        ds_batch_plan p = pick(25000, rate, 56);
        assert_true(p.batch >= prev);
        assert_true(p.worst_us <= 25000.0);
        prev = p.batch;
    }
}

static void test_batch_plan_reports_its_numbers(void **unused)
{
    (void)unused;
    ds_batch_plan p = pick(25000, 1000.0, 56);
    assert_int_equal(p.batch, 11);
    assert_true(fabs(p.latency_us - 7500.0) < 1e-9);
    assert_true(fabs(p.worst_us - (15000.0 + 10000.0)) < 1e-9);
    assert_true(fabs(p.throughput_per_s - 11.0 / 7500e-6) < 1e-6);
    assert_true(fabs(p.throughput_per_sm - p.throughput_per_s / 56) < 1e-9);
    assert_int_equal(p.flags, 0);
    assert_true(pick(25000, 1000.0, 0).throughput_per_sm == 0.0); /* cpu: no SMs */
}

static void test_batch_tight_slo_gives_batch_1(void **unused)
{
    (void)unused;
    ds_batch_plan p = pick(5000, INFINITY, 56); /* exactly 2 L(1) */
    assert_int_equal(p.batch, 1);
    assert_int_equal(p.flags & DS_BATCH_INFEASIBLE, 0);
}

static void test_batch_infeasible_slo_gives_batch_1_and_says_so(void **unused)
{
    (void)unused;
    ds_batch_plan p = pick(4999, 1000.0, 56);
    assert_int_equal(p.batch, 1);
    assert_true(p.flags & DS_BATCH_INFEASIBLE);
    assert_true(p.worst_us > 4999.0);
}

static void test_batch_unknown_rate_gives_batch_1(void **unused)
{
    (void)unused;
    ds_batch_plan p = pick(25000, 0.0, 56);
    assert_int_equal(p.batch, 1);
    assert_true(p.flags & DS_BATCH_RATE_UNKNOWN);
    assert_true(fabs(p.worst_us - 5000.0) < 1e-9);
    assert_true(pick(25000, NAN, 56).flags & DS_BATCH_RATE_UNKNOWN);
    assert_int_equal(pick(25000, -3.0, 56).batch, 1);
    assert_int_equal(pick(25000, 0.0, 56).flags & DS_BATCH_OVERLOADED, 0);
}

static void test_batch_no_slo_takes_the_best_throughput(void **unused)
{
    (void)unused;
    ds_batch_plan p = pick(0, 1000.0, 56);
    assert_int_equal(p.batch, MAX_BATCH);
    assert_true(p.flags & DS_BATCH_NO_SLO);
}

static void test_batch_overload_is_flagged(void **unused)
{
    (void)unused;
    /* 19 per 11.5 ms is 1652/s: 10000/s cannot be served on this share. */
    ds_batch_plan p = pick(25000, 10000.0, 56);
    assert_true(p.flags & DS_BATCH_OVERLOADED);
    assert_int_equal(pick(25000, 1000.0, 56).flags & DS_BATCH_OVERLOADED, 0);
}

/* Wave quantization: batch 17 needs another wave, so b / L(b) drops past 16
 * and only recovers at 32; with room for 24, 16 is the pick. */
static double wavy_latency(void *user, uint32_t b)
{
    (void)user;
    return b <= 16 ? 4000.0 : 8000.0;
}

static void test_batch_takes_best_throughput_not_largest_feasible(void **unused)
{
    (void)unused;
    ds_batch_query q = {24, 100000, INFINITY, 56};
    ds_batch_plan p;
    assert_int_equal(ds_batch_pick_for_slo(&q, wavy_latency, NULL, &p), DSTACK_OK);
    assert_int_equal(p.batch, 16);
}

static void test_batch_from_an_array(void **unused)
{
    (void)unused;
    double lat[MAX_BATCH];
    for (uint32_t b = 1; b <= MAX_BATCH; b++)
        lat[b - 1] = linear_latency(NULL, b);
    ds_batch_query q = {MAX_BATCH, 25000, 1000.0, 56};
    ds_batch_plan p;
    assert_int_equal(ds_batch_pick_for_slo_array(&q, lat, &p), DSTACK_OK);
    assert_int_equal(p.batch, 11);
    /* L(2) < L(1) from noise: b = 1 alone breaks the SLO, b = 2 does not. */
    double noisy[2] = {2600.0, 2400.0};
    ds_batch_query q2 = {2, 5000, INFINITY, 8};
    assert_int_equal(ds_batch_pick_for_slo_array(&q2, noisy, &p), DSTACK_OK);
    assert_int_equal(p.batch, 2);
    assert_int_equal(p.flags & DS_BATCH_INFEASIBLE, 0);
}

static void test_batch_bad_input_is_refused(void **unused)
{
    (void)unused;
    double lat[3] = {1.0, 0.0, 3.0};
    ds_batch_query q = {3, 1000, 10.0, 8}, zero = {0, 1000, 10.0, 8};
    ds_batch_plan p = {.batch = 99};
    assert_int_equal(ds_batch_pick_for_slo(NULL, linear_latency, NULL, &p), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_batch_pick_for_slo(&q, NULL, NULL, &p), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_batch_pick_for_slo(&q, linear_latency, NULL, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_batch_pick_for_slo(&zero, linear_latency, NULL, &p), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_batch_pick_for_slo_array(&q, NULL, &p), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_batch_pick_for_slo_array(&q, lat, &p), DSTACK_ERR_INVALID_ARGUMENT);
    q.rate_per_s = 0.0; /* a bad table is refused even when only b = 1 is used */
    assert_int_equal(ds_batch_pick_for_slo_array(&q, lat, &p), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(p.batch, 99);
}

/* ---- rate tracker ---- */

#define MS 1000000ull
#define SEC 1000000000ull

/* Arrivals every period_ns from *now for dur_ns; advances *now. */
static void arrive_steady(ds_rate_tracker *t, uint64_t *now, uint64_t period_ns, uint64_t dur_ns)
{
    for (uint64_t end = *now + dur_ns; *now < end;) {
        *now += period_ns;
        ds_rate_arrival(t, *now, 1);
    }
}

/* The library's re-plan rule (ds_replan_due, 1.5x) on the tracker's rate;
 * *planned is the rate of the last plan, 0 before the first. */
static bool due(const ds_rate_tracker *t, const double *planned, uint64_t now)
{
    return ds_replan_due(*planned, ds_rate_per_s(t, now), 1.5);
}

static void test_rate_tracks_a_steady_rate(void **unused)
{
    (void)unused;
    ds_rate_tracker t;
    uint64_t now = 5 * SEC;
    double planned = 0;
    ds_rate_init(&t, now, 0, 8);
    assert_true(ds_rate_per_s(&t, now) == 0.0); /* unknown */
    assert_false(due(&t, &planned, now));
    arrive_steady(&t, &now, 10 * MS, 200 * MS); /* 100/s for 0.2 tau: bias-corrected */
    assert_true(fabs(ds_rate_per_s(&t, now) - 100.0) < 5.0);
    /* the default guard (32 samples) still calls 20 arrivals unknown */
    ds_rate_tracker d;
    uint64_t dn = now;
    ds_rate_init(&d, dn, 0, 0);
    arrive_steady(&d, &dn, 10 * MS, 200 * MS);
    assert_true(ds_rate_per_s(&d, dn) == 0.0);
    arrive_steady(&d, &dn, 10 * MS, 200 * MS);
    assert_true(fabs(ds_rate_per_s(&d, dn) - 100.0) < 5.0);
    arrive_steady(&t, &now, 10 * MS, 5 * SEC);
    assert_true(fabs(ds_rate_per_s(&t, now) - 100.0) < 2.0);
}

static void test_rate_replans_after_a_step_change_only(void **unused)
{
    (void)unused;
    ds_rate_tracker t;
    uint64_t now = 0;
    double planned = 0;
    ds_rate_init(&t, now, SEC, 8);
    arrive_steady(&t, &now, 10 * MS, 50 * MS);
    assert_false(due(&t, &planned, now)); /* 5 arrivals: not known yet */
    arrive_steady(&t, &now, 10 * MS, 50 * MS);
    assert_true(due(&t, &planned, now)); /* known, never planned */
    planned = ds_rate_per_s(&t, now);
    arrive_steady(&t, &now, 10 * MS, 3 * SEC);
    assert_false(due(&t, &planned, now));
    planned = ds_rate_per_s(&t, now);
    /* 1.2x: within the factor, never due. */
    for (int i = 0; i < 40; i++) {
        arrive_steady(&t, &now, 8333333, 100 * MS);
        assert_false(due(&t, &planned, now));
    }
    /* 3x: due within one tau of the step. */
    uint64_t step = now;
    while (!due(&t, &planned, now)) {
        arrive_steady(&t, &now, 3333333, 10 * MS);
        assert_true(now - step < SEC);
    }
    planned = ds_rate_per_s(&t, now);
    assert_false(due(&t, &planned, now));
}

static void test_rate_sees_traffic_stop_without_arrivals(void **unused)
{
    (void)unused;
    ds_rate_tracker t;
    uint64_t now = 0;
    ds_rate_init(&t, now, SEC, 8);
    arrive_steady(&t, &now, MS, 3 * SEC);
    double planned = ds_rate_per_s(&t, now);
    assert_false(due(&t, &planned, now));
    assert_true(due(&t, &planned, now + SEC)); /* e^-1: more than 1.5x down */
    assert_true(ds_rate_per_s(&t, now + 60 * SEC) < 1e-6);
    /* and once it is idle (under DS_IDLE_RATE), decaying further re-plans
     * nothing */
    planned = ds_rate_per_s(&t, now + 20 * SEC);
    assert_true(planned < DS_IDLE_RATE);
    assert_false(due(&t, &planned, now + 30 * SEC));
}

static void test_rate_time_going_back_is_now(void **unused)
{
    (void)unused;
    ds_rate_tracker t;
    ds_rate_init(&t, 10 * SEC, SEC, 1);
    ds_rate_arrival(&t, 11 * SEC, 10);
    double r = ds_rate_per_s(&t, 11 * SEC);
    ds_rate_arrival(&t, 10 * SEC, 10); /* earlier than the last update */
    assert_true(ds_rate_per_s(&t, 5 * SEC) > r);
    assert_true(isfinite(ds_rate_per_s(&t, 5 * SEC)));
    ds_rate_tracker z;
    ds_rate_init(&z, 0, SEC, 1);
    ds_rate_arrival(&z, 0, 4); /* all at the start instant: too soon to say */
    assert_true(ds_rate_per_s(&z, 0) == 0.0);
    assert_true(ds_rate_per_s(&z, 10 * MS) == 0.0); /* 1% of the window */
    double later = ds_rate_per_s(&z, 100 * MS);
    assert_true(isfinite(later) && later > 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_grows_with_the_arrival_rate),
        cmocka_unit_test(test_batch_plan_reports_its_numbers),
        cmocka_unit_test(test_batch_tight_slo_gives_batch_1),
        cmocka_unit_test(test_batch_infeasible_slo_gives_batch_1_and_says_so),
        cmocka_unit_test(test_batch_unknown_rate_gives_batch_1),
        cmocka_unit_test(test_batch_no_slo_takes_the_best_throughput),
        cmocka_unit_test(test_batch_overload_is_flagged),
        cmocka_unit_test(test_batch_takes_best_throughput_not_largest_feasible),
        cmocka_unit_test(test_batch_from_an_array),
        cmocka_unit_test(test_batch_bad_input_is_refused),
        cmocka_unit_test(test_rate_tracks_a_steady_rate),
        cmocka_unit_test(test_rate_replans_after_a_step_change_only),
        cmocka_unit_test(test_rate_sees_traffic_stop_without_arrivals),
        cmocka_unit_test(test_rate_time_going_back_is_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
