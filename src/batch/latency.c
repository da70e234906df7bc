/* latency.c - see latency.h. */
#include "batch/latency.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch/batch.h"
#include "knee/knee.h"
#include "profile/profile.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/log.h"
#include "util/units.h"

static double column(const ds_latency_model *m, uint32_t i, uint32_t u) { return m->us[i][u - 1]; }

double ds_latency_us(const ds_latency_model *m, uint32_t b, uint32_t u)
{
    if (m->n_b == 0)
        return 0.0;
    if (u < 1)
        u = 1;
    if (u > m->n_units)
        u = m->n_units;
    if (b < 1)
        b = 1;
    if (m->n_b == 1)
        return column(m, 0, u) * (double)b / (double)m->b[0];
    uint32_t i = 0;
    while (i + 2 < m->n_b && m->b[i + 1] < b)
        i++;
    double b0 = m->b[i], b1 = m->b[i + 1], l0 = column(m, i, u), l1 = column(m, i + 1, u);
    double l = l0 + (l1 - l0) * ((double)b - b0) / (b1 - b0);
    return l > 0 ? l : l0 * (double)b / b0;
}

uint64_t ds_latency_sched_ns(const void *arg, uint32_t samples, uint32_t units)
{
    return (uint64_t)(ds_latency_us(arg, samples, units) * 1e3);
}

dstack_status ds_latency_fit(const double *x, const double *y, size_t n, double *a, double *c)
{
    if (n == 0 || !x || !y || !a || !c)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "latency fit: no points");
    /* weights 1/y^2: least squares on the relative error (see latency.h) */
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(y[i] > 0) || !isfinite(y[i]) || !isfinite(x[i]))
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "latency fit: measured point %zu is %g", i, y[i]);
        double w = 1.0 / (y[i] * y[i]);
        sw += w;
        sx += w * x[i];
        sy += w * y[i];
        sxx += w * x[i] * x[i];
        sxy += w * x[i] * y[i];
    }
    double det = sw * sxx - sx * sx;
    if (n == 1 || fabs(det) < 1e-12 * sw * sxx) {
        if (sxx <= 0)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "latency fit: singular");
        *a = sxy / sxx;
        *c = 0;
        return DSTACK_OK;
    }
    *a = (sw * sxy - sx * sy) / det;
    *c = (sy - *a * sx) / sw;
    return DSTACK_OK;
}

bool ds_replan_due(double planned, double measured, double factor)
{
    if (!(measured > 0))
        return false;
    if (!(planned > 0) || isinf(planned))
        return true;
    /* below one request per second a model is idle: a decaying rate
     * (1.5x down every 0.4 s with a 1 s window) re-plans nothing */
    measured = measured > DS_IDLE_RATE ? measured : DS_IDLE_RATE;
    planned = planned > DS_IDLE_RATE ? planned : DS_IDLE_RATE;
    return measured > planned * factor || measured * factor < planned;
}

/* SMs of u units of m's device; a table without sm_count (made by hand)
 * takes every unit as n_units x unit_sms. */
static uint32_t lm_sms(const ds_latency_model *m, uint32_t u)
{
    uint32_t held = m->n_units * m->unit_sms;
    return ds_units_sms(m->sm_count > held ? m->sm_count : held, m->unit_sms, m->n_units, u);
}

uint32_t ds_latency_knee_units(const ds_latency_model *m, uint32_t b)
{
    if (m->n_units <= 1 || m->unit_sms == 0)
        return m->n_units ? m->n_units : 1;
    uint32_t sms[64];
    double lat[64];
    for (uint32_t u = 1; u <= m->n_units; u++) {
        sms[u - 1] = lm_sms(m, u);
        lat[u - 1] = ds_latency_us(m, b, u);
    }
    ds_knee_result r;
    if (ds_knee_from_sweep(sms, lat, m->n_units, NULL, &r) != DSTACK_OK)
        return m->n_units;
    return ds_knee_units(r.knee_sms, m->unit_sms, m->n_units);
}

typedef struct at_share {
    const ds_latency_model *m;
    uint32_t units;
} at_share;

static double latency_at_share(void *user, uint32_t b)
{
    const at_share *s = user;
    return ds_latency_us(s->m, b, s->units);
}

/* Is plan x better than y? One that meets the SLO and keeps up with the
 * rate first; then throughput per SM (per unit), then the smaller share.
 * Among plans that cannot keep up, the most throughput; among infeasible
 * ones, the fastest. */
static bool better(const ds_batch_plan *x, uint32_t xu, const ds_batch_plan *y, uint32_t yu)
{
    bool fx = !(x->flags & DS_BATCH_INFEASIBLE), fy = !(y->flags & DS_BATCH_INFEASIBLE);
    if (fx != fy)
        return fx;
    if (!fx)
        return x->latency_us < y->latency_us; /* infeasible: the fastest */
    bool kx = !(x->flags & DS_BATCH_OVERLOADED), ky = !(y->flags & DS_BATCH_OVERLOADED);
    if (kx != ky)
        return kx;
    if (!kx)
        return x->throughput_per_s > y->throughput_per_s;
    double px = x->throughput_per_s / xu, py = y->throughput_per_s / yu;
    if (px != py)
        return px > py;
    return xu < yu;
}

dstack_status ds_plan_model(const ds_latency_model *m, uint64_t slo_us, double rate, uint32_t fixed_units,
                            uint32_t fixed_batch, ds_model_plan *out)
{
    if (m->n_b == 0 || m->n_units == 0 || m->max_batch == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "plan: empty latency model");
    uint32_t cand[DS_LAT_MAX_GRID + 1], n_cand = 0;
    if (fixed_units) {
        cand[n_cand++] = fixed_units < m->n_units ? fixed_units : m->n_units;
    } else if (fixed_batch) {
        cand[n_cand++] = ds_latency_knee_units(m, fixed_batch);
    } else {
        /* every share from the smallest knee of any batch up: a larger
         * share only wins when the knee cannot keep up with the rate */
        uint32_t lo = m->n_units;
        for (uint32_t i = 0; i < m->n_b; i++) {
            uint32_t k = ds_latency_knee_units(m, m->b[i]);
            lo = k < lo ? k : lo;
        }
        for (uint32_t u = lo; u <= m->n_units && n_cand < DS_LAT_MAX_GRID; u++)
            cand[n_cand++] = u;
    }
    ds_batch_plan best = {0};
    uint32_t best_u = 0;
    for (uint32_t j = 0; j < n_cand; j++) {
        at_share s = {m, cand[j]};
        ds_batch_plan p;
        ds_batch_query q = {fixed_batch ? fixed_batch : m->max_batch, slo_us, rate, m->unit_sms ? lm_sms(m, cand[j]) : cand[j]};
        dstack_status st = ds_batch_pick_for_slo(&q, latency_at_share, &s, &p);
        if (st != DSTACK_OK)
            return st;
        if (!isfinite(rate))
            p.flags &= ~DS_BATCH_OVERLOADED; /* a saturated queue: no rate to keep up with */
        if (fixed_batch) {
            p.batch = fixed_batch;
            p.latency_us = ds_latency_us(m, fixed_batch, cand[j]);
            p.throughput_per_s = fixed_batch / (p.latency_us / 1e6);
        }
        if (best_u == 0 || better(&p, cand[j], &best, best_u)) {
            best = p;
            best_u = cand[j];
        }
    }
    out->units = best_u;
    out->batch = best.batch;
    out->latency_us = ds_latency_us(m, best.batch, best_u);
    out->knee_units = ds_latency_knee_units(m, best.batch);
    out->flags = best.flags;
    return DSTACK_OK;
}

/* The fraction of the SLO a batch of m may run in a saturated share:
 * DS_PLAN_RUN_SHARE when some batch on some share runs that fast, else
 * half (2 L <= SLO, the hard limit the policy checks): a model whose
 * fastest batch lies between the two still gets a share, and its mix a
 * joint plan. */
static double run_share(const ds_latency_model *m, uint64_t slo_us)
{
    for (uint32_t u = 1; u <= m->n_units; u++) {
        double l = ds_latency_us(m, 1, u);
        if (l > 0 && l <= DS_PLAN_RUN_SHARE * (double)slo_us)
            return DS_PLAN_RUN_SHARE;
    }
    return 0.5;
}

/* The most requests/s a share of u units serves within the SLO while its
 * queue never empties: the largest b / L(b, u) over the batches with
 * L(b, u) <= run_share x SLO (room for the batch ahead, its own run and
 * some slack, latency.h); the batch in *batch. 0 when no batch fits. */
static double saturated_rps(const ds_latency_model *m, uint64_t slo_us, double share, uint32_t u, uint32_t *batch)
{
    double best = 0;
    *batch = 1;
    for (uint32_t b = 1; b <= m->max_batch; b++) {
        double l = ds_latency_us(m, b, u);
        if (!(l > 0) || (slo_us && l > share * (double)slo_us))
            continue; /* L need not grow monotonically with b: keep looking */
        double t = b / l * 1e6;
        if (t > best) {
            best = t;
            *batch = b;
        }
    }
    return best;
}

/* Model m's plan on u units for `rate`: the batch formulation's batch
 * (batch.h) when it keeps up, else the batch that serves the most while
 * the queue is full (the policy's timer starts a batch that fills slower
 * than planned at its deadline - 2 L, so the fill never makes a request
 * late, and a queue that builds up fills the batch). */
static void plan_at_units(const ds_latency_model *m, uint64_t slo_us, double rate, uint32_t u, ds_model_plan *out)
{
    if (ds_plan_model(m, slo_us, rate, u, 0, out) == DSTACK_OK &&
        !(out->flags & (DS_BATCH_INFEASIBLE | DS_BATCH_OVERLOADED)))
        return;
    uint32_t b;
    saturated_rps(m, slo_us, run_share(m, slo_us), u, &b);
    out->units = u;
    out->batch = b;
    out->latency_us = ds_latency_us(m, b, u);
    out->knee_units = ds_latency_knee_units(m, b);
    out->flags = 0;
}

/* Units of m the saturated-rate table holds (at most 64, the table's row). */
static uint32_t table_units(const ds_latency_model *m) { return m->n_units < 64 ? m->n_units : 64; }

/* cap[u - 1] = saturated_rps(m, slo_us, u) for u = 1..table_units(m). */
static void saturated_table(const ds_latency_model *m, uint64_t slo_us, double *cap)
{
    double share = run_share(m, slo_us);
    for (uint32_t u = 1; u <= table_units(m); u++) {
        uint32_t b;
        cap[u - 1] = saturated_rps(m, slo_us, share, u, &b);
    }
}

/* The fewest of `top` units whose saturated rate cap[u - 1] reaches want;
 * 0 when none does. */
static uint32_t fewest_units(const double *cap, uint32_t top, double want)
{
    for (uint32_t u = 1; u <= top; u++)
        if (cap[u - 1] >= want)
            return u;
    return 0;
}

uint32_t ds_plan_min_units(const ds_latency_model *m, uint64_t slo_us, double rate, ds_model_plan *out)
{
    if (m->n_b == 0 || m->n_units == 0 || m->max_batch == 0 || !(rate > 0))
        return 0;
    double cap[64];
    saturated_table(m, slo_us, cap);
    uint32_t u = fewest_units(cap, table_units(m), rate);
    if (u)
        plan_at_units(m, slo_us, rate, u, out);
    return u;
}


static bool joint_member(const ds_plan_request *r) { return r->lat && r->slo_us; }

static double joint_rate(const ds_plan_request *r) { return r->rate_per_s >= DS_IDLE_RATE ? r->rate_per_s : DS_IDLE_RATE; }

/* Units the joint plan needs at margin s: for every planned model the
 * fewest units whose saturated rate (cap[i][u - 1]) is at least
 * rate x headroom x s, in units[i]; plus what the others hold. In 64 bits:
 * UINT64_MAX when some model fits nowhere. */
static uint64_t joint_units(const ds_plan_request *req, uint32_t n, const double *cap, double headroom, double s,
                            uint32_t *units)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        const ds_plan_request *r = &req[i];
        if (!joint_member(r)) {
            sum += r->units;
            continue;
        }
        uint32_t u = fewest_units(&cap[(size_t)i * 64], table_units(r->lat), joint_rate(r) * headroom * s);
        if (u == 0)
            return UINT64_MAX;
        units[i] = u;
        sum += u;
    }
    return sum;
}

/* The rate a model's batch is planned for: its rate with the headroom
 * (and the margin, when under 1); a model whose rate is unknown or idle
 * keeps the batch for a queue that never empties (registration's), only
 * its share is the idle one. */
static double batch_rate(const ds_plan_request *r, double headroom_x_margin)
{
    return r->rate_per_s >= DS_IDLE_RATE ? r->rate_per_s * headroom_x_margin : INFINITY;
}

dstack_status ds_plan_joint(const ds_plan_request *req, uint32_t n, uint32_t n_units, double headroom,
                            ds_model_plan *out, bool *fits_out)
{
    enum { STEPS = 24 };
    const double S_MAX = 64;
    *fits_out = n == 0;
    if (n == 0)
        return DSTACK_OK;
    if (!(headroom >= 1) || isinf(headroom))
        headroom = 1; /* NaN, infinite, or less than the rate itself: no headroom */
    /* cap[i][u - 1]: model i's saturated rate on u units, once per call */
    double *cap = ds_malloc((size_t)n * 64 * sizeof *cap);
    uint32_t *units = ds_calloc(n, sizeof *units);
    bool fits = false;
    if (cap && units) {
        for (uint32_t i = 0; i < n; i++)
            if (joint_member(&req[i]))
                saturated_table(req[i].lat, req[i].slo_us, &cap[(size_t)i * 64]);
        /* u_i(s) grows with s: bisect for the largest margin that fits,
         * from DS_PLAN_JOINT_MIN_MARGIN x the measured rate up */
        double lo = DS_PLAN_JOINT_MIN_MARGIN / headroom, hi = S_MAX;
        if (joint_units(req, n, cap, headroom, lo, units) <= n_units) {
            fits = true;
            if (joint_units(req, n, cap, headroom, hi, units) <= n_units) {
                lo = hi;
            } else {
                for (int k = 0; k < STEPS; k++) {
                    double mid = sqrt(lo * hi); /* the margin is a ratio */
                    if (joint_units(req, n, cap, headroom, mid, units) <= n_units)
                        lo = mid;
                    else
                        hi = mid;
                }
            }
            joint_units(req, n, cap, headroom, lo, units);
            /* the batch for the units each got, at the rate the headroom
             * asks for (the margin is in the share, not in a batch that
             * waits longer to fill) */
            for (uint32_t i = 0; i < n; i++)
                if (joint_member(&req[i]))
                    plan_at_units(req[i].lat, req[i].slo_us, batch_rate(&req[i], headroom * (lo < 1 ? lo : 1)),
                                  units[i], &out[i]);
        }
    }
    bool no_memory = !cap || !units;
    free(cap);
    free(units);
    for (uint32_t i = 0; i < n; i++) {
        const ds_plan_request *r = &req[i];
        if (!joint_member(r)) {
            memset(&out[i], 0, sizeof out[i]);
            out[i].units = r->units;
            continue;
        }
        if (fits)
            continue;
        if (ds_plan_model(r->lat, r->slo_us, batch_rate(r, headroom), 0, 0, &out[i]) != DSTACK_OK) {
            memset(&out[i], 0, sizeof out[i]);
            out[i].units = r->lat->n_units;
            out[i].batch = 1;
        }
    }
    *fits_out = fits;
    if (no_memory)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the joint plan's table (%u models)", n);
    return DSTACK_OK;
}

/* The batch grid to profile: every b up to 64 where the backend answers
 * from its model (sim), a few sizes where each point is timed (cuda), and
 * one timed run at b = 1 on cpu, which is throughput-bound (L(b) = b L(1)). */
static uint32_t batch_grid(const ds_executor *ex, bool cpu, uint32_t max_batch, uint32_t *grid)
{
    uint32_t n = 0;
    if (cpu) {
        grid[n++] = 1;
        return n;
    }
    if (ex->ops->model_time_ns) {
        for (uint32_t b = 1; b <= max_batch && b <= 64; b++)
            grid[n++] = b;
    } else {
        static const uint32_t sizes[] = {1, 8, 32};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && sizes[i] < max_batch; i++)
            grid[n++] = sizes[i];
    }
    if (grid[n - 1] != max_batch && n < DS_LAT_MAX_GRID)
        grid[n++] = max_batch;
    return n;
}

dstack_status ds_latency_model_build(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, bool cpu,
                                     uint32_t max_batch, ds_latency_model **out)
{
    return ds_latency_model_build_logged(ex, plan, g, cpu, max_batch, NULL, NULL, out);
}

dstack_status ds_latency_model_build_logged(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, bool cpu,
                                            uint32_t max_batch, const ds_logger *lg, const char *name,
                                            ds_latency_model **out)
{
    if (!name)
        name = g->name ? g->name : "model";
    uint64_t t0 = ds_monotonic_ns();
    const ds_device_info *dev = &ex->device;
    bool shares = !cpu && dev->n_units > 1 && dev->n_units <= 64;
    ds_latency_model *lm = ds_calloc(1, sizeof *lm);
    if (!lm)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for a latency model");
    lm->max_batch = max_batch;
    lm->n_units = shares ? dev->n_units : 1;
    lm->unit_sms = shares ? dev->unit_sms : 0;
    lm->sm_count = shares ? ds_units_whole_sms(dev->partitioning, dev->sm_count, dev->unit_sms, dev->n_units) : 0;
    lm->n_b = batch_grid(ex, cpu, max_batch, lm->b);
    bool timed = !ex->ops->model_time_ns;
    ds_log(lg, DSTACK_LOG_INFO, "profiling %s on %s: %u batch sizes (%u..%u) x %u unit counts%s", name,
           ex->ops->name, lm->n_b, lm->b[0], lm->b[lm->n_b - 1], lm->n_units, timed ? "" : " (modeled)");
    for (uint32_t i = 0; i < lm->n_b; i++) {
        for (uint32_t u = 1; u <= lm->n_units; u++) {
            ds_profile_point pt;
            uint32_t units = shares ? u : (dev->n_units ? dev->n_units : 1);
            dstack_status st = ds_profile_measure(ex, plan, g, lm->b[i], units, timed ? 1 : 0,
                                                  timed && !cpu ? 5 : 1, &pt);
            if (st != DSTACK_OK) {
                free(lm);
                return st;
            }
            lm->us[i][u - 1] = pt.median_us;
            ds_log(lg, DSTACK_LOG_DEBUG, "profile %s: batch %u on %u units: %.1f us (spread %.1f us, %u reps)",
                   name, lm->b[i], units, pt.median_us, pt.spread_us, pt.reps);
        }
        ds_log(lg, timed ? DSTACK_LOG_INFO : DSTACK_LOG_DEBUG,
               "profiling %s: batch %u, %u/%u unit counts, batch %u/%u, %.1f s", name, lm->b[i], lm->n_units,
               lm->n_units, i + 1, lm->n_b, (double)(ds_monotonic_ns() - t0) / 1e9);
    }
    ds_log(lg, DSTACK_LOG_INFO, "profiled %s: %u points in %.3f s", name, lm->n_b * lm->n_units,
           (double)(ds_monotonic_ns() - t0) / 1e9);
    *out = lm;
    return DSTACK_OK;
}


/* ---- serialization for the profile cache (see latency.h) ---- */

static const char LM_MAGIC[4] = {'D', 'S', 'L', 'M'};
#define LM_HEADER 28u

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_f64(uint8_t *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static double get_f64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static size_t blob_size(uint32_t n_b, uint32_t n_units)
{
    return LM_HEADER + 4u * (size_t)n_b + 8u * (size_t)n_b * n_units;
}

dstack_status ds_latency_model_encode(const ds_latency_model *m, void **blob, size_t *n_blob)
{
    if (!m || !blob || !n_blob || m->n_b == 0 || m->n_b > DS_LAT_MAX_GRID || m->n_units == 0 || m->n_units > 64)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "latency model encode: empty or out-of-range model");
    size_t n = blob_size(m->n_b, m->n_units);
    uint8_t *p = ds_malloc(n);
    if (!p)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory to encode a latency model");
    memcpy(p, LM_MAGIC, 4);
    put_u32(p + 4, DS_LATENCY_BLOB_VERSION);
    put_u32(p + 8, m->max_batch);
    put_u32(p + 12, m->n_units);
    put_u32(p + 16, m->unit_sms);
    put_u32(p + 20, m->sm_count);
    put_u32(p + 24, m->n_b);
    uint8_t *q = p + LM_HEADER;
    for (uint32_t i = 0; i < m->n_b; i++, q += 4)
        put_u32(q, m->b[i]);
    for (uint32_t i = 0; i < m->n_b; i++)
        for (uint32_t u = 0; u < m->n_units; u++, q += 8)
            put_f64(q, m->us[i][u]);
    *blob = p;
    *n_blob = n;
    return DSTACK_OK;
}

dstack_status ds_latency_model_decode(const void *blob, size_t n_blob, ds_latency_model **out)
{
    const uint8_t *p = blob;
    if (!p || !out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "latency model decode: NULL argument");
    if (n_blob < LM_HEADER || memcmp(p, LM_MAGIC, 4) != 0)
        return ds_fail(DSTACK_ERR_PARSE, "latency model: %zu bytes without the DSLM header", n_blob);
    uint32_t ver = get_u32(p + 4), n_units = get_u32(p + 12), n_b = get_u32(p + 24);
    if (ver != DS_LATENCY_BLOB_VERSION)
        return ds_fail(DSTACK_ERR_PARSE, "latency model: layout version %u, expected %u", ver,
                       DS_LATENCY_BLOB_VERSION);
    if (n_b == 0 || n_b > DS_LAT_MAX_GRID || n_units == 0 || n_units > 64)
        return ds_fail(DSTACK_ERR_PARSE, "latency model: grid %u x %u out of range", n_b, n_units);
    if (n_blob != blob_size(n_b, n_units))
        return ds_fail(DSTACK_ERR_PARSE, "latency model: %zu bytes, a %u x %u grid needs %zu", n_blob, n_b,
                       n_units, blob_size(n_b, n_units));
    ds_latency_model *m = ds_calloc(1, sizeof *m);
    if (!m)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory to decode a latency model");
    m->max_batch = get_u32(p + 8);
    m->n_units = n_units;
    m->unit_sms = get_u32(p + 16);
    m->sm_count = get_u32(p + 20);
    m->n_b = n_b;
    const uint8_t *q = p + LM_HEADER;
    /* units of unit_sms SMs fit in the device's sm_count */
    bool ok = m->max_batch > 0 && (m->unit_sms == 0 || (uint64_t)m->unit_sms * n_units <= m->sm_count);
    for (uint32_t i = 0; i < n_b; i++, q += 4) {
        m->b[i] = get_u32(q);
        ok = ok && m->b[i] > 0 && (i == 0 || m->b[i] > m->b[i - 1]);
    }
    for (uint32_t i = 0; i < n_b; i++)
        for (uint32_t u = 0; u < n_units; u++, q += 8) {
            m->us[i][u] = get_f64(q);
            ok = ok && isfinite(m->us[i][u]) && m->us[i][u] > 0;
        }
    if (!ok) {
        free(m);
        return ds_fail(DSTACK_ERR_PARSE, "latency model: a batch size or latency out of range");
    }
    *out = m;
    return DSTACK_OK;
}
