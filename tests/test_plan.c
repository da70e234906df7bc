/* test_plan.c - issue 12's acceptance on sim: the analytic knee equals the
 * swept one; the latency model fitted from 3 batches x 3 shares predicts
 * held-out points; registration's knee, batch and predicted latency are
 * met by the simulator; overrides win; the batch optimizer in virtual time
 * grows the batch with the rate, keeps the SLO and re-plans after a step;
 * the profile cache skips profiling and survives damaged entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api_internal.h"
#include "batch/latency.h"
#include "knee/analytic.h"
#include "profile/cache.h"
#include "sched/des.h"
#include "sched/policy.h"
#include "sim/sim.h"
#include "util/units.h"
#include "util/fault.h"
#include "util/sha256.h"

#define SLO_US 25000u

static ds_graph *zoo(const char *name)
{
    ds_zoo_params zp = {224, 1000, 1};
    ds_graph *g = NULL;
    assert_int_equal(ds_zoo_build(name, &zp, &g), DSTACK_OK);
    assert_int_equal(ds_graph_fold(g), DSTACK_OK);
    return g;
}

typedef struct sim_model {
    ds_executor *ex;
    ds_graph *g;
    ds_exec_plan *plan;
    ds_latency_model *lat;
} sim_model;

static void sim_model_open(sim_model *m, const char *name, uint32_t max_batch)
{
    ds_executor_config ec = {0, DSTACK_PARTITION_GREEN_CTX, 0, 0};
    assert_int_equal(ds_exec_sim_create(&ec, &m->ex), DSTACK_OK);
    m->g = zoo(name);
    ds_plan_options po = {max_batch, DSTACK_PRECISION_FP32, 0};
    assert_int_equal(m->ex->ops->plan_create(m->ex, m->g, &po, &m->plan), DSTACK_OK);
    assert_int_equal(ds_latency_model_build(m->ex, m->plan, m->g, false, max_batch, &m->lat), DSTACK_OK);
}

static void sim_model_close(sim_model *m)
{
    free(m->lat);
    m->ex->ops->plan_destroy(m->ex, m->plan);
    m->ex->ops->destroy(m->ex);
    ds_graph_free(m->g);
}

/* ---- analytic knee ---- */

static void test_analytic_knee_equals_swept_knee_for_every_zoo_model(void **unused)
{
    (void)unused;
    static const uint32_t batches[] = {1, 8, 32};
    ds_sim_device dev;
    ds_sim_device_default(&dev, DSTACK_PARTITION_GREEN_CTX, 0);
    for (const char *const *name = ds_zoo_names(); *name; name++) {
        sim_model m;
        sim_model_open(&m, *name, 32);
        for (size_t i = 0; i < 3; i++) {
            ds_knee_curve c;
            assert_int_equal(ds_knee_analytic(m.g, batches[i], &dev, NULL, &c), DSTACK_OK);
            uint32_t swept = ds_latency_knee_units(m.lat, batches[i]);
            if (c.knee_units != swept)
                fail_msg("%s batch %u: analytic knee %u units, swept %u", *name, batches[i], c.knee_units, swept);
            for (uint32_t u = 1; u <= c.n_units; u++)
                assert_true(fabs(c.us[u - 1] - ds_latency_us(m.lat, batches[i], u)) < 1e-6 * c.us[u - 1] + 1e-3);
        }
        sim_model_close(&m);
    }
}

static void test_analytic_knee_refuses_bad_arguments(void **unused)
{
    (void)unused;
    ds_sim_device dev;
    ds_sim_device_default(&dev, DSTACK_PARTITION_GREEN_CTX, 0);
    ds_knee_curve c;
    ds_graph *g = zoo("alexnet");
    assert_int_equal(ds_knee_analytic(NULL, 1, &dev, NULL, &c), DSTACK_ERR_INVALID_ARGUMENT);
    assert_int_equal(ds_knee_analytic(g, 0, &dev, NULL, &c), DSTACK_ERR_INVALID_ARGUMENT);
    ds_sim_device none;
    ds_sim_device_default(&none, DSTACK_PARTITION_NONE, 0);
    assert_int_equal(ds_knee_analytic(g, 8, &none, NULL, &c), DSTACK_OK);
    assert_int_equal(c.n_units, 1);
    assert_int_equal(c.knee_units, 1);
    ds_graph_free(g);
}

/* ---- latency model fit ---- */

static uint64_t rng = 12345;
static double noise(double amp) /* uniform in [-amp, amp] */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return amp * (2.0 * ((double)(rng >> 11) / 9007199254740992.0) - 1.0);
}

/* The "device" is the simulator scaled and offset (a real GPU is not the
 * sim), with 5% multiplicative noise on every measurement. The fit sees 3
 * batches x 3 shares; every other (batch, share) is held out. */
static void test_latency_fit_3x3_predicts_held_out_points_within_10_percent(void **unused)
{
    (void)unused;
    static const uint32_t fit_b[3] = {1, 8, 32}, fit_u[3] = {1, 5, 15};
    static const uint32_t held_b[] = {2, 4, 12, 16, 24};
    for (const char *const *name = ds_zoo_names(); *name; name++) {
        sim_model m;
        sim_model_open(&m, *name, 32);
        double x[9], y[9];
        size_t n = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++, n++) {
                x[n] = ds_latency_us(m.lat, fit_b[i], fit_u[j]);
                y[n] = (1.3 * x[n] + 150.0) * (1.0 + noise(0.05));
            }
        double a, c;
        assert_int_equal(ds_latency_fit(x, y, n, &a, &c), DSTACK_OK);
        double err[5 * 15];
        size_t k = 0;
        for (size_t i = 0; i < sizeof held_b / sizeof held_b[0]; i++)
            for (uint32_t u = 1; u <= m.lat->n_units; u++) {
                double truth = 1.3 * ds_latency_us(m.lat, held_b[i], u) + 150.0;
                double measured = truth * (1.0 + noise(0.05));
                double pred = a * ds_latency_us(m.lat, held_b[i], u) + c;
                err[k++] = fabs(pred - measured) / measured;
            }
        for (size_t i = 1; i < k; i++) /* insertion sort: k is small */
            for (size_t j = i; j > 0 && err[j - 1] > err[j]; j--) {
                double t = err[j];
                err[j] = err[j - 1];
                err[j - 1] = t;
            }
        double median = err[k / 2];
        if (!(median < 0.10))
            fail_msg("%s: median held-out error %.1f%%", *name, 100 * median);
        assert_true(fabs(a - 1.3) < 0.15);
        sim_model_close(&m);
    }
}

/* ---- registration: knee, batch and predicted latency met by the sim ---- */

static dstack_ctx *sim_ctx(const char *cache_dir, dstack_log_fn fn, void *user)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_SIM;
    o.partitioning = DSTACK_PARTITION_GREEN_CTX;
    o.profile_cache_dir = cache_dir;
    o.log_fn = fn;
    o.log_user = user;
    o.log_level = DSTACK_LOG_DEBUG;
    dstack_ctx *ctx = NULL;
    assert_int_equal(dstack_create(&o, &ctx), DSTACK_OK);
    return ctx;
}

static dstack_status register_zoo(dstack_ctx *ctx, const char *name, uint32_t fixed_sms, uint32_t fixed_batch,
                                  dstack_model_info *info)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = name;
    d.seed = 1;
    d.slo_us = SLO_US;
    d.fixed_sm_count = fixed_sms;
    d.fixed_batch = fixed_batch;
    dstack_model *m = NULL;
    dstack_status st = dstack_register_model(ctx, &d, &m);
    if (st == DSTACK_OK) {
        dstack_model_info_init(info);
        assert_int_equal(dstack_model_info_get(ctx, m, info), DSTACK_OK);
    }
    return st;
}

typedef struct one_batch {
    uint64_t start_ns, end_ns;
    uint32_t n, batch;
} one_batch;

static void on_one(void *arg, uint32_t model, const dstack_completion *c, uint32_t samples)
{
    (void)model;
    (void)samples;
    one_batch *o = arg;
    o->start_ns = c->start_ns;
    o->end_ns = c->end_ns;
    o->batch = c->batch_size;
    o->n++;
}

static void model_config(ds_sched_model_config *mc, const sim_model *m, uint32_t batch, uint32_t units,
                         uint64_t slo_us)
{
    memset(mc, 0, sizeof *mc);
    const ds_graph *g = m->g;
    mc->plan = m->plan;
    ds_des_io_from_graph(g, mc);
    mc->batch_size = batch;
    mc->max_batch = 32;
    mc->unit_count = units;
    mc->slo_ns = slo_us * 1000;
    mc->latency = ds_latency_sched_ns;
    mc->latency_arg = m->lat;
}

/* Run one batch of `batch` requests on `units` units alone in the DES: its
 * modeled duration in us. */
static double des_one_batch_us(const char *name, uint32_t batch, uint32_t units)
{
    sim_model m;
    sim_model_open(&m, name, 32);
    /* static_spatial: the model keeps its share (dstack would lend it the
     * idle SMs, and the point is the time at the knee) */
    ds_des_config dc = {ds_policy_find(DSTACK_POLICY_STATIC_SPATIAL), m.ex, NULL, 1024};
    ds_des *d = NULL;
    assert_int_equal(ds_des_create(&dc, &d), DSTACK_OK);
    ds_sched_model_config mc;
    model_config(&mc, &m, batch, units, 0);
    assert_int_equal(ds_des_add_model(d, &mc), DSTACK_OK);
    ds_des_arrival tr[32];
    for (uint32_t i = 0; i < batch; i++)
        tr[i] = (ds_des_arrival){1000, 0, 1};
    one_batch o = {0};
    assert_int_equal(ds_des_run(d, tr, batch, 0, on_one, &o), DSTACK_OK);
    assert_int_equal(o.n, batch);
    assert_int_equal(o.batch, batch);
    ds_des_destroy(d);
    sim_model_close(&m);
    return (double)(o.end_ns - o.start_ns) / 1e3;
}

static void test_registration_plan_is_met_by_the_simulator_for_every_zoo_model(void **unused)
{
    (void)unused;
    dstack_ctx *ctx = sim_ctx("", NULL, NULL);
    for (const char *const *name = ds_zoo_names(); *name; name++) {
        dstack_model_info info;
        assert_int_equal(register_zoo(ctx, *name, 0, 0, &info), DSTACK_OK);
        /* units of 8 SMs, and every unit is the whole device, 132 SMs */
        assert_true(info.sm_count >= 8 && (info.sm_count <= 112 || info.sm_count == 132));
        assert_true(info.sm_count % 8 == 0 || info.sm_count == 132);
        assert_true(info.batch_size >= 1 && info.batch_size <= 32);
        assert_true(info.predicted_latency_us > 0);
        double us = des_one_batch_us(*name, info.batch_size, info.sm_count == 132 ? 15 : info.sm_count / 8);
        double rel = fabs(us - (double)info.predicted_latency_us) / us;
        if (!(rel <= 0.10))
            fail_msg("%s: predicted %llu us, the simulator took %.0f us (batch %u on %u SMs)", *name,
                     (unsigned long long)info.predicted_latency_us, us, info.batch_size, info.sm_count);
    }
    dstack_destroy(ctx);
}

static void test_registration_overrides_win(void **unused)
{
    (void)unused;
    dstack_ctx *ctx = sim_ctx("", NULL, NULL);
    dstack_model_info info;
    assert_int_equal(register_zoo(ctx, "resnet50", 36, 0, &info), DSTACK_OK);
    assert_int_equal(info.sm_count, 40); /* rounded up to 5 units of 8 */
    assert_int_equal(register_zoo(ctx, "resnet50", 0, 3, &info), DSTACK_OK);
    assert_int_equal(info.batch_size, 3);
    assert_int_equal(register_zoo(ctx, "resnet50", 120, 5, &info), DSTACK_OK);
    assert_int_equal(info.sm_count, 132); /* 15 units: every unit is the whole device */
    assert_int_equal(info.batch_size, 5);
    double us = des_one_batch_us("resnet50", 5, 15);
    assert_true(fabs(us - (double)info.predicted_latency_us) / us <= 0.10);
    dstack_destroy(ctx);
}

/* ---- the batch optimizer in virtual time ---- */

static ds_des_arrival *poisson(double rate0, double rate1, double step_s, double dur_s, size_t *n_out)
{
    size_t cap = 1024, n = 0;
    ds_des_arrival *tr = malloc(cap * sizeof *tr);
    double peak = fmax(rate0, rate1);
    for (double t = -log(0.5 + 0.5 * noise(0.999)) / peak; t < dur_s; t += -log(0.5 + 0.5 * noise(0.999)) / peak) {
        double r = t < step_s ? rate0 : rate1;
        if ((0.5 + 0.5 * noise(1.0)) * peak > r)
            continue;
        if (n == cap)
            tr = realloc(tr, (cap *= 2) * sizeof *tr);
        tr[n++] = (ds_des_arrival){(uint64_t)(t * 1e9), 0, 1};
    }
    *n_out = n;
    return tr;
}

typedef struct replan_state {
    const sim_model *m;
    double planned_rate;
    uint32_t batch, units, replans;
    uint64_t last_replan_ns;
} replan_state;

/* As the library's planner (and bench/sched_compare's): every 100 ms, a
 * rate that moved by 1.5x gets a new plan. */
static void replan(void *arg, ds_des *d, uint64_t now_ns)
{
    replan_state *rs = arg;
    double rate = ds_des_model_rate(d, 0);
    if (!ds_replan_due(rs->planned_rate, rate, 1.5))
        return;
    ds_model_plan p;
    if (ds_plan_model(rs->m->lat, SLO_US, rate, 0, 0, &p) != DSTACK_OK)
        return;
    assert_int_equal(ds_des_model_update(d, 0, p.batch, p.units), DSTACK_OK);
    rs->planned_rate = rate;
    rs->batch = p.batch;
    rs->units = p.units;
    rs->replans++;
    rs->last_replan_ns = now_ns;
}

typedef struct run_out {
    double attain;
    uint32_t batch;
    replan_state rs;
} run_out;

/* One DES run of resnet50 on a fresh simulator (the engine's virtual time
 * belongs to one driver). */
static void run_rate(double rate0, double rate1, double step_s, double dur_s, bool replanning, run_out *out)
{
    sim_model mm;
    sim_model *m = &mm;
    sim_model_open(m, "resnet50", 32);
    ds_des_config dc = {ds_policy_find(DSTACK_POLICY_DSTACK), m->ex, NULL, 4096};
    ds_des *d = NULL;
    assert_int_equal(ds_des_create(&dc, &d), DSTACK_OK);
    ds_model_plan p;
    assert_int_equal(ds_plan_model(m->lat, SLO_US, rate0, 0, 0, &p), DSTACK_OK);
    ds_sched_model_config mc;
    model_config(&mc, m, p.batch, p.units, SLO_US);
    assert_int_equal(ds_des_add_model(d, &mc), DSTACK_OK);
    memset(out, 0, sizeof *out);
    out->rs = (replan_state){m, rate0, p.batch, p.units, 0, 0};
    if (replanning)
        ds_des_set_replan(d, 100000000ull, replan, &out->rs);
    size_t n = 0;
    ds_des_arrival *tr = poisson(rate0, rate1, step_s, dur_s, &n);
    assert_int_equal(ds_des_run(d, tr, n, 0, NULL, NULL), DSTACK_OK);
    dstack_model_stats s;
    assert_int_equal(ds_des_stats(d, 0, &s), DSTACK_OK);
    uint64_t all = s.submitted + s.rejected_queue_full;
    out->attain = all ? (double)s.slo_met / (double)all : 1.0;
    out->batch = p.batch;
    free(tr);
    ds_des_destroy(d);
    sim_model_close(m);
    out->rs.m = NULL;
}

static void test_batch_grows_with_rate_and_keeps_the_slo(void **unused)
{
    (void)unused;
    static const double rates[] = {50, 200, 500, 1000, 1500};
    uint32_t prev = 0, first = 0, last = 0;
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        run_out o;
        run_rate(rates[i], rates[i], 1e9, 2.0, false, &o);
        print_message("resnet50 at %.0f req/s: batch %u on %u units, SLO attainment %.2f%%\n", rates[i], o.batch,
                      o.rs.units, 100 * o.attain);
        assert_true(o.batch >= prev);
        assert_true(o.attain >= 0.99);
        prev = o.batch;
        if (i == 0)
            first = o.batch;
        last = o.batch;
    }
    assert_true(last > first);
}

static void test_batch_replans_after_a_step_in_rate(void **unused)
{
    (void)unused;
    run_out o;
    run_rate(100, 1200, 1.0, 3.0, true, &o);
    print_message("step 100 -> 1200 req/s at 1 s: %u re-plans, last at %.2f s, batch %u -> %u, attainment %.2f%%\n",
                  o.rs.replans, (double)o.rs.last_replan_ns / 1e9, o.batch, o.rs.batch, 100 * o.attain);
    assert_true(o.rs.replans >= 1);
    assert_true(o.rs.last_replan_ns > 1000000000ull);
    assert_true(o.rs.batch > o.batch);
    assert_true(o.attain >= 0.99);
}

/* ---- joint plan of the D-STACK shares ---- */

/* ds_plan_joint, which must succeed; returns whether the shares fit */
static bool plan_joint_ok(const ds_plan_request *req, uint32_t n, uint32_t n_units, double headroom, ds_model_plan *out)
{
    bool fits = !n;
    assert_int_equal(ds_plan_joint(req, n, n_units, headroom, out, &fits), DSTACK_OK);
    return fits;
}

static const char *const MIX[] = {"resnet50", "mobilenet_v2", "vgg19", "alexnet"};
#define N_MIX 4

static void mix_open(sim_model *m)
{
    for (int i = 0; i < N_MIX; i++)
        sim_model_open(&m[i], MIX[i], 32);
}

static void mix_close(sim_model *m)
{
    for (int i = 0; i < N_MIX; i++)
        sim_model_close(&m[i]);
}

/* The joint plan keeps up with DS_PLAN_JOINT_MIN_MARGIN x `rate` (the
 * measured one) within the SLO while the queue is full: its batch runs in
 * half the SLO (room for the batch ahead) and, on its units, some batch
 * that runs in DS_PLAN_RUN_SHARE of the SLO (every model of the mix has
 * one) serves at least that; the batch formulation's fill term is the
 * policy timer's to bound. */
static void assert_keeps_up(const sim_model *m, const ds_model_plan *p, double rate)
{
    double l = ds_latency_us(m->lat, p->batch, p->units);
    assert_true(p->batch >= 1 && p->units >= 1);
    assert_true(2 * l <= SLO_US);
    double best = 0;
    for (uint32_t b = 1; b <= m->lat->max_batch; b++) {
        double lb = ds_latency_us(m->lat, b, p->units);
        if (lb <= DS_PLAN_RUN_SHARE * SLO_US && b / lb * 1e6 > best)
            best = b / lb * 1e6;
    }
    assert_true(best >= DS_PLAN_JOINT_MIN_MARGIN * rate);
    /* and it is no less than the fewest units that keep up */
    ds_model_plan least;
    assert_true(ds_plan_min_units(m->lat, SLO_US, rate, &least) <= p->units);
}

static void test_joint_plan_fits_the_device_where_plans_alone_do_not(void **unused)
{
    (void)unused;
    sim_model m[N_MIX];
    mix_open(m);
    uint32_t n_units = m[0].lat->n_units, found = 0;
    for (double rate = 100; rate <= 400; rate += 25) {
        ds_plan_request req[N_MIX];
        ds_model_plan joint[N_MIX], alone[N_MIX];
        uint32_t sum_j = 0, sum_a = 0;
        for (int i = 0; i < N_MIX; i++) {
            req[i] = (ds_plan_request){m[i].lat, SLO_US, rate, 0};
            assert_int_equal(ds_plan_model(m[i].lat, SLO_US, rate * DS_PLAN_HEADROOM, 0, 0, &alone[i]), DSTACK_OK);
            sum_a += alone[i].units;
        }
        bool fits = plan_joint_ok(req, N_MIX, n_units, DS_PLAN_HEADROOM, joint);
        for (int i = 0; i < N_MIX; i++)
            sum_j += joint[i].units;
        print_message("%.0f req/s each: alone %u+%u+%u+%u = %u units, joint %u+%u+%u+%u = %u (%s)\n", rate,
                      alone[0].units, alone[1].units, alone[2].units, alone[3].units, sum_a, joint[0].units,
                      joint[1].units, joint[2].units, joint[3].units, sum_j, fits ? "fits" : "time-shared");
        if (!fits) {
            /* then every model is planned alone, as ds_plan_model does */
            for (int i = 0; i < N_MIX; i++) {
                assert_int_equal(joint[i].units, alone[i].units);
                assert_int_equal(joint[i].batch, alone[i].batch);
            }
            continue;
        }
        assert_true(sum_j <= n_units);
        for (int i = 0; i < N_MIX; i++)
            assert_keeps_up(&m[i], &joint[i], rate);
        found += sum_a > n_units;
    }
    /* the point of planning together: some load fits jointly, not alone */
    assert_true(found > 0);
    /* and one beyond the device does not fit at all */
    ds_plan_request req[N_MIX];
    ds_model_plan out[N_MIX];
    for (int i = 0; i < N_MIX; i++)
        req[i] = (ds_plan_request){m[i].lat, SLO_US, 5000, 0};
    assert_false(plan_joint_ok(req, N_MIX, n_units, DS_PLAN_HEADROOM, out));
    mix_close(m);
}

/* A joint plan is a fit only with DS_PLAN_JOINT_MIN_MARGIN to spare: a
 * share that carries the mean rate and no more leaves Poisson arrivals no
 * room (then the models are planned alone and time-share). */
static void test_joint_plan_keeps_a_margin_over_the_rate(void **unused)
{
    (void)unused;
    sim_model m[N_MIX];
    mix_open(m);
    bool found = false;
    for (double r = 50; r < 5000 && !found; r *= 1.02) {
        ds_model_plan p1, p2, out;
        uint32_t u1 = ds_plan_min_units(m[0].lat, SLO_US, r, &p1);
        uint32_t u2 = ds_plan_min_units(m[0].lat, SLO_US, r * DS_PLAN_JOINT_MIN_MARGIN, &p2);
        if (!u1 || !u2 || u1 == u2)
            continue;
        found = true;
        ds_plan_request req = {m[0].lat, SLO_US, r, 0};
        /* headroom 1: u1 units keep up with the rate itself, not with the margin */
        assert_false(plan_joint_ok(&req, 1, u1, 1.0, &out));
        assert_true(plan_joint_ok(&req, 1, u2, 1.0, &out));
        assert_int_equal(out.units, u2);
        /* the margin is over the rate, not over the headroom on top of it */
        assert_true(plan_joint_ok(&req, 1, u2, DS_PLAN_HEADROOM, &out));
        assert_int_equal(out.units, u2);
        assert_false(plan_joint_ok(&req, 1, u1, DS_PLAN_HEADROOM, &out));
        print_message("resnet50 at %.0f req/s: %u units keep up, %u keep %.1fx to spare\n", r, u1, u2,
                      DS_PLAN_JOINT_MIN_MARGIN);
    }
    assert_true(found);
    mix_close(m);
}

/* A model whose fastest batch runs between DS_PLAN_RUN_SHARE and half of
 * its SLO is sized with the hard limit (2 L <= SLO): it neither fits
 * nowhere nor keeps its whole mix from a joint plan. */
static void test_joint_plan_takes_a_model_near_its_slo(void **unused)
{
    (void)unused;
    static const char *const names[] = {"densenet121", "resnet18", "mobilenet_v2", "alexnet"};
    sim_model m[4];
    for (int i = 0; i < 4; i++)
        sim_model_open(&m[i], names[i], 32);
    double fastest = INFINITY;
    for (uint32_t u = 1; u <= m[0].lat->n_units; u++)
        fastest = fmin(fastest, ds_latency_us(m[0].lat, 1, u));
    /* an SLO its fastest batch meets at 2 L, not at DS_PLAN_RUN_SHARE */
    uint64_t slo = (uint64_t)ceil(fastest / (0.5 * (DS_PLAN_RUN_SHARE + 0.5)));
    assert_true(fastest > DS_PLAN_RUN_SHARE * (double)slo && 2 * fastest <= (double)slo);
    ds_plan_request req[4];
    ds_model_plan out[4];
    req[0] = (ds_plan_request){m[0].lat, slo, 20, 0};
    for (int i = 1; i < 4; i++)
        req[i] = (ds_plan_request){m[i].lat, SLO_US, 20, 0};
    assert_true(plan_joint_ok(req, 4, m[0].lat->n_units, DS_PLAN_HEADROOM, out));
    uint32_t sum = 0;
    for (int i = 0; i < 4; i++)
        sum += out[i].units;
    assert_true(sum <= m[0].lat->n_units);
    assert_true(2 * ds_latency_us(m[0].lat, out[0].batch, out[0].units) <= (double)slo);
    ds_model_plan least;
    assert_true(ds_plan_min_units(m[0].lat, slo, 20, &least) > 0);
    print_message("densenet121 at a %llu us SLO (fastest batch %.0f us): %u units, batch %u\n",
                  (unsigned long long)slo, fastest, out[0].units, out[0].batch);
    for (int i = 0; i < 4; i++)
        sim_model_close(&m[i]);
}

static void test_joint_plan_spreads_spare_units_and_counts_models_left_out(void **unused)
{
    (void)unused;
    sim_model m[N_MIX];
    mix_open(m);
    uint32_t n_units = m[0].lat->n_units;
    ds_plan_request req[N_MIX + 1];
    ds_model_plan out[N_MIX + 1], least;
    for (int i = 0; i < N_MIX; i++)
        req[i] = (ds_plan_request){m[i].lat, SLO_US, 20, 0};
    /* a light load: the shares grow past the least that keeps up, and
     * still fit */
    assert_true(plan_joint_ok(req, N_MIX, n_units, DS_PLAN_HEADROOM, out));
    uint32_t sum = 0, sum_least = 0;
    for (int i = 0; i < N_MIX; i++) {
        assert_true(ds_plan_min_units(m[i].lat, SLO_US, 20 * DS_PLAN_HEADROOM, &least) > 0);
        assert_true(out[i].units >= least.units);
        assert_keeps_up(&m[i], &out[i], 20);
        sum += out[i].units;
        sum_least += least.units;
    }
    print_message("20 req/s each: least shares add up to %u units, joint plan %u of %u\n", sum_least, sum, n_units);
    assert_true(sum <= n_units);
    assert_true(sum > sum_least);
    /* a model without a latency model holds 6 units: the rest fit in 9;
     * an idle model (rate 0) is planned too */
    req[N_MIX] = (ds_plan_request){NULL, 0, 0, 6};
    req[1].rate_per_s = 0;
    assert_true(plan_joint_ok(req, N_MIX + 1, n_units, DS_PLAN_HEADROOM, out));
    sum = 0;
    for (int i = 0; i < N_MIX; i++) {
        assert_true(out[i].units >= 1 && out[i].batch >= 1);
        sum += out[i].units;
    }
    assert_int_equal(out[N_MIX].units, 6);
    assert_true(sum <= n_units - 6);
    /* no room left for the others: not a fit */
    req[N_MIX].units = n_units;
    assert_false(plan_joint_ok(req, N_MIX + 1, n_units, DS_PLAN_HEADROOM, out));
    assert_int_equal(out[N_MIX].units, n_units);
    /* units held that would wrap a 32-bit sum, a device of UINT32_MAX
     * units: no fit is made up from an overflow or a sentinel */
    req[N_MIX].units = UINT32_MAX;
    assert_false(plan_joint_ok(req, N_MIX + 1, n_units, DS_PLAN_HEADROOM, out));
    req[N_MIX].units = 6;
    req[0].rate_per_s = INFINITY; /* no share serves that */
    assert_false(plan_joint_ok(req, N_MIX + 1, UINT32_MAX, DS_PLAN_HEADROOM, out));
    for (int i = 0; i < N_MIX; i++)
        assert_true(out[i].units >= 1 && out[i].batch >= 1);
    /* NaN rate: idle; NaN or negative headroom: none */
    req[0].rate_per_s = NAN;
    assert_true(plan_joint_ok(req, N_MIX + 1, n_units, NAN, out));
    assert_true(plan_joint_ok(req, N_MIX + 1, n_units, -3, out));
    for (int i = 0; i < N_MIX; i++)
        assert_keeps_up(&m[i], &out[i], i == 0 ? DS_IDLE_RATE : i == 1 ? DS_IDLE_RATE : 20);
    /* an idle (or unknown) model keeps registration's batch, for a queue
     * that never empties, on its idle share */
    ds_model_plan sat;
    assert_int_equal(ds_plan_model(m[1].lat, SLO_US, INFINITY, out[1].units, 0, &sat), DSTACK_OK);
    assert_int_equal(out[1].batch, sat.batch);
    /* an infinite headroom counts as none: real shares, not 1 unit each */
    for (int i = 0; i < N_MIX; i++)
        req[i].rate_per_s = 200;
    assert_true(plan_joint_ok(req, N_MIX, n_units, INFINITY, out));
    for (int i = 0; i < N_MIX; i++)
        assert_keeps_up(&m[i], &out[i], 200);
    /* no memory for the table: OUT_OF_MEMORY, no fit, every plan written */
    bool fits = true;
    memset(out, 0, sizeof out);
    ds_fault_arm(1, DS_FAULT_ALLOC, false);
    assert_int_equal(ds_plan_joint(req, N_MIX, n_units, DS_PLAN_HEADROOM, out, &fits), DSTACK_ERR_OUT_OF_MEMORY);
    assert_true(ds_fault_fired());
    ds_fault_disarm();
    assert_false(fits);
    for (int i = 0; i < N_MIX; i++)
        assert_true(out[i].units >= 1 && out[i].batch >= 1);
    assert_false(ds_replan_due(0.5, 0.3, 1.5)); /* both idle: nothing moved */
    assert_true(ds_replan_due(0.5, 30, 1.5));
    mix_close(m);
}

/* ---- profile cache at registration ---- */

typedef struct log_tally {
    uint32_t profiling, hits, warns, misses;
} log_tally;

static void tally_log(void *user, dstack_log_level level, const char *msg)
{
    log_tally *t = user;
    t->profiling += strncmp(msg, "profiling ", 10) == 0 || strncmp(msg, "profiled ", 9) == 0 ||
                    (strncmp(msg, "profile ", 8) == 0 && strncmp(msg, "profile cache", 13) != 0);
    t->hits += strstr(msg, "profile cache hit") != NULL;
    t->misses += strstr(msg, "profile cache miss") != NULL;
    t->warns += level == DSTACK_LOG_WARN && strstr(msg, "ignored") != NULL;
}

/* Count the executor's profiling queries: a wrapper around the sim's ops. */
static ds_executor_ops counting_ops;
static const ds_executor_ops *real_ops;
static uint32_t n_model_time;
static dstack_status counting_model_time(ds_executor *ex, ds_exec_plan *p, uint32_t b, uint32_t u, uint64_t *ns)
{
    n_model_time++;
    return real_ops->model_time_ns(ex, p, b, u, ns);
}

static dstack_ctx *counting_ctx(const char *dir, log_tally *t)
{
    dstack_ctx *ctx = sim_ctx(dir, tally_log, t);
    real_ops = ctx->exec->ops;
    counting_ops = *real_ops;
    counting_ops.model_time_ns = counting_model_time;
    ctx->exec->ops = &counting_ops;
    return ctx;
}

static void counting_ctx_destroy(dstack_ctx *ctx)
{
    ctx->exec->ops = real_ops;
    dstack_destroy(ctx);
}

static char cache_dir[256];

static void fresh_cache_dir(void)
{
    snprintf(cache_dir, sizeof cache_dir, "/tmp/dstack-test-plan-XXXXXX");
    assert_non_null(mkdtemp(cache_dir));
}

static void remove_cache_dir(void)
{
    DIR *dir = opendir(cache_dir);
    struct dirent *e;
    char p[512];
    while (dir && (e = readdir(dir)))
        if (e->d_name[0] != '.' || strlen(e->d_name) > 2) {
            snprintf(p, sizeof p, "%s/%s", cache_dir, e->d_name);
            unlink(p);
        }
    if (dir)
        closedir(dir);
    rmdir(cache_dir);
}

/* The one entry file in the cache dir. */
static void entry_path(char *out, size_t n)
{
    DIR *dir = opendir(cache_dir);
    struct dirent *e;
    out[0] = 0;
    while ((e = readdir(dir)))
        if (strstr(e->d_name, ".dsprof") && e->d_name[0] != '.')
            snprintf(out, n, "%s/%s", cache_dir, e->d_name);
    closedir(dir);
    assert_true(out[0]);
}

static void register_counted(log_tally *t, dstack_model_info *info)
{
    memset(t, 0, sizeof *t);
    n_model_time = 0;
    dstack_ctx *ctx = counting_ctx(cache_dir, t);
    assert_int_equal(register_zoo(ctx, "resnet50", 0, 0, info), DSTACK_OK);
    counting_ctx_destroy(ctx);
}

static void test_cached_registration_skips_all_profiling(void **unused)
{
    (void)unused;
    fresh_cache_dir();
    log_tally t;
    dstack_model_info first, again;
    register_counted(&t, &first);
    assert_true(n_model_time > 0);
    assert_true(t.profiling > 0);
    assert_int_equal(t.misses, 1);
    assert_int_equal(t.hits, 0);
    register_counted(&t, &again);
    assert_int_equal(n_model_time, 0);
    assert_int_equal(t.profiling, 0);
    assert_int_equal(t.hits, 1);
    assert_int_equal(again.sm_count, first.sm_count);
    assert_int_equal(again.batch_size, first.batch_size);
    assert_int_equal(again.predicted_latency_us, first.predicted_latency_us);
    remove_cache_dir();
}

typedef void (*damage_fn)(const char *path);

static void truncate_entry(const char *path)
{
    assert_int_equal(truncate(path, 100), 0);
}

static void flip_a_bit(const char *path)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, -20, SEEK_END);
    int c = fgetc(f);
    fseek(f, -20, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
}

/* Another format version in the header (offset 8, u32). */
static void other_version(const char *path)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 8, SEEK_SET);
    unsigned char v[4] = {99, 0, 0, 0};
    fwrite(v, 1, 4, f);
    fclose(f);
}

/* A well-formed entry (right key, right checksum) whose payload is not a
 * latency table: the cache trusts it, the decoder must not. */
static void bad_payload(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char head[88], key[4096];
    assert_int_equal(fread(head, 1, 88, f), 88);
    uint32_t k = (uint32_t)head[12] | (uint32_t)head[13] << 8 | (uint32_t)head[14] << 16 | (uint32_t)head[15] << 24;
    assert_true(k <= sizeof key);
    assert_int_equal(fread(key, 1, k, f), k);
    fclose(f);
    static const char junk[] = "DSLM but not really a latency table";
    memset(head + 16, 0, 8);
    head[16] = (unsigned char)sizeof junk;
    ds_sha256(junk, sizeof junk, head + 56);
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(head, 1, 88, f);
    fwrite(key, 1, k, f);
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
}

static void test_damaged_cache_entry_is_ignored_logged_and_rebuilt(void **unused)
{
    (void)unused;
    static const damage_fn damages[] = {truncate_entry, flip_a_bit, other_version, bad_payload};
    for (size_t i = 0; i < sizeof damages / sizeof damages[0]; i++) {
        fresh_cache_dir();
        log_tally t;
        dstack_model_info first, again;
        register_counted(&t, &first);
        char path[600];
        entry_path(path, sizeof path);
        damages[i](path);
        register_counted(&t, &again);
        assert_int_equal(t.warns, 1);
        assert_int_equal(t.hits, 0);
        assert_true(n_model_time > 0); /* profiled again */
        assert_int_equal(again.batch_size, first.batch_size);
        assert_int_equal(again.predicted_latency_us, first.predicted_latency_us);
        register_counted(&t, &again); /* and the rebuilt entry is good */
        assert_int_equal(t.hits, 1);
        assert_int_equal(n_model_time, 0);
        remove_cache_dir();
    }
}

static void test_cache_off_profiles_every_time(void **unused)
{
    (void)unused;
    log_tally t = {0};
    dstack_ctx *ctx = counting_ctx("", &t);
    dstack_model_info info;
    n_model_time = 0;
    assert_int_equal(register_zoo(ctx, "alexnet", 0, 0, &info), DSTACK_OK);
    uint32_t once = n_model_time;
    assert_int_equal(register_zoo(ctx, "alexnet", 0, 0, &info), DSTACK_OK);
    assert_int_equal(n_model_time, 2 * once);
    assert_int_equal(t.hits + t.misses, 0);
    counting_ctx_destroy(ctx);
}

/* util/units.h: every unit is the whole device under green contexts only;
 * an MPS client's one unit is its share, not the device. */
static void test_units_sms_rule(void **unused)
{
    (void)unused;
    uint32_t g = ds_units_whole_sms(DSTACK_PARTITION_GREEN_CTX, 132, 8, 15);
    assert_int_equal(g, 132);
    assert_int_equal(ds_units_sms(g, 8, 15, 15), 132);
    assert_int_equal(ds_units_sms(g, 8, 15, 14), 112);
    assert_int_equal(ds_units_sms(g, 8, 15, 1), 8);
    assert_int_equal(ds_units_leftover(DSTACK_PARTITION_GREEN_CTX, 132, 8, 15), 12);
    assert_int_equal(ds_units_whole_sms(DSTACK_PARTITION_GREEN_CTX, 128, 8, 16), 128); /* none left over */
    assert_int_equal(ds_units_whole_sms(DSTACK_PARTITION_NONE, 132, 132, 1), 132);
    uint32_t mps = ds_units_whole_sms(DSTACK_PARTITION_MPS, 132, 66, 1);
    assert_int_equal(mps, 66);
    assert_int_equal(ds_units_sms(mps, 66, 1, 1), 66);
    assert_int_equal(ds_units_leftover(DSTACK_PARTITION_MPS, 132, 66, 1), 0);
    assert_int_equal(ds_units_whole_sms(DSTACK_PARTITION_NONE, 4, 4, 1), 4); /* cpu: threads */
    /* where a range lies: the SMs left over join the ranges that end at the
     * last unit when the device lets them (tail), else only every unit */
    static const dstack_partitioning G = DSTACK_PARTITION_GREEN_CTX;
    assert_int_equal(ds_units_span_sms(G, 132, 8, 15, true, 14, 1), 20);
    assert_int_equal(ds_units_span_sms(G, 132, 8, 15, true, 4, 11), 100);
    assert_int_equal(ds_units_span_sms(G, 132, 8, 15, true, 3, 11), 88);
    assert_int_equal(ds_units_span_sms(G, 132, 8, 15, true, 0, 1), 8);
    assert_int_equal(ds_units_span_sms(G, 132, 8, 15, true, 0, 15), 132);
    assert_int_equal(ds_units_span_sms(G, 132, 8, 15, false, 14, 1), 8);
    assert_int_equal(ds_units_span_sms(G, 132, 8, 15, false, 0, 15), 132);
    assert_int_equal(ds_units_span_sms(G, 128, 8, 16, true, 15, 1), 8); /* none left over */
    assert_int_equal(ds_units_span_sms(DSTACK_PARTITION_MPS, 132, 66, 1, true, 0, 1), 66);
}

static void test_latency_model_blob_round_trips_and_refuses_damage(void **unused)
{
    (void)unused;
    sim_model m;
    sim_model_open(&m, "alexnet", 16);
    void *blob = NULL;
    size_t n = 0;
    assert_int_equal(ds_latency_model_encode(m.lat, &blob, &n), DSTACK_OK);
    ds_latency_model *back = NULL;
    assert_int_equal(ds_latency_model_decode(blob, n, &back), DSTACK_OK);
    assert_int_equal(back->n_b, m.lat->n_b);
    assert_int_equal(back->n_units, m.lat->n_units);
    assert_int_equal(back->sm_count, 132);
    assert_int_equal(back->sm_count, m.lat->sm_count);
    for (uint32_t i = 0; i < back->n_b; i++)
        for (uint32_t u = 0; u < back->n_units; u++)
            assert_true(back->us[i][u] == m.lat->us[i][u]);
    free(back);
    assert_int_equal(ds_latency_model_decode(blob, n - 1, &back), DSTACK_ERR_PARSE);
    assert_int_equal(ds_latency_model_decode(blob, 10, &back), DSTACK_ERR_PARSE);
    unsigned char *p = blob;
    p[4] = 1; /* layout version 1: every unit was 120 SMs then, not the whole device */
    assert_int_equal(ds_latency_model_decode(blob, n, &back), DSTACK_ERR_PARSE);
    p[4] = 2;
    p[20] = 100; /* sm_count 100: fewer than its 15 units of 8 hold */
    assert_int_equal(ds_latency_model_decode(blob, n, &back), DSTACK_ERR_PARSE);
    p[20] = 132;
    assert_int_equal(ds_latency_model_decode(blob, n, &back), DSTACK_OK);
    free(back);
    memset(p + n - 8, 0xff, 8); /* a NaN latency */
    assert_int_equal(ds_latency_model_decode(blob, n, &back), DSTACK_ERR_PARSE);
    free(blob);
    sim_model_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_analytic_knee_equals_swept_knee_for_every_zoo_model),
        cmocka_unit_test(test_analytic_knee_refuses_bad_arguments),
        cmocka_unit_test(test_latency_fit_3x3_predicts_held_out_points_within_10_percent),
        cmocka_unit_test(test_registration_plan_is_met_by_the_simulator_for_every_zoo_model),
        cmocka_unit_test(test_registration_overrides_win),
        cmocka_unit_test(test_batch_grows_with_rate_and_keeps_the_slo),
        cmocka_unit_test(test_batch_replans_after_a_step_in_rate),
        cmocka_unit_test(test_joint_plan_fits_the_device_where_plans_alone_do_not),
        cmocka_unit_test(test_joint_plan_keeps_a_margin_over_the_rate),
        cmocka_unit_test(test_joint_plan_takes_a_model_near_its_slo),
        cmocka_unit_test(test_joint_plan_spreads_spare_units_and_counts_models_left_out),
        cmocka_unit_test(test_cached_registration_skips_all_profiling),
        cmocka_unit_test(test_damaged_cache_entry_is_ignored_logged_and_rebuilt),
        cmocka_unit_test(test_cache_off_profiles_every_time),
        cmocka_unit_test(test_latency_model_blob_round_trips_and_refuses_damage),
        cmocka_unit_test(test_units_sms_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
