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
 * The curve is taken at s = u x unit_sms for u = 1..n_units - 1 and at all
 * the device's SMs for every unit (the shares the scheduler can grant,
 * util/units.h; partitioning NONE: one point, all SMs), the same
 * range a sweep covers, because the knee is relative to the range
 * (knee.h). Where it beats a sweep: one kernel list per batch and
 * n_units sums, microseconds per model, so a new model is placed at once.
 *
 * Thread-safety: reentrant.
 */
#ifndef DS_KNEE_ANALYTIC_H
#define DS_KNEE_ANALYTIC_H

#include <stdint.h>

#include "exec/exec.h"
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

/* ---- the same knee from a real device's kernel trace (cuda, CUPTI) ----
 *
 * Input: the kernels one batch launched on S0 SMs (ds_profile_kernels:
 * grid N_k blocks, block size, registers, shared memory, duration d_k) and
 * the batch's total time T0 on S0 SMs. For kernel k:
 *
 *   p_k      = resident blocks per SM (ds_occupancy_blocks_per_sm)
 *   W_k(s)   = ceil(N_k / (p_k x s))               waves on s SMs
 *   T_k(s)   = d_k x W_k(s) / W_k(S0)              each wave as long as one at S0
 *   A(s)     = (T0 - sum_k d_k) + sum_k T_k(s)     the time outside kernels
 *                                                  (copies, gaps) does not scale
 *
 * evaluated at s = u x unit_sms, u = 1..n_units, and its knee by knee.h.
 * What it leaves out, so what the fit L = a x A + c (src/batch/latency.h)
 * and the comparison with a sweep must absorb: a partial wave is charged as
 * a full one (an SM with fewer resident blocks may finish them sooner),
 * memory-bound kernels are taken to scale with waves although DRAM
 * bandwidth does not grow with s, and a kernel whose p_k is 0 by these
 * limits (it ran, so the limits are wrong for it) is counted with p_k = 1
 * (out->unknown_occupancy says how many). */

/* Per-SM resources of the device's compute capability, as the occupancy
 * calculator (cuda_occupancy.h) models them. */
typedef struct ds_sm_limits {
    uint32_t max_threads, max_blocks, warp_size;
    uint32_t regs, reg_unit, max_regs_per_thread, sub_partitions;
    uint32_t smem, smem_unit, smem_reserved_per_block, smem_max_per_block;
} ds_sm_limits;

/* Hopper (compute capability 9.0: H100, H200): 2048 threads, 32 blocks,
 * 64K registers in 4 sub-partitions allocated per warp in units of 256,
 * 228 KB of shared memory in units of 128 B with 1 KB reserved per block,
 * at most 227 KB per block. */
void ds_sm_limits_hopper(ds_sm_limits *out);

/* Resident blocks per SM of a kernel of `threads` per block, `regs` per
 * thread and `smem_bytes` (static + dynamic) per block, as cuda_occupancy.h
 * computes it (without a function's shared-memory limit configuration):
 * the minimum of the thread, block, register and shared-memory limits.
 * smem_config is the shared memory per SM the launch ran with (CUPTI's
 * sharedMemoryExecuted); 0 or less than one block takes the largest
 * carveout. 0 when one block does not fit. */
uint32_t ds_occupancy_blocks_per_sm(const ds_sm_limits *lim, uint32_t threads, uint32_t regs, uint32_t smem_bytes,
                                    uint32_t smem_config);

typedef struct ds_trace_curve {
    ds_knee_curve curve;        /* A(s) and its knee, as ds_knee_analytic gives */
    double kernel_us;           /* sum_k d_k */
    double outside_us;          /* T0 - sum_k d_k, clamped at 0 */
    uint32_t unknown_occupancy; /* kernels whose p_k came out 0 */
} ds_trace_curve;

/* The curve above from n kernel records traced on traced_sms SMs in a batch
 * of total_us, at s = u x unit_sms for u = 1..n_units - 1 and, for every
 * unit, the whole device (util/units.h): the trace is taken there, so that
 * point is traced_sms SMs (at least n_units x unit_sms). INVALID_ARGUMENT for
 * NULL pointers, n == 0, traced_sms, unit_sms or n_units of 0, n_units
 * above 64, a non-finite total, or a record that ends before it starts. *out is written only on success. */
dstack_status ds_knee_analytic_trace(const ds_kernel_record *k, size_t n, uint32_t traced_sms, double total_us,
                                     uint32_t batch, uint32_t unit_sms, uint32_t n_units,
                                     const ds_sm_limits *lim, const ds_knee_params *params, ds_trace_curve *out);

#endif
