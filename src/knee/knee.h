/* knee.h - the knee of a latency-versus-SM-share curve.
 *
 * A model's latency L(s) falls as its SM share s grows, then flattens; the
 * knee is the share past which more SMs buy too little to be worth taking
 * from the other models. This module turns a sweep (any number of (s, L)
 * points for one batch size, unsorted, noisy, possibly non-monotonic) into
 * that share. It is pure arithmetic: the sweep itself is profile's job and
 * the analytic curve is sim's; both feed the same function, so the analytic
 * knee and the swept knee follow one definition.
 *
 * Definition (Kneedle on throughput, with a minimum-gain guard):
 *
 *   1. Work on throughput T(s) = 1/L(s), not on latency. Merge repeated
 *      shares (mean of T) and smooth with isotonic regression (pool adjacent
 *      violators, weighted by repeat count) so T is non-decreasing in s:
 *      noise and a share that measured slower than a smaller one are pooled
 *      with their neighbours instead of creating a false bend.
 *   2. Normalize both axes to [0,1] over the sweep (smallest to largest
 *      share) and take the difference curve d(s) = Tn(s) - sn(s). Its
 *      maximum is where the curve stands furthest above the chord from the
 *      smallest to the largest share: the share where the marginal SM starts
 *      to buy less throughput than the average SM of the whole sweep does
 *      (dT/ds = chord slope). Ties go to the smaller share.
 *   3. If max d < min_strength (default 0.05) the curve has no bend inside
 *      the range: it keeps scaling (linear or better), so the knee is the
 *      largest share. If the whole curve gains less than min_gain (default
 *      5%) from smallest to largest share it is flat: the smallest share.
 *   4. Guard: move the knee down to the smallest share whose smoothed
 *      latency is within min_gain of the knee's, so no SMs are taken for a
 *      gain smaller than that.
 *
 * Why this over the alternatives the issue lists:
 *   - Smallest share within eps of the full-GPU latency: on an Amdahl curve
 *     (a/s + c, which is what resnet50 on an H100 is) the full-GPU latency is
 *     reached only at full GPU; resnet50 b16 needs eps = 70% to land at
 *     56 SMs, so eps is a knob with no meaning.
 *   - Kneedle / largest curvature on the latency curve: a pure 1/s curve
 *     (perfect scaling) shows a strong false knee there, and on the H100
 *     sweep it lands at 32 SMs, where latency still falls nearly as 1/s.
 *     On throughput, perfect scaling is the chord itself (d = 0: no knee,
 *     correctly), and the chord's slope has a meaning (average gain per SM).
 *   - Marginal speed-up per added unit above a threshold: the per-unit
 *     steps of a real sweep are noisy (H100 resnet50 b16: step elasticities
 *     0.64, 0.91, 0.69, ..., 1.41 at 96 -> 104 from wave quantization), so a
 *     first-crossing rule jumps around; the difference curve integrates over
 *     the whole sweep and is not fooled by one bad step.
 *   - Best throughput per SM: for any sublinear curve that is the smallest
 *     share, always; it ignores latency entirely.
 *   The price: the knee depends on the sweep's range (it is relative to the
 *   smallest and largest shares measured), so sweep the same range the
 *   scheduler can grant (1 unit .. all units).
 *
 * On the H100 sweep (bench/results/gpu-h100/sweep.csv, resnet50 batch 16,
 * green contexts of 1..15 units of 8 SMs) this gives 56 SMs (12.7 ms against
 * 7.5 ms at 120), with d = 0.112 there against 0.104 at 40 and 0.106 at 64;
 * the sweep without CUDA graphs gives 56 as well. See tests/test_knee.c.
 *
 * Thread-safety: every function is reentrant; nothing is shared.
 */
#ifndef DS_KNEE_KNEE_H
#define DS_KNEE_KNEE_H

#include <stddef.h>
#include <stdint.h>

#include "dstack.h"

typedef struct ds_knee_params {
    double min_strength; /* below this max difference the curve keeps scaling; default 0.05 */
    double min_gain;     /* relative latency gain worth SMs at all; default 0.05 */
} ds_knee_params;

/* Fill *p with the defaults above. */
void ds_knee_params_init(ds_knee_params *p);

typedef enum ds_knee_kind {
    DS_KNEE_BEND = 0,   /* a bend inside the sweep: the Kneedle point */
    DS_KNEE_FLAT = 1,   /* gains less than min_gain overall: smallest share */
    DS_KNEE_SCALES = 2, /* no bend (linear or better): largest share */
    DS_KNEE_SINGLE = 3  /* only one distinct share measured: that share */
} ds_knee_kind;

typedef struct ds_knee_result {
    uint32_t knee_sms;      /* the knee share, one of the input shares */
    size_t knee_index;      /* index in the caller's arrays of a point at knee_sms */
    ds_knee_kind kind;
    double latency;         /* smoothed latency at the knee (caller's unit) */
    double strength;        /* max of the difference curve, 0..1 (0 unless BEND or SCALES) */
    double speedup;         /* smoothed L(smallest share) / L(knee) */
    double throughput_frac; /* smoothed T(knee) / T(largest share), 0..1 */
    double sm_efficiency;   /* T(knee)/knee over the best T(s)/s of the sweep, 0..1 */
    uint32_t n_shares;      /* distinct shares in the input */
    uint32_t n_smoothed;    /* distinct shares whose throughput the smoothing changed */
} ds_knee_result;

/* The knee of the sweep (sms[i], latency[i]), i < n, by the definition
 * above. Latency may be in any unit (only ratios matter). params NULL means
 * the defaults. Returns INVALID_ARGUMENT (message set) when a pointer is
 * NULL, n is 0, a share is 0, a latency is not a positive finite number, or
 * a parameter is negative; OUT_OF_MEMORY if scratch space cannot be had.
 * *out is written only on success. */
dstack_status ds_knee_from_sweep(const uint32_t *sms, const double *latency, size_t n,
                                 const ds_knee_params *params, ds_knee_result *out);

/* Partition units that hold knee_sms SMs when a unit is unit_sms SMs and the
 * device has n_units units: ceil(knee_sms / unit_sms), clamped to
 * [1, n_units]. 0 when unit_sms or n_units is 0. */
uint32_t ds_knee_units(uint32_t knee_sms, uint32_t unit_sms, uint32_t n_units);

#endif
