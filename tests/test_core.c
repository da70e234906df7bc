/* test_core.c - the scheduler core and the discrete-event driver, driven by
 * hand-made event sequences in virtual time.
 *
 * A fake executor runs each batch for base_ns + per_sample_ns x samples of
 * virtual time and records what it was given, so a test can check when
 * batches started, on which units, and that partitions never overlapped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/core.h"
#include "util/error.h"
#include "sched/des.h"
#include "sched/policy.h"

/* ---- a fake executor in virtual time ---- */

#define MAXRUN 64
typedef struct vrun {
    uint64_t start, end;
    uint32_t first, count, batch;
    ds_exec_done_fn done;
    void *arg;
    bool live;
} vrun;

typedef struct vexec {
    ds_executor base;
    const ds_clock *clock;
    uint64_t base_ns, per_sample_ns;
    vrun runs[MAXRUN];
    uint32_t n_live;
    uint32_t n_runs_total;
    uint64_t log_start[4096];
    uint32_t log_first[4096], log_count[4096], log_batch[4096];
    bool overlap_seen;
} vexec;

static dstack_status v_run(ds_executor *ex, ds_exec_plan *plan, const ds_exec_batch *b, const ds_partition *part,
                           ds_exec_done_fn done, void *arg)
{
    vexec *v = (vexec *)ex;
    (void)plan;
    uint64_t now = ds_clock_now_ns(v->clock);
    for (int i = 0; i < MAXRUN; i++) {
        vrun *r = &v->runs[i];
        if (r->live && part->first_unit < r->first + r->count && r->first < part->first_unit + part->unit_count)
            v->overlap_seen = true;
    }
    for (int i = 0; i < MAXRUN; i++) {
        vrun *r = &v->runs[i];
        if (r->live)
            continue;
        *r = (vrun){now, now + v->base_ns + v->per_sample_ns * b->batch, part->first_unit, part->unit_count,
                    b->batch, done, arg, true};
        v->n_live++;
        uint32_t k = v->n_runs_total++ % 4096;
        v->log_start[k] = now;
        v->log_first[k] = part->first_unit;
        v->log_count[k] = part->unit_count;
        v->log_batch[k] = b->batch;
        return DSTACK_OK;
    }
    return DSTACK_ERR_DEVICE;
}

static dstack_status v_part(ds_executor *ex, uint32_t first, uint32_t count, ds_partition *out)
{
    (void)ex;
    *out = (ds_partition){first, count, count, NULL};
    return DSTACK_OK;
}

static const ds_executor_ops v_ops = {"vfake", NULL, NULL, v_run, v_part, NULL, NULL, NULL, NULL};

static void v_set_virtual(ds_executor *ex, const ds_clock *clock) { ((vexec *)ex)->clock = clock; }

static uint64_t v_next(ds_executor *ex)
{
    vexec *v = (vexec *)ex;
    uint64_t t = UINT64_MAX;
    for (int i = 0; i < MAXRUN; i++)
        if (v->runs[i].live && v->runs[i].end < t)
            t = v->runs[i].end;
    return t;
}

static void v_advance(ds_executor *ex, uint64_t t)
{
    vexec *v = (vexec *)ex;
    for (;;) {
        int best = -1;
        for (int i = 0; i < MAXRUN; i++)
            if (v->runs[i].live && v->runs[i].end <= t && (best < 0 || v->runs[i].end < v->runs[best].end))
                best = i;
        if (best < 0)
            return;
        v->runs[best].live = false;
        v->n_live--;
        v->runs[best].done(v->runs[best].arg, DSTACK_OK);
    }
}

static const ds_des_exec_ops v_des_ops = {v_set_virtual, v_next, v_advance};

static vexec *vexec_new(uint32_t n_units, uint64_t base_ns, uint64_t per_sample_ns)
{
    vexec *v = calloc(1, sizeof *v);
    v->base.ops = &v_ops;
    v->base.device.n_units = n_units;
    v->base.device.unit_sms = 8;
    v->base.device.sm_count = 8 * n_units;
    v->base_ns = base_ns;
    v->per_sample_ns = per_sample_ns;
    return v;
}

static ds_sched_model_config model_cfg(uint32_t batch, uint32_t units, uint64_t slo_ns)
{
    ds_sched_model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.n_inputs = 1;
    mc.n_outputs = 1;
    mc.input_bytes[0] = 4;
    mc.output_bytes[0] = 8;
    mc.batch_size = batch;
    mc.max_batch = batch > 8 ? batch : 8;
    mc.unit_count = units;
    mc.slo_ns = slo_ns;
    return mc;
}

typedef struct collected {
    dstack_completion c[8192];
    uint32_t model[8192];
    size_t n;
} collected;

static void collect(void *arg, uint32_t model, const dstack_completion *c, uint32_t samples)
{
    (void)samples;
    collected *k = arg;
    if (k->n < 8192) {
        k->model[k->n] = model;
        k->c[k->n++] = *c;
    }
}

/* ---- a policy that asks for a timer ---- */

static uint64_t timer_at;
static uint64_t pick_times[64];
static int n_picks;

static bool timer_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake)
{
    (void)state;
    if (n_picks < 64)
        pick_times[n_picks++] = v->now_ns;
    *wake = 0;
    if (v->models[0].queued == 0 || v->n_running)
        return false;
    if (v->now_ns < timer_at) {
        *wake = timer_at;
        return false;
    }
    *d = (ds_sched_decision){0, 1, 0, 1};
    return true;
}

static bool never_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake)
{
    (void)state;
    (void)v;
    (void)d;
    *wake = 0;
    return false;
}

static void test_timer_wakes_the_policy_at_exactly_the_time_it_asked(void **state)
{
    (void)state;
    ds_policy_ops pol = {"timer", DSTACK_POLICY_TEMPORAL, false, NULL, NULL, timer_pick};
    vexec *v = vexec_new(4, 1000, 0);
    ds_des_config cfg = {&pol, &v->base, &v_des_ops, 64};
    ds_des *d;
    assert_int_equal(ds_des_create(&cfg, &d), DSTACK_OK);
    ds_sched_model_config mc = model_cfg(1, 1, 0);
    assert_int_equal(ds_des_add_model(d, &mc), DSTACK_OK);
    timer_at = 5000123;
    n_picks = 0;
    ds_des_arrival a = {100, 0, 1};
    static collected k;
    k.n = 0;
    assert_int_equal(ds_des_run(d, &a, 1, 0, collect, &k), DSTACK_OK);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.c[0].status, DSTACK_OK);
    assert_int_equal(k.c[0].start_ns, timer_at); /* not a ns early or late */
    assert_int_equal(k.c[0].end_ns, timer_at + 1000);
    /* asked at the arrival, then exactly at the timer: no polling between */
    assert_true(n_picks >= 2);
    assert_int_equal(pick_times[0], 100);
    assert_int_equal(pick_times[1], timer_at);
    ds_des_destroy(d);
    free(v);
}

static void test_request_expires_at_its_deadline_with_nothing_else_happening(void **state)
{
    (void)state;
    ds_policy_ops pol = {"never", DSTACK_POLICY_TEMPORAL, false, NULL, NULL, never_pick};
    vexec *v = vexec_new(4, 1000, 0);
    ds_des_config cfg = {&pol, &v->base, &v_des_ops, 64};
    ds_des *d;
    assert_int_equal(ds_des_create(&cfg, &d), DSTACK_OK);
    ds_sched_model_config mc = model_cfg(1, 1, 10000000); /* 10 ms SLO */
    assert_int_equal(ds_des_add_model(d, &mc), DSTACK_OK);
    ds_des_arrival a[2] = {{1000, 0, 1}, {2000, 0, 1}};
    static collected k;
    k.n = 0;
    assert_int_equal(ds_des_run(d, a, 2, 0, collect, &k), DSTACK_OK);
    assert_int_equal(k.n, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(k.c[i].status, DSTACK_ERR_DEADLINE_MISSED);
        assert_int_equal(k.c[i].deadline_ns, a[i].t_ns + 10000000);
        assert_int_equal(k.c[i].end_ns, k.c[i].deadline_ns + 1); /* the first ns past it */
        assert_int_equal(k.c[i].batch_size, 0);
    }
    dstack_model_stats st;
    assert_int_equal(ds_des_stats(d, 0, &st), DSTACK_OK);
    assert_int_equal(st.deadline_missed, 2);
    ds_des_destroy(d);
    free(v);
}

/* ---- the core by hand ---- */

typedef struct sink {
    dstack_completion c[64];
    uint32_t samples[64];
    int n;
} sink;

static void sink_emit(void *arg, const dstack_completion *c, uint32_t samples)
{
    sink *k = arg;
    if (k->n < 64) {
        k->samples[k->n] = samples;
        k->c[k->n++] = *c;
    }
}

/* A core of 4 units under `policy` whose completions go to k, emptied. */
static ds_core *core_into(dstack_policy policy, sink *k)
{
    k->n = 0;
    ds_core *c;
    ds_core_config cc = {ds_policy_find(policy), 4, sink_emit, k};
    assert_int_equal(ds_core_create(&cc, &c), DSTACK_OK);
    return c;
}

static dstack_request req_of(dstack_buffer *in, dstack_buffer *out, uint32_t samples)
{
    dstack_request r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    r.inputs = in;
    r.n_inputs = 1;
    r.outputs = out;
    r.n_outputs = 1;
    r.n_samples = samples;
    return r;
}

/* Submit one sample (a model of model_cfg: 4 bytes in, 8 out) at `now`;
 * its buffers are never written (no executor runs in these tests). */
static dstack_status submit_one(ds_core *c, dstack_model *m, uint64_t now)
{
    static float in[2], out[4];
    dstack_buffer bi = {in, 4}, bo = {out, 8};
    dstack_request r = req_of(&bi, &bo, 1);
    dstack_ticket tk;
    return ds_core_submit(c, m, &r, now, &tk);
}

static void test_explicit_deadlines_out_of_order_each_expire_on_time(void **state)
{
    (void)state;
    ds_policy_ops pol = {"never", DSTACK_POLICY_TEMPORAL, false, NULL, NULL, never_pick};
    ds_sched_model_config mc = model_cfg(1, 1, 100000000); /* 100 ms SLO */
    /* by hand on the core: A due at 100 ms, B (later, explicit) at 50 ms,
     * C at 70 ms: each expires at its own deadline, in deadline order */
    static sink s;
    s.n = 0;
    ds_core *c;
    ds_core_config cc = {&pol, 4, sink_emit, &s};
    assert_int_equal(ds_core_create(&cc, &c), DSTACK_OK);
    dstack_model *m;
    assert_int_equal(ds_core_add_model(c, &mc, 8, 0, &m), DSTACK_OK);
    float in = 0, out[2];
    dstack_buffer bi = {&in, 4}, bo = {out, 8};
    dstack_request r = req_of(&bi, &bo, 1);
    dstack_ticket t;
    assert_int_equal(ds_core_submit(c, m, &r, 0, &t), DSTACK_OK);
    r.deadline_ns = 50000000;
    assert_int_equal(ds_core_submit(c, m, &r, 0, &t), DSTACK_OK);
    r.deadline_ns = 70000000;
    assert_int_equal(ds_core_submit(c, m, &r, 0, &t), DSTACK_OK);
    uint64_t expect[3] = {50000000, 70000000, 100000000}, now = 1, wake;
    ds_core_start st[1];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ds_core_step(c, now, st, 1, &wake), 0);
        assert_int_equal(wake, expect[i] + 1);
        now = wake;
        assert_int_equal(ds_core_step(c, now, st, 1, &wake), 0);
        assert_int_equal(s.n, i + 1);
        assert_int_equal(s.c[i].status, DSTACK_ERR_DEADLINE_MISSED);
        assert_int_equal(s.c[i].deadline_ns, expect[i]);
    }
    assert_int_equal(wake, UINT64_MAX);
    ds_core_destroy(c);
}

static void test_remove_and_shutdown_with_batches_in_flight(void **state)
{
    (void)state;
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_TEMPORAL, &k);
    ds_sched_model_config mc = model_cfg(2, 4, 0);
    int owner_a, owner_b;
    mc.owner = &owner_a;
    dstack_model *a, *b;
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &a), DSTACK_OK);
    mc.owner = &owner_b;
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &b), DSTACK_OK);
    float in[8] = {0}, out[16];
    dstack_buffer bi = {in, 4}, bo = {out, 8};
    dstack_request r = req_of(&bi, &bo, 1);
    dstack_ticket t;
    for (int i = 0; i < 5; i++)
        assert_int_equal(ds_core_submit(c, a, &r, 10, &t), DSTACK_OK);
    ds_core_start s[4];
    uint64_t wake;
    assert_int_equal(ds_core_step(c, 20, s, 4, &wake), 1); /* temporal: one batch */
    assert_int_equal(s[0].batch.batch, 2);
    assert_ptr_equal(s[0].model, a);
    /* remove a while its batch runs: its 3 queued are cancelled at once */
    bool running = false;
    assert_int_equal(ds_core_remove_model(c, a, 30, &running), DSTACK_OK);
    assert_true(running);
    assert_int_equal(k.n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(k.c[i].status, DSTACK_ERR_CANCELLED);
    assert_null(ds_core_free_model(c, a)); /* not while it runs */
    assert_int_equal(ds_core_submit(c, a, &r, 31, &t), DSTACK_ERR_SHUTTING_DOWN);
    ds_core_batch_done(c, a, DSTACK_OK, 40);
    assert_int_equal(k.n, 5);
    assert_int_equal(k.c[3].status, DSTACK_OK);
    assert_int_equal(k.c[3].batch_size, 2);
    assert_ptr_equal(ds_core_free_model(c, a), &owner_a);
    /* the stale handle no longer resolves, and costs nothing */
    assert_int_equal(ds_core_submit(c, a, &r, 41, &t), DSTACK_ERR_NOT_FOUND);
    void *o;
    assert_int_equal(ds_core_model_owner(c, a, &o), DSTACK_ERR_NOT_FOUND);
    ds_core_polled(c, a, 1); /* ignored */
    /* shutdown with b's batch in flight: queued cancelled, running finishes */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ds_core_submit(c, b, &r, 50, &t), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 60, s, 4, &wake), 1);
    ds_core_shutdown(c, 70);
    assert_int_equal(k.n, 6);
    assert_int_equal(k.c[5].status, DSTACK_ERR_CANCELLED);
    assert_int_equal(ds_core_step(c, 80, s, 4, &wake), 0);
    ds_core_batch_done(c, b, DSTACK_OK, 90);
    assert_int_equal(k.n, 8);
    assert_int_equal(k.c[6].status, DSTACK_OK);
    assert_int_equal(k.c[7].status, DSTACK_OK);
    ds_core_destroy(c);
}

/* Two models of one request each under `policy`, each on `units` units:
 * a's batch from t[0] to t[2], b's from t[1] to t[3] (submitted 10 ns
 * before its start); the core's totals after both. */
static ds_core_totals two_overlapping_batches(dstack_policy policy, uint32_t units, const uint64_t t[4])
{
    static sink k;
    ds_core *c = core_into(policy, &k);
    ds_sched_model_config mc = model_cfg(1, units, 0);
    dstack_model *a, *b;
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &a), DSTACK_OK);
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &b), DSTACK_OK);
    ds_core_start s[4];
    uint64_t wake;
    assert_int_equal(submit_one(c, a, t[0] - 10), DSTACK_OK);
    assert_int_equal(ds_core_step(c, t[0], s, 4, &wake), 1);
    assert_int_equal(s[0].unit_count, units);
    assert_int_equal(submit_one(c, b, t[1] - 10), DSTACK_OK);
    assert_int_equal(ds_core_step(c, t[1], s, 4, &wake), 1);
    assert_int_equal(s[0].unit_count, units);
    ds_core_batch_done(c, a, DSTACK_OK, t[2]);
    ds_core_batch_done(c, b, DSTACK_OK, t[3]);
    ds_core_totals tot;
    ds_core_totals_get(c, &tot);
    ds_core_destroy(c);
    return tot;
}

/* Busy unit-time is the union of the units running batches hold: streams
 * runs two batches on the same 4 units from 100 to 200 and 150 to 250,
 * which is 4 units x 150 ns busy, not 4 x 200 (utilization above 1). */
static void test_busy_time_counts_shared_units_once(void **state)
{
    (void)state;
    static const uint64_t t[4] = {100, 150, 200, 250};
    ds_core_totals tot = two_overlapping_batches(DSTACK_POLICY_STREAMS, 4, t);
    assert_int_equal(tot.unit_busy_ns, 4 * 150);
    assert_int_equal(tot.whole_busy_ns, 150); /* every unit held: the whole device */
    assert_int_equal(tot.tail_busy_ns, 150);
}

/* The whole device (the SMs no unit holds included) is busy only while one
 * batch holds every unit: two static shares of 2 units each, batches on
 * units 0-1 from 100 to 300 and on 2-3 from 200 to 400, hold every unit
 * together from 200 to 300, each on its own green context: never. */
static void test_whole_device_time_needs_every_unit(void **state)
{
    (void)state;
    static const uint64_t t[4] = {100, 200, 300, 400};
    ds_core_totals tot = two_overlapping_batches(DSTACK_POLICY_STATIC_SPATIAL, 2, t);
    assert_int_equal(tot.unit_busy_ns, 2 * 200 + 2 * 200);
    assert_int_equal(tot.whole_busy_ns, 0);
    /* the last unit (3) is held from 200 to 400: where the SMs left over
     * join the ranges that end there, they worked that long */
    assert_int_equal(tot.tail_busy_ns, 200);
}

static void test_requests_of_several_samples_are_never_split(void **state)
{
    (void)state;
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_TEMPORAL, &k);
    ds_sched_model_config mc = model_cfg(4, 4, 0);
    mc.max_batch = 4;
    dstack_model *m;
    assert_int_equal(ds_core_add_model(c, &mc, 8, 0, &m), DSTACK_OK);
    float in[8], out[16];
    for (int i = 0; i < 8; i++)
        in[i] = (float)i;
    dstack_buffer bi3 = {in, 12}, bo3 = {out, 24}, bi2 = {in + 3, 8}, bo2 = {out + 6, 16};
    dstack_request r3 = req_of(&bi3, &bo3, 3), r2 = req_of(&bi2, &bo2, 2);
    dstack_ticket t;
    assert_int_equal(ds_core_submit(c, m, &r3, 0, &t), DSTACK_OK);
    assert_int_equal(ds_core_submit(c, m, &r2, 0, &t), DSTACK_OK);
    /* capacity counts samples: 5 of 8 taken, a 4-sample request does not fit */
    dstack_buffer bi4 = {in, 16}, bo4 = {out, 32};
    dstack_request r4 = req_of(&bi4, &bo4, 4);
    assert_int_equal(ds_core_submit(c, m, &r4, 0, &t), DSTACK_ERR_QUEUE_FULL);
    /* wrong sizes for the sample count, and more samples than max_batch */
    r3.n_samples = 2;
    assert_int_equal(ds_core_submit(c, m, &r3, 0, &t), DSTACK_ERR_SIZE_MISMATCH);
    r4.n_samples = 5;
    assert_int_equal(ds_core_submit(c, m, &r4, 0, &t), DSTACK_ERR_INVALID_ARGUMENT);
    ds_core_start s[2];
    uint64_t wake;
    /* batch 4: the 3-sample request goes alone, the 2-sample one waits */
    assert_int_equal(ds_core_step(c, 1, s, 2, &wake), 1);
    assert_int_equal(s[0].batch.batch, 3);
    for (uint32_t i = 0; i < 3; i++) {
        assert_ptr_equal(s[0].batch.inputs[i], &in[i]);
        assert_ptr_equal(s[0].batch.outputs[i], &out[2 * i]);
    }
    ds_core_batch_done(c, m, DSTACK_OK, 5);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.samples[0], 3);
    assert_int_equal(k.c[0].batch_size, 3);
    assert_int_equal(ds_core_step(c, 6, s, 2, &wake), 1);
    assert_int_equal(s[0].batch.batch, 2);
    assert_ptr_equal(s[0].batch.inputs[1], &in[4]);
    ds_core_batch_done(c, m, DSTACK_OK, 9);
    ds_core_polled(c, m, 3);
    ds_core_polled(c, m, 2);
    assert_int_equal(ds_core_submit(c, m, &r4, 10, &t), DSTACK_ERR_INVALID_ARGUMENT); /* still 5 > 4 */
    r4.n_samples = 4;
    assert_int_equal(ds_core_submit(c, m, &r4, 10, &t), DSTACK_OK);
    ds_core_destroy(c);
}

static void test_models_that_come_and_go_leave_nothing_behind(void **state)
{
    (void)state;
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_TEMPORAL, &k);
    ds_sched_model_config mc = model_cfg(1, 1, 0);
    dstack_model *live, *first = NULL, *m = NULL;
    assert_int_equal(ds_core_add_model(c, &mc, 4, 0, &live), DSTACK_OK);
    for (int i = 0; i < 20000; i++) {
        assert_int_equal(ds_core_add_model(c, &mc, 4, 0, &m), DSTACK_OK);
        if (!first)
            first = m;
        bool running;
        assert_int_equal(ds_core_remove_model(c, m, 0, &running), DSTACK_OK);
        ds_core_free_model(c, m);
    }
    assert_int_equal(ds_core_model_count(c), 1);
    void *o;
    assert_int_equal(ds_core_model_owner(c, first, &o), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(ds_core_model_owner(c, m, &o), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(ds_core_model_owner(c, live, &o), DSTACK_OK);
    /* the slot was reused each time: the same slot, a new generation */
    assert_int_equal((uint32_t)(uintptr_t)first, (uint32_t)(uintptr_t)m);
    assert_true(first != m);
    ds_core_destroy(c);
}

/* Drain `queued` one-sample requests through temporal at batch 1 and
 * return the ns of CPU per request (submit excluded). */
static double drain_cost_ns(uint32_t queued)
{
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_TEMPORAL, &k);
    ds_sched_model_config mc = model_cfg(1, 1, 1000000000000ull);
    dstack_model *m;
    assert_int_equal(ds_core_add_model(c, &mc, queued, 0, &m), DSTACK_OK);
    float in = 0, out[2];
    dstack_buffer bi = {&in, 4}, bo = {out, 8};
    dstack_request r = req_of(&bi, &bo, 1);
    dstack_ticket t;
    for (uint32_t i = 0; i < queued; i++)
        assert_int_equal(ds_core_submit(c, m, &r, i, &t), DSTACK_OK);
    const uint32_t n = 4096;
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (uint32_t i = 0; i < n; i++) {
        ds_core_start s[1];
        uint64_t wake;
        k.n = 0;
        assert_int_equal(ds_core_step(c, queued + i, s, 1, &wake), 1);
        ds_core_batch_done(c, m, DSTACK_OK, queued + i);
        ds_core_polled(c, m, 1);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    ds_core_destroy(c);
    return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / n;
}

static void test_decision_cost_does_not_grow_with_queue_length(void **state)
{
    (void)state;
    double small = 1e30, big = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double s = drain_cost_ns(16384), b = drain_cost_ns(1u << 20);
        small = s < small ? s : small;
        big = b < big ? b : big;
    }
    print_message("drain cost per request: %.0f ns at 16k queued, %.0f ns at 1M queued\n", small, big);
    /* a scan of the queue would make 1M 64x dearer than 16k */
    assert_true(big < 4.0 * small + 2000.0);
}

/* ---- policies on hand-made views ---- */

static uint64_t lat_table(const void *arg, uint32_t samples, uint32_t units)
{
    (void)arg;
    return 1000000ull * samples * 8 / (units < 8 ? units : 8); /* 1 ms per sample at >= 8 units */
}

static void test_dynamic_batching_waits_for_the_batch_until_the_deadline_forces_it(void **state)
{
    (void)state;
    ds_policy_mstate ps = {0};
    ds_sched_model_view m = {.queued = 2, .queued_samples = 2, .oldest_submit_ns = 0,
                             .oldest_deadline_ns = 25000000, .batch_size = 8, .max_batch = 8,
                             .unit_count = 8, .slo_ns = 25000000, .latency = lat_table, .ps = &ps};
    ds_sched_view v = {1000, 1, &m, 8, 0, 0};
    uint64_t go;
    assert_false(ds_policy_batch_ready(&v, &m, 8, &go));
    assert_int_equal(go, 25000000 - 2 * 8000000); /* deadline - 2 L(batch 8) */
    v.now_ns = go;
    assert_true(ds_policy_batch_ready(&v, &m, 8, &go));
    m.queued_samples = 8;
    v.now_ns = 1000;
    assert_true(ds_policy_batch_ready(&v, &m, 8, &go)); /* full batch: at once */
    m.latency = NULL;
    m.queued_samples = 2;
    assert_true(ds_policy_batch_ready(&v, &m, 8, &go)); /* nothing predicted: at once */
}

static void test_dstack_places_side_by_side_and_gives_idle_units_away(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_DSTACK);
    assert_non_null(p);
    void *st = p->create();
    ds_policy_mstate ps[3] = {{0}};
    ds_sched_model_view mv[3];
    for (int i = 0; i < 3; i++)
        mv[i] = (ds_sched_model_view){.id = (uint64_t)i + 1, .queued = 8, .queued_samples = 8, .head_samples = 1,
                                      .oldest_submit_ns = 100 + (uint64_t)i, .oldest_deadline_ns = 50000000,
                                      .batch_size = 8, .max_batch = 8, .unit_count = 6, .slo_ns = 50000000,
                                      .latency = lat_table, .ps = &ps[i]};
    ds_sched_view v = {1000, 3, mv, 15, 0, 0};
    ds_sched_decision d;
    uint64_t wake;
    uint64_t busy = 0;
    /* right-sized: L(8, u) = 64/u ms, so the fewest units with 2 L <= 50 ms
     * are 3 (21.3 ms): three batches of 3 units side by side, disjoint,
     * and units nobody waiting needs go to the batch being placed */
    for (int k = 0; k < 3; k++) {
        v.units_busy = busy;
        assert_true(p->pick(st, &v, &d, &wake));
        /* the first takes 3 (the fewest that fit); the second may take 6 of
         * the 12 free, as only one model (knee 6) still waits; the last takes
         * every unit left */
        uint32_t want = k == 0 ? 3 : 6;
        assert_int_equal(d.unit_count, want);
        uint64_t mask = ((1ull << d.unit_count) - 1) << d.first_unit;
        assert_int_equal(busy & mask, 0);
        busy |= mask;
        mv[d.model].running = true;
        mv[d.model].queued = mv[d.model].queued_samples = 0;
    }
    assert_false(p->pick(st, &v, &d, &wake)); /* nothing left to run */
    /* a model whose arrival rate needs more than 3 units to keep up gets more:
     * 1.5 x 1000/s on batches of 8 needs L <= 5.3 ms: its knee (6 units, 10.7
     * ms) cannot, so it takes the knee */
    busy = 0;
    for (int i = 0; i < 3; i++) {
        mv[i].running = false;
        mv[i].queued = mv[i].queued_samples = 8;
        mv[i].arrival_rps = i == 0 ? 1000.0 : 0.0;
    }
    v.units_busy = 0;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 0);
    assert_int_equal(d.unit_count, 6);
    /* with a deadline it cannot meet on the units left, a model waits */
    v.units_busy = (1ull << 14) - 1; /* one unit free */
    mv[0].running = true;
    for (int i = 1; i < 3; i++)
        mv[i].oldest_deadline_ns = 1000 + 10000000; /* 10 ms: needs 64 ms on 1 unit */
    assert_false(p->pick(st, &v, &d, &wake));
    p->destroy(st);
}

static void test_dstack_serves_a_starving_wide_model_before_narrow_ones(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_DSTACK);
    void *st = p->create();
    ds_policy_mstate ps[2] = {{0}};
    /* model 0: wide (knee 12), waiting 30 ms of a 50 ms SLO: starving;
     * model 1: narrow (knee 2), laxer; 4 units free only */
    ds_sched_model_view mv[2] = {
        {.id = 1, .queued = 1, .queued_samples = 8, .oldest_submit_ns = 0, .oldest_deadline_ns = 50000000,
         .batch_size = 8, .max_batch = 8, .unit_count = 12, .slo_ns = 50000000, .latency = lat_table, .ps = &ps[0]},
        {.id = 2, .queued = 8, .queued_samples = 8, .oldest_submit_ns = 29000000, .oldest_deadline_ns = 79000000,
         .batch_size = 8, .max_batch = 8, .unit_count = 2, .slo_ns = 50000000, .latency = lat_table, .ps = &ps[1]},
    };
    ds_sched_view v = {30000000, 2, mv, 15, (1ull << 11) - 1, 1};
    ds_sched_decision d;
    uint64_t wake;
    /* the wide one cannot be placed (4 free, and L(8, 4) = 16 ms would fit
     * its deadline: it takes the 4 units rather than wait) */
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 0);
    /* when even a narrow share would miss, the narrow model may not jump it */
    mv[0].oldest_deadline_ns = 40000000;
    assert_false(p->pick(st, &v, &d, &wake));
    p->destroy(st);
}

/* A batch goes to the start of its free run, or to the end of a run that
 * reaches the last unit: the ranges that end there hold the SMs no unit
 * holds (util/units.h). Model 0 is ready and right-sized to 3 units
 * (2 L(8, 3) = 42.7 ms <= 50 ms); model 1 waits for a share of 12, so
 * nothing is spare to widen model 0's. */
static void test_dstack_places_at_the_end_of_a_run_that_reaches_the_last_unit(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_DSTACK);
    void *st = p->create();
    ds_policy_mstate ps[2] = {{0}};
    ds_sched_model_view mv[2] = {
        {.id = 1, .queued = 8, .queued_samples = 8, .oldest_submit_ns = 1000000, .oldest_deadline_ns = 51000000,
         .batch_size = 8, .max_batch = 8, .unit_count = 8, .slo_ns = 50000000, .latency = lat_table, .ps = &ps[0]},
        {.id = 2, .queued = 1, .queued_samples = 1, .oldest_submit_ns = 2000000, .oldest_deadline_ns = 52000000,
         .batch_size = 8, .max_batch = 8, .unit_count = 12, .slo_ns = 50000000, .latency = lat_table, .ps = &ps[1]},
    };
    ds_sched_view v = {2000000, 2, mv, 15, 0, 1};
    ds_sched_decision d;
    uint64_t wake;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 0);
    assert_int_equal(d.unit_count, 3);
    assert_int_equal(d.first_unit, 12); /* units 12-14: the last one */
    /* the last unit busy: the free run 0-13 does not reach it, its start */
    v.units_busy = 1ull << 14;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 0);
    assert_int_equal(d.unit_count, 3);
    assert_int_equal(d.first_unit, 0);
    /* best fit still comes first: runs 0-3 (4 units) and 6-14 (9 units) */
    v.units_busy = (1ull << 4) | (1ull << 5);
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.unit_count, 3);
    assert_int_equal(d.first_unit, 0);
    p->destroy(st);
}

/* L(b, u) = 10 ms x b / u, and 5 ms x b / u */
static uint64_t lat_10ms(const void *arg, uint32_t samples, uint32_t units)
{
    (void)arg;
    return 10000000ull * samples / (units ? units : 1);
}

static uint64_t lat_5ms(const void *arg, uint32_t samples, uint32_t units)
{
    (void)arg;
    return 5000000ull * samples / (units ? units : 1);
}

/* A request expires only when even the fastest share a policy may grant
 * would miss: temporal runs every batch on the whole device, so a model
 * planned on 1 unit (L(1, 1) = 10 ms, SLO 12 ms) that waits 3 ms for the
 * device still makes it there (L(1, 4) = 2.5 ms). Found by a review:
 * expiry was deadline - L(1, planned share) = 2 ms. */
static void test_expiry_counts_the_fastest_share(void **state)
{
    (void)state;
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_TEMPORAL, &k);
    ds_sched_model_config bc = model_cfg(1, 4, 0), mc = model_cfg(1, 1, 12000000);
    mc.latency = lat_10ms;
    dstack_model *busy, *m;
    assert_int_equal(ds_core_add_model(c, &bc, 16, 0, &busy), DSTACK_OK);
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &m), DSTACK_OK);
    ds_core_start s[4];
    uint64_t wake;
    assert_int_equal(submit_one(c, busy, 0), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 0, s, 4, &wake), 1);
    assert_int_equal(submit_one(c, m, 0), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 0, s, 4, &wake), 0);
    assert_true(wake >= 9500000 && wake <= 9500001); /* its expiry: the deadline less L(1, 4) */
    assert_int_equal(ds_core_step(c, 2000000, s, 4, &wake), 0);
    assert_int_equal(k.n, 0); /* not expired at 2 ms */
    ds_core_batch_done(c, busy, DSTACK_OK, 3000000);
    assert_int_equal(ds_core_step(c, 3000000, s, 4, &wake), 1);
    assert_int_equal(s[0].unit_count, 4);
    ds_core_batch_done(c, s[0].model, DSTACK_OK, 3000000 + 2500000);
    assert_int_equal(k.n, 2); /* the busy one's and m's, both served */
    assert_int_equal(k.c[1].status, DSTACK_OK);
    assert_int_equal(k.c[1].deadline_ns, 12000000);
    ds_core_destroy(c);
}

/* static_spatial never gives a model more than its share: there a request
 * expires against L(1, share) (kept until the whole device could not make
 * it, doomed requests ran late and cut its simulated eight-model goodput
 * from 3200 to 1700 req/s). Model on 1 unit, L(1, 1) = 10 ms, SLO 12 ms:
 * it expires at 2 ms, and at 2 ms + 1 ns it is reported missed. */
static void test_static_spatial_expires_against_its_own_share(void **state)
{
    (void)state;
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_STATIC_SPATIAL, &k);
    ds_sched_model_config mc = model_cfg(1, 1, 12000000);
    mc.latency = lat_10ms;
    dstack_model *m;
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &m), DSTACK_OK);
    ds_core_start s[4];
    uint64_t wake;
    assert_int_equal(submit_one(c, m, 0), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 0, s, 4, &wake), 1); /* its one unit, busy until done */
    assert_int_equal(submit_one(c, m, 0), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 0, s, 4, &wake), 0);
    assert_true(wake >= 2000000 && wake <= 2000001);
    assert_int_equal(ds_core_step(c, 2000001, s, 4, &wake), 0);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.c[0].status, DSTACK_ERR_DEADLINE_MISSED);
    ds_core_destroy(c);
    /* knees scaled down: two models planned on 4 units each share 4, 2
     * each, so the fastest run is L(1, 2) = 5 ms, not L(1, 4): expiry at
     * 7 ms; and once the other model goes, its home is all 4 units */
    c = core_into(DSTACK_POLICY_STATIC_SPATIAL, &k);
    mc = model_cfg(1, 4, 12000000);
    mc.latency = lat_10ms;
    dstack_model *other;
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &m), DSTACK_OK);
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &other), DSTACK_OK);
    assert_int_equal(submit_one(c, m, 0), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 0, s, 4, &wake), 1);
    assert_int_equal(s[0].unit_count, 2);
    assert_int_equal(submit_one(c, m, 0), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 0, s, 4, &wake), 0);
    assert_true(wake >= 7000000 && wake <= 7000001);
    bool running;
    assert_int_equal(ds_core_remove_model(c, other, 0, &running), DSTACK_OK);
    assert_int_equal(ds_core_step(c, 0, s, 4, &wake), 0);
    assert_true(wake >= 9500000 && wake <= 9500001);
    ds_core_destroy(c);
}

/* A batch grown for a backlog that fits no free share is made smaller (down
 * to the planned batch) rather than leaving a free unit idle: 2 units,
 * unit 0 busy, 8 requests queued, SLO 30 ms, L(b, u) = 5 ms x b / u.
 * Grown to 4 (L(4, 1) = 20 ms, 2 L > SLO) it fit nowhere and waited until
 * every request expired (found by a review); a batch of 2 fits unit 1. */
static void test_dstack_shrinks_a_grown_batch_to_fit_a_free_unit(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_DSTACK);
    void *st = p->create();
    ds_policy_mstate ps = {0};
    ds_sched_model_view mv = {.id = 1, .queued = 8, .queued_samples = 8, .oldest_submit_ns = 0,
                              .oldest_deadline_ns = 30000000, .batch_size = 1, .max_batch = 8, .unit_count = 2,
                              .slo_ns = 30000000, .latency = lat_5ms, .ps = &ps};
    ds_sched_view v = {1000000, 1, &mv, 2, 1, 1};
    ds_sched_decision d;
    uint64_t wake;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.first_unit, 1);
    assert_int_equal(d.unit_count, 1);
    assert_int_equal(d.batch, 2);
    p->destroy(st);
}

/* A model without an SLO has no laxity; it starves no longer than half the
 * longest SLO there is, then goes first (it used to wait behind every
 * model with an SLO for as long as they kept the device busy). */
static void test_dstack_serves_a_model_without_slo_within_half_the_longest(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_DSTACK);
    void *st = p->create();
    ds_policy_mstate ps[2] = {{0}};
    ds_sched_model_view mv[2] = {
        {.id = 1, .queued = 1, .queued_samples = 1, .oldest_submit_ns = 0, .batch_size = 1, .max_batch = 1,
         .unit_count = 1, .ps = &ps[0]},
        {.id = 2, .queued = 1, .queued_samples = 1, .batch_size = 1, .max_batch = 1, .unit_count = 1,
         .slo_ns = 50000000, .latency = lat_table, .ps = &ps[1]},
    };
    ds_sched_view v = {20000000, 2, mv, 1, 0, 0};
    mv[1].oldest_submit_ns = v.now_ns - 1000000;
    mv[1].oldest_deadline_ns = mv[1].oldest_submit_ns + 50000000;
    ds_sched_decision d;
    uint64_t wake;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 1); /* 20 ms of waiting: the SLO model first */
    v.now_ns = 26000000;          /* past 25 ms, half the longest SLO */
    mv[1].oldest_submit_ns = v.now_ns - 1000000;
    mv[1].oldest_deadline_ns = mv[1].oldest_submit_ns + 50000000;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 0);
    p->destroy(st);
}

/* Laxity saturates: an explicit deadline of UINT64_MAX ("never") is the
 * least urgent, not the most (deadline - now wrapped negative). */
static void test_dstack_far_deadline_is_not_urgent(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_DSTACK);
    void *st = p->create();
    ds_policy_mstate ps[2] = {{0}};
    ds_sched_model_view mv[2] = {
        {.id = 1, .queued = 1, .queued_samples = 1, .oldest_submit_ns = 1000, .oldest_deadline_ns = UINT64_MAX,
         .batch_size = 1, .max_batch = 1, .unit_count = 1, .latency = lat_10ms, .ps = &ps[0]},
        {.id = 2, .queued = 1, .queued_samples = 1, .oldest_submit_ns = 2000, .oldest_deadline_ns = 15002000,
         .batch_size = 1, .max_batch = 1, .unit_count = 1, .slo_ns = 15000000, .latency = lat_10ms,
         .ps = &ps[1]},
    };
    ds_sched_view v = {3000, 2, mv, 1, 0, 0};
    ds_sched_decision d;
    uint64_t wake;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 1);
    p->destroy(st);
}

/* static_spatial: scaled down, every model keeps a unit while there are as
 * many units as models (knees {3, 1, 1, 1} on 4 units left the last one
 * without any), and the core refuses a model beyond one per unit. */
static void test_static_spatial_gives_every_model_a_unit_and_refuses_more(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_STATIC_SPATIAL);
    void *st = p->create();
    ds_policy_mstate ps[4] = {{0}};
    ds_sched_model_view mv[4];
    static const uint32_t knee[4] = {3, 1, 1, 1};
    for (int i = 0; i < 4; i++)
        mv[i] = (ds_sched_model_view){.queued = 1, .queued_samples = 1, .batch_size = 1, .max_batch = 1,
                                      .unit_count = knee[i], .ps = &ps[i]};
    ds_sched_view v = {0, 4, mv, 4, 0, 0};
    ds_sched_decision d;
    uint64_t wake;
    for (uint32_t i = 0; i < 4; i++) {
        assert_true(p->pick(st, &v, &d, &wake));
        assert_int_equal(d.model, i);
        assert_int_equal(d.first_unit, i);
        assert_int_equal(d.unit_count, 1);
        mv[i].running = true;
        v.units_busy |= 1ull << i;
    }
    p->destroy(st);
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_STATIC_SPATIAL, &k);
    ds_sched_model_config mc = model_cfg(1, 1, 0);
    dstack_model *m[5];
    for (int i = 0; i < 4; i++)
        assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &m[i]), DSTACK_OK);
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &m[4]), DSTACK_ERR_RESOURCE_LIMIT);
    assert_non_null(strstr(ds_error_message(), "static_spatial"));
    bool running;
    assert_int_equal(ds_core_remove_model(c, m[0], 0, &running), DSTACK_OK);
    assert_false(running);
    assert_int_equal(ds_core_add_model(c, &mc, 16, 0, &m[4]), DSTACK_OK);
    ds_core_destroy(c);
}

/* A handle names a model of its own core only: the first model of two
 * cores used to be the same handle value, so one context's handle
 * unregistered another context's model. */
static void test_handles_of_another_core_are_not_found(void **state)
{
    (void)state;
    static sink ka, kb;
    ds_core *a = core_into(DSTACK_POLICY_TEMPORAL, &ka), *b = core_into(DSTACK_POLICY_TEMPORAL, &kb);
    ds_sched_model_config mc = model_cfg(1, 1, 0);
    dstack_model *ma, *mb;
    assert_int_equal(ds_core_add_model(a, &mc, 16, 0, &ma), DSTACK_OK);
    assert_int_equal(ds_core_add_model(b, &mc, 16, 0, &mb), DSTACK_OK);
    assert_ptr_not_equal(ma, mb);
    bool running;
    assert_int_equal(ds_core_remove_model(a, mb, 0, &running), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(ds_core_remove_model(b, ma, 0, &running), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(ds_core_remove_model(a, ma, 0, &running), DSTACK_OK);
    ds_core_destroy(a);
    ds_core_destroy(b);
}

/* QUEUE_FULL means "retry later": a request larger than the queue ever
 * holds is INVALID_ARGUMENT instead, or a retry loop would spin forever. */
static void test_request_larger_than_the_queue_is_invalid_not_full(void **state)
{
    (void)state;
    static sink k;
    ds_core *c = core_into(DSTACK_POLICY_TEMPORAL, &k);
    ds_sched_model_config mc = model_cfg(1, 1, 0); /* max_batch 8 */
    dstack_model *m;
    assert_int_equal(ds_core_add_model(c, &mc, 2, 0, &m), DSTACK_OK);
    float in[3] = {0}, out[6];
    dstack_buffer bi = {in, 12}, bo = {out, 24};
    dstack_request r = req_of(&bi, &bo, 3);
    dstack_ticket tk;
    assert_int_equal(ds_core_submit(c, m, &r, 0, &tk), DSTACK_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(ds_error_message(), "queue_capacity"));
    bi.bytes = 8;
    bo.bytes = 16;
    r = req_of(&bi, &bo, 2);
    assert_int_equal(ds_core_submit(c, m, &r, 0, &tk), DSTACK_OK);
    assert_int_equal(submit_one(c, m, 0), DSTACK_ERR_QUEUE_FULL); /* full for now */
    ds_core_destroy(c);
}

static void test_static_spatial_scales_knees_down_to_fit(void **state)
{
    (void)state;
    const ds_policy_ops *p = ds_policy_find(DSTACK_POLICY_STATIC_SPATIAL);
    void *st = p->create();
    ds_policy_mstate ps[2] = {{0}};
    ds_sched_model_view mv[2] = {
        {.queued = 1, .queued_samples = 1, .batch_size = 1, .max_batch = 1, .unit_count = 10, .ps = &ps[0]},
        {.queued = 1, .queued_samples = 1, .batch_size = 1, .max_batch = 1, .unit_count = 10, .ps = &ps[1]},
    };
    ds_sched_view v = {0, 2, mv, 15, 0, 0};
    ds_sched_decision d;
    uint64_t wake;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 0);
    assert_int_equal(d.first_unit, 0);
    /* one unit each, and the other 13 in proportion to the 9 + 9 asked
     * beyond one: 6.5 each, the half unit to the first: 8 and 7, all 15 */
    assert_int_equal(d.unit_count, 8);
    mv[0].running = true;
    v.units_busy = (1ull << 8) - 1;
    assert_true(p->pick(st, &v, &d, &wake));
    assert_int_equal(d.model, 1);
    assert_int_equal(d.first_unit, 8);
    assert_int_equal(d.unit_count, 7);
    p->destroy(st);
}

/* In virtual time through the DES: partitions never overlap, every model
 * is served, and D-STACK runs batches side by side. */
static void test_dstack_in_virtual_time_never_overlaps_and_serves_everyone(void **state)
{
    (void)state;
    vexec *v = vexec_new(15, 2000000, 500000);
    ds_des_config cfg = {ds_policy_find(DSTACK_POLICY_DSTACK), &v->base, &v_des_ops, 256};
    ds_des *d;
    assert_int_equal(ds_des_create(&cfg, &d), DSTACK_OK);
    uint32_t knees[4] = {7, 4, 9, 2};
    for (int i = 0; i < 4; i++) {
        ds_sched_model_config mc = model_cfg(4, knees[i], 50000000);
        mc.latency = lat_table;
        assert_int_equal(ds_des_add_model(d, &mc), DSTACK_OK);
    }
    enum { N = 2000 };
    static ds_des_arrival tr[N];
    uint64_t seed = 42;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        tr[i] = (ds_des_arrival){(uint64_t)i * 500000, (uint32_t)(seed >> 33) % 4, 1};
    }
    static collected k;
    k.n = 0;
    assert_int_equal(ds_des_run(d, tr, N, 0, collect, &k), DSTACK_OK);
    assert_int_equal(k.n, N);
    assert_false(v->overlap_seen);
    uint32_t ok[4] = {0};
    for (size_t i = 0; i < k.n; i++)
        ok[k.model[i]] += k.c[i].status == DSTACK_OK;
    for (int m = 0; m < 4; m++)
        assert_true(ok[m] > 0);
    ds_core_totals t;
    ds_des_totals(d, &t);
    assert_true(t.batches > 0);
    ds_des_destroy(d);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timer_wakes_the_policy_at_exactly_the_time_it_asked),
        cmocka_unit_test(test_request_expires_at_its_deadline_with_nothing_else_happening),
        cmocka_unit_test(test_explicit_deadlines_out_of_order_each_expire_on_time),
        cmocka_unit_test(test_remove_and_shutdown_with_batches_in_flight),
        cmocka_unit_test(test_busy_time_counts_shared_units_once),
        cmocka_unit_test(test_whole_device_time_needs_every_unit),
        cmocka_unit_test(test_requests_of_several_samples_are_never_split),
        cmocka_unit_test(test_models_that_come_and_go_leave_nothing_behind),
        cmocka_unit_test(test_decision_cost_does_not_grow_with_queue_length),
        cmocka_unit_test(test_dynamic_batching_waits_for_the_batch_until_the_deadline_forces_it),
        cmocka_unit_test(test_dstack_places_side_by_side_and_gives_idle_units_away),
        cmocka_unit_test(test_dstack_serves_a_starving_wide_model_before_narrow_ones),
        cmocka_unit_test(test_dstack_places_at_the_end_of_a_run_that_reaches_the_last_unit),
        cmocka_unit_test(test_expiry_counts_the_fastest_share),
        cmocka_unit_test(test_static_spatial_expires_against_its_own_share),
        cmocka_unit_test(test_dstack_shrinks_a_grown_batch_to_fit_a_free_unit),
        cmocka_unit_test(test_dstack_serves_a_model_without_slo_within_half_the_longest),
        cmocka_unit_test(test_dstack_far_deadline_is_not_urgent),
        cmocka_unit_test(test_static_spatial_gives_every_model_a_unit_and_refuses_more),
        cmocka_unit_test(test_request_larger_than_the_queue_is_invalid_not_full),
        cmocka_unit_test(test_handles_of_another_core_are_not_found),
        cmocka_unit_test(test_static_spatial_scales_knees_down_to_fit),
        cmocka_unit_test(test_dstack_in_virtual_time_never_overlaps_and_serves_everyone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
