/* kernels.h - graph -> kernels: the GPU model's view of a network.
 *
 * Shared by the sim engine (what runs) and the analytic knee (how much
 * parallelism a model exposes): both read the list ds_sim_kernels() builds.
 *
 * WHAT A KERNEL IS HERE. A grid of `blocks` identical blocks; an SM holds
 * `blocks_per_sm` of them at once (the occupancy assumption below); every
 * block does `flops_per_block` FLOPs, and the kernel moves `bytes` to and
 * from DRAM in all. An SM computes at `rate` FLOP/s (dev->sm_flops for
 * GEMM-like tiles, kind 0; dev->sm_flops_simple for elementwise/pool/copy
 * kernels, kind 1), shared evenly by the blocks resident on it, once the
 * kernel holds at least sat_occupancy of the SM's block slots (too few
 * warps in flight hide neither latency nor memory stalls): below that the
 * SM's compute rate and its sm_mem_bw are reached only in proportion to
 * the blocks held. The block scheduler spreads blocks breadth-first, so a
 * wave with j blocks on each SM it touches takes
 *     block_ns x max(j, blocks_per_sm x sat_occupancy)
 * (block_ns = flops_per_block / rate). On s SMs a kernel takes
 * W = ceil(blocks / (blocks_per_sm x s)) waves: W - 1 full waves of
 *     wave_ns = blocks_per_sm * flops_per_block / rate
 * and a tail wave of the remaining r blocks spread over min(r, s) SMs,
 * ceil(r / s) blocks on each. Alone on its SMs a kernel takes
 *     max(full waves + tail wave, bytes / bandwidth)
 * compute-or-memory over the whole kernel, not per wave (per wave, a
 * memory-bound full wave plus a compute-bound tail could cost more time on
 * more SMs); bandwidth = min(mem_bw, its SMs x sm_mem_bw x occupancy
 * share). DRAM: the kernel's bytes are spread over its blocks evenly; the
 * SMs a kernel holds can pull at most sm_mem_bw each, and all kernels on
 * the device share mem_bw (engine.h). Each kernel is preceded by a launch
 * gap (launch_gap_ns, serial with the kernels of its batch) and each batch
 * by batch_overhead_ns plus its request bytes over host_bw (page-locked
 * copies in and out, no staging memcpy).
 *
 * HOW NODES BECOME KERNELS (the rules mirror what src/exec/cuda launches):
 *  - Conv: implicit GEMM per group, M = batch*OH*OW, N = Cout/group,
 *    K = Cin/group*kH*kW. Tile 128x64 at 2 blocks/SM when that grid has at
 *    least sm_count blocks, else 64x32 at 4 blocks/SM (cuDNN prefers big
 *    tiles when the grid fills the GPU; the model does not reward big tiles
 *    with a higher rate, only with fewer, coarser waves). When even the
 *    small tile gives fewer blocks than SMs, K is split (split-K) into up to
 *    sm_count/blocks slices, each of at least 1024 (shorter slices cost
 *    more in the reduction than they win), plus a reduction kernel.
 *    Padded tiles do the full tile's work: sum of flops_per_block x blocks
 *    >= 2 x MACs (ds_graph_flops), equal when M, N divide the tile and K the
 *    split. Bias without ReLU, or a Clip activation, costs a separate
 *    elementwise epilogue kernel (as the cuda backend: cuDNN fuses only
 *    bias+ReLU). Depthwise convs (group == Cin > 1) are one direct kernel
 *    of kind 1, 1024 outputs per block, 2 x kH x kW FLOPs per output.
 *  - Gemm / MatMul: the same GEMM tiling (MatMul's broadcast batch as
 *    groups); a Gemm's C input is a copy kernel first, an activation an
 *    epilogue kernel after.
 *  - Everything else is kind 1, 1024 elements per block, 8 blocks/SM
 *    (256 threads x 4 elements, 2048 threads per SM): elementwise ops 1 FLOP
 *    per output element, pools kH x kW per output, global pools 1 per input
 *    element, LRN `size` per element, softmax 5 per element, and
 *    Concat/Transpose/Reshape/Flatten/Identity a copy (0 FLOPs: memory
 *    only). Bytes: every input (activations at batch b, weights once) and
 *    the output, 4 bytes a float.
 *  - A graph that is not batchable runs b independent passes: its list is
 *    the batch-1 list b times.
 *
 * WHAT IS LEFT OUT: the tail wave's fewer SMs pulling less bandwidth when
 * the kernel runs as one round (its bytes go at the full waves' rate), caches (L2 hits make real DRAM traffic lower than
 * `bytes`), tensor cores and TF32/FP16 (FP32 FMA only), per-SM register and
 * shared-memory limits beyond the fixed blocks_per_sm, cuDNN's algorithm
 * choice per partition size (tiles are chosen once for the whole device),
 * clock boost changes, PCIe contention between batches.
 */
#ifndef DS_SIM_KERNELS_H
#define DS_SIM_KERNELS_H

#include "sim/sim.h"

/* Resident capacity of one SM in integer slots: a block of a kernel with
 * blocks_per_sm = p takes DS_SIM_SM_SLOTS / p slots, so blocks of kernels
 * with different occupancies share an SM exactly (no rounding). Every
 * blocks_per_sm the model uses divides it. */
#define DS_SIM_SM_SLOTS 5040u

/* Time of one block of k alone on its SM (flops_per_block / rate), ns. */
double ds_sim_block_ns(const ds_sim_kernel *k, const ds_sim_device *dev);
/* Time of one full wave of k (every SM holding blocks_per_sm blocks), ns. */
double ds_sim_wave_ns(const ds_sim_kernel *k, const ds_sim_device *dev);
/* Share of its full rate (compute and sm_mem_bw) an SM reaches holding
 * `per_sm` blocks of k: min(1, per_sm / blocks_per_sm / sat_occupancy). */
double ds_sim_occupancy_speed(const ds_sim_kernel *k, const ds_sim_device *dev, double per_sm);
/* Time of a wave of k with `per_sm` blocks on each SM it touches, ns:
 * per_sm x block time / ds_sim_occupancy_speed. */
double ds_sim_wave_of_ns(const ds_sim_kernel *k, const ds_sim_device *dev, double per_sm);

/* Compute time of all of k on `sms` SMs nobody else holds: its full waves
 * plus the tail wave spread over min(tail, sms) SMs, ns (memory apart). */
double ds_sim_kernel_compute_ns(const ds_sim_kernel *k, uint32_t sms, const ds_sim_device *dev);

/* Per-batch cost outside the kernels: batch_overhead_ns + bytes / host_bw. */
double ds_sim_batch_overhead_ns(const ds_sim_device *dev, double host_bytes);

/* Duration of a round of `waves` waves of kernel k holding `sms` SMs (real:
 * slots / DS_SIM_SM_SLOTS) and moving `bytes` at most `bw` bytes/s (already
 * the smaller of the device's share and sms x sm_mem_bw). Never below 1 ns. */
double ds_sim_round_ns(double wave_ns, double waves, double bytes, double bw);

/* Request bytes (inputs + outputs, all requests) of graph g at batch b: what
 * crosses PCIe per batch. */
double ds_sim_host_bytes(const ds_graph *g, uint32_t batch);

/* The batch-1 kernel list of g repeated or scaled for batch b: see above. */
/* (ds_sim_kernels itself is declared in sim.h.) */

/* Modeled time of a whole batch alone on `sms` SMs including the per-batch
 * overhead for `host_bytes`: what the engine gives for the same batch with
 * nothing else running. */
uint64_t ds_sim_batch_time_ns(const ds_sim_kernel *k, uint32_t n, uint32_t sms,
                              double host_bytes, const ds_sim_device *dev);

#endif /* DS_SIM_KERNELS_H */
