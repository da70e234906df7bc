/* analytic.h - the knee without a sweep: a predicted latency curve from the
 * kernels a model launches, and its knee by the definition of knee.h.
 *
 * The kernels are src/sim's graph -> kernels model (sim/kernels.h):
 * kernel k of the model at batch b has a grid of N_k blocks, p_k resident
 * blocks per SM, F_k FLOPs per block on an SM of rate R_k FLOP/s (GEMM
 * tiles or simple kernels) and moves D_k bytes. On s SMs:
 *
 *   fit_k      = p_k x s                          blocks in one wave
 *   full_k     = floor(N_k / fit_k),  tail_k = N_k - full_k x fit_k
 *   wave_k     = p_k x F_k / R_k                  one full wave
 *   T_full_k   = max(full_k x wave_k, D_k x full_k fit_k / N_k / min(BW, s x bw_sm))
 *   T_tail_k   = max(ceil(tail_k / min(tail_k, s)) x F_k / R_k,
 *                    D_k x tail_k / N_k / min(BW, min(tail_k, s) x bw_sm))   (0 if tail_k = 0)
 *   A(b, s)    = O + H(b) / B_host + sum_k (g + T_full_k + T_tail_k)
 *
 * with O the per-batch overhead, H(b) the request bytes in and out, g the
 * launch gap, BW the device's DRAM bandwidth and bw_sm one SM's; a wave of
 * j < p_k blocks per SM takes max(j, p_k x sat) block times (the occupancy
 * an SM needs to reach full rate, sim/kernels.h). The curve is evaluated by
 * the sim engine on an otherwise idle device (ds_sim_alone_ns), not by the
 * closed form ds_sim_batch_time_ns, which differs from the engine by up to
 * ~20% on kernels with a partial wave (a known defect of the closed form).
 * So on sim the analytic curve IS the swept one and the knees agree exactly
 * (tests/test_plan.c checks it for every zoo model at batches 1, 8, 32); on
 * cuda the same formula with CUPTI's grids is a prediction, and the real
 * device fixes the scale (ds_latency_fit: L = a x A + c).
 *
 * The curve is taken at s = u x unit_sms for u = 1..n_units (the shares
 * the scheduler can grant; partitioning NONE: one point, all SMs), the same
 * range a sweep covers, because the knee is relative to the range
 * (knee.h). Where it beats a sweep: one kernel list per batch and
 * n_units sums, microseconds per model, so a new model is placed at once.
 *
 * Thread-safety: reentrant.
 */
#ifndef DS_KNEE_ANALYTIC_H
#define DS_KNEE_ANALYTIC_H

#include <stdint.h>

#include "knee/knee.h"
#include "sim/sim.h"

typedef struct ds_knee_curve {
    uint32_t batch;
    uint32_t n_units;   /* points: shares of 1..n_units units */
    uint32_t unit_sms;
    uint32_t sms[64];   /* SMs of each point */
    double us[64];      /* predicted latency A(batch, sms[i]) in us */
    ds_knee_result knee;
    uint32_t knee_units;
} ds_knee_curve;

/* The predicted curve of graph g at `batch` on device dev and its knee
 * (params NULL: defaults). INVALID_ARGUMENT for NULL pointers, batch 0 or a
 * device of more than 64 units; OUT_OF_MEMORY from the kernel list. *out is
 * written only on success. */
dstack_status ds_knee_analytic(const ds_graph *g, uint32_t batch, const ds_sim_device *dev,
                               const ds_knee_params *params, ds_knee_curve *out);

#endif
