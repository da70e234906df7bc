/* knee.c - Kneedle on the isotonic throughput curve (see knee.h for why). */
#include "knee/knee.h"

#include <math.h>
#include <stdlib.h>

#include "util/error.h"

#define DEFAULT_MIN_STRENGTH 0.05
#define DEFAULT_MIN_GAIN 0.05

void ds_knee_params_init(ds_knee_params *p)
{
    if (!p)
        return;
    p->min_strength = DEFAULT_MIN_STRENGTH;
    p->min_gain = DEFAULT_MIN_GAIN;
}

/* One distinct share: its mean throughput over repeats, then the smoothed one. */
typedef struct share_pt {
    uint32_t sms;
    size_t first_index; /* a caller index at this share */
    double t_sum;       /* sum of 1/latency over repeats */
    double weight;      /* repeats */
    double t;           /* smoothed throughput */
} share_pt;

static int cmp_share(const void *a, const void *b)
{
    const share_pt *x = a, *y = b;
    if (x->sms != y->sms)
        return x->sms < y->sms ? -1 : 1;
    return x->first_index < y->first_index ? -1 : (x->first_index > y->first_index);
}

static dstack_status check_input(const uint32_t *sms, const double *latency, size_t n,
                                 const ds_knee_params *p, const ds_knee_result *out)
{
    if (!sms || !latency || !out || n == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "knee: sms, latency or out is NULL, or n is 0");
    for (size_t i = 0; i < n; i++) {
        if (sms[i] == 0)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "knee: point %zu has a share of 0 SMs", i);
        if (!(latency[i] > 0.0) || !isfinite(latency[i]))
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "knee: point %zu has latency %g", i, latency[i]);
    }
    if (!(p->min_strength >= 0.0) || !(p->min_gain >= 0.0))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "knee: min_strength and min_gain must be >= 0");
    return DSTACK_OK;
}

/* Sort by share and merge repeats; returns the distinct count. */
static size_t merge_shares(share_pt *pt, const uint32_t *sms, const double *latency, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pt[i] = (share_pt){sms[i], i, 1.0 / latency[i], 1.0, 0.0};
    qsort(pt, n, sizeof *pt, cmp_share);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && pt[m - 1].sms == pt[i].sms) {
            pt[m - 1].t_sum += pt[i].t_sum;
            pt[m - 1].weight += 1.0;
        } else {
            pt[m++] = pt[i];
        }
    }
    return m;
}

/* Pool adjacent violators: the weighted least-squares non-decreasing fit of
 * the mean throughputs, written to pt[].t. `blk` is scratch of m entries
 * (value, weight, count) used as a stack of pooled blocks. */
typedef struct pav_block {
    double value, weight;
    size_t count;
} pav_block;

static uint32_t isotonic_fit(share_pt *pt, size_t m, pav_block *blk)
{
    size_t top = 0;
    for (size_t i = 0; i < m; i++) {
        blk[top++] = (pav_block){pt[i].t_sum / pt[i].weight, pt[i].weight, 1};
        while (top > 1 && blk[top - 2].value > blk[top - 1].value) {
            pav_block *a = &blk[top - 2], *b = &blk[top - 1];
            double w = a->weight + b->weight;
            a->value = (a->value * a->weight + b->value * b->weight) / w;
            a->weight = w;
            a->count += b->count;
            top--;
        }
    }
    uint32_t changed = 0;
    size_t i = 0;
    for (size_t k = 0; k < top; k++)
        for (size_t j = 0; j < blk[k].count; j++, i++) {
            double raw = pt[i].t_sum / pt[i].weight;
            pt[i].t = blk[k].value;
            if (fabs(pt[i].t - raw) > 1e-12 * raw)
                changed++;
        }
    return changed;
}

/* Index of the max of the normalized difference curve (first on ties). */
static size_t kneedle_index(const share_pt *pt, size_t m, double *strength)
{
    double t0 = pt[0].t, t_span = pt[m - 1].t - pt[0].t;
    double s0 = pt[0].sms, s_span = (double)pt[m - 1].sms - s0;
    size_t best = 0;
    double best_d = 0.0;
    for (size_t i = 1; i + 1 < m; i++) {
        double d = (pt[i].t - t0) / t_span - ((double)pt[i].sms - s0) / s_span;
        if (d > best_d + 1e-12) {
            best_d = d;
            best = i;
        }
    }
    *strength = best_d;
    return best;
}

static void fill_result(const share_pt *pt, size_t m, size_t k, ds_knee_kind kind, double strength,
                        uint32_t changed, ds_knee_result *out)
{
    double best_per_sm = 0.0;
    for (size_t i = 0; i < m; i++)
        if (pt[i].t / pt[i].sms > best_per_sm)
            best_per_sm = pt[i].t / pt[i].sms;
    *out = (ds_knee_result){
        .knee_sms = pt[k].sms,
        .knee_index = pt[k].first_index,
        .kind = kind,
        .latency = 1.0 / pt[k].t,
        .strength = strength,
        .speedup = pt[k].t / pt[0].t,
        .throughput_frac = pt[k].t / pt[m - 1].t,
        .sm_efficiency = (pt[k].t / pt[k].sms) / best_per_sm,
        .n_shares = (uint32_t)m,
        .n_smoothed = changed,
    };
}

dstack_status ds_knee_from_sweep(const uint32_t *sms, const double *latency, size_t n,
                                 const ds_knee_params *params, ds_knee_result *out)
{
    ds_knee_params p;
    ds_knee_params_init(&p);
    if (params)
        p = *params;
    dstack_status st = check_input(sms, latency, n, &p, out);
    if (st != DSTACK_OK)
        return st;
    share_pt *pt = malloc(n * sizeof *pt);
    pav_block *blk = malloc(n * sizeof *blk);
    if (!pt || !blk) {
        free(pt);
        free(blk);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "knee: no memory for %zu points", n);
    }
    size_t m = merge_shares(pt, sms, latency, n);
    uint32_t changed = isotonic_fit(pt, m, blk);

    size_t k = 0;
    double strength = 0.0;
    ds_knee_kind kind;
    if (m == 1) {
        kind = DS_KNEE_SINGLE;
    } else if (pt[m - 1].t <= pt[0].t * (1.0 + p.min_gain)) {
        kind = DS_KNEE_FLAT;
    } else {
        k = kneedle_index(pt, m, &strength);
        kind = DS_KNEE_BEND;
        if (strength < p.min_strength) {
            k = m - 1;
            kind = DS_KNEE_SCALES;
        }
        /* Not a single SM for less than min_gain: T is non-decreasing, so
         * the first share within min_gain of the knee is the one to take. */
        for (size_t i = 0; i < k; i++)
            if (pt[k].t <= pt[i].t * (1.0 + p.min_gain)) {
                k = i;
                break;
            }
    }
    fill_result(pt, m, k, kind, strength, changed, out);
    free(pt);
    free(blk);
    return DSTACK_OK;
}

uint32_t ds_knee_units(uint32_t knee_sms, uint32_t unit_sms, uint32_t n_units)
{
    if (unit_sms == 0 || n_units == 0)
        return 0;
    uint32_t units = knee_sms / unit_sms + (knee_sms % unit_sms != 0);
    if (units < 1)
        units = 1;
    return units > n_units ? n_units : units;
}
