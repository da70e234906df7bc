/* latency.c - see latency.h. */
#include "batch/latency.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch/batch.h"
#include "knee/knee.h"
#include "profile/profile.h"
#include "util/error.h"
#include "util/fault.h"

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
    if (n == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "latency fit: no points");
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < n; i++) {
        sx += x[i];
        sy += y[i];
        sxx += x[i] * x[i];
        sxy += x[i] * y[i];
    }
    double det = (double)n * sxx - sx * sx;
    if (n == 1 || fabs(det) < 1e-12 * (sxx > 1 ? sxx * n : 1)) {
        if (sxx <= 0)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "latency fit: singular");
        *a = sxy / sxx;
        *c = 0;
        return DSTACK_OK;
    }
    *a = ((double)n * sxy - sx * sy) / det;
    *c = (sy - *a * sx) / (double)n;
    return DSTACK_OK;
}

bool ds_replan_due(double planned, double measured, double factor)
{
    if (!(measured > 0))
        return false;
    if (!(planned > 0) || isinf(planned))
        return true;
    return measured > planned * factor || measured * factor < planned;
}

uint32_t ds_latency_knee_units(const ds_latency_model *m, uint32_t b)
{
    if (m->n_units <= 1 || m->unit_sms == 0)
        return m->n_units ? m->n_units : 1;
    uint32_t sms[64];
    double lat[64];
    for (uint32_t u = 1; u <= m->n_units; u++) {
        sms[u - 1] = u * m->unit_sms;
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

/* Is plan x better than y? Feasible first, then throughput per SM (per
 * unit), then the smaller share. */
static bool better(const ds_batch_plan *x, uint32_t xu, const ds_batch_plan *y, uint32_t yu)
{
    bool fx = !(x->flags & DS_BATCH_INFEASIBLE), fy = !(y->flags & DS_BATCH_INFEASIBLE);
    if (fx != fy)
        return fx;
    if (!fx)
        return x->latency_us < y->latency_us; /* infeasible: the fastest */
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
        for (uint32_t i = 0; i < m->n_b; i++) {
            uint32_t k = ds_latency_knee_units(m, m->b[i]);
            bool seen = false;
            for (uint32_t j = 0; j < n_cand; j++)
                seen |= cand[j] == k;
            if (!seen)
                cand[n_cand++] = k;
        }
    }
    ds_batch_plan best = {0};
    uint32_t best_u = 0;
    for (uint32_t j = 0; j < n_cand; j++) {
        at_share s = {m, cand[j]};
        ds_batch_plan p;
        ds_batch_query q = {fixed_batch ? fixed_batch : m->max_batch, slo_us, rate, cand[j] * (m->unit_sms ? m->unit_sms : 1)};
        dstack_status st = ds_batch_pick_for_slo(&q, latency_at_share, &s, &p);
        if (st != DSTACK_OK)
            return st;
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
    const ds_device_info *dev = &ex->device;
    bool shares = !cpu && dev->n_units > 1 && dev->n_units <= 64;
    ds_latency_model *lm = ds_calloc(1, sizeof *lm);
    if (!lm)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for a latency model");
    lm->max_batch = max_batch;
    lm->n_units = shares ? dev->n_units : 1;
    lm->unit_sms = shares ? dev->unit_sms : 0;
    lm->n_b = batch_grid(ex, cpu, max_batch, lm->b);
    bool timed = !ex->ops->model_time_ns;
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
        }
    }
    *out = lm;
    return DSTACK_OK;
}

