/* engine.h - the event engine of the simulated GPU: several batches at once,
 * each a sequence of kernels (kernels.h) on a range of partition units.
 *
 * THE MODEL.
 *  - Capacity. Each unit holds unit_sms x DS_SIM_SM_SLOTS slots; a block of
 *    a kernel with p blocks/SM takes DS_SIM_SM_SLOTS / p of them. Blocks
 *    never straddle units; inside a unit SMs are pooled (a block fits where
 *    the unit has room, not on a particular SM).
 *  - The whole device. The SMs no unit holds (132 - 15 x 8 = 12 on the
 *    H100) are one more unit that only a batch on every unit reaches: that
 *    range is the whole device (util/units.h), as on the GPU, where a batch
 *    that holds every unit runs on an ordinary stream with all the SMs.
 *  - A batch: batch overhead (fixed + request bytes / host_bw), then for each
 *    kernel a launch gap, then the kernel; kernel i+1 launches only when
 *    kernel i has finished (one stream per batch).
 *  - Block scheduling, as the hardware does it: a launched kernel with
 *    blocks not yet placed waits in a queue in launch order; whenever slots
 *    free up or a kernel launches, the queue is walked in launch order and
 *    each kernel takes what fits in the free slots of its own unit range.
 *    Blocks placed together form a round. On a unit range nobody else
 *    holds or waits for, the whole kernel is one round (full waves and
 *    tail; it gets its own SMs back at every wave boundary), timed as
 *    kernels.h says: compute-or-memory over the whole kernel, exactly
 *    ds_sim_batch_time_ns. When another kernel waits for the range, one
 *    wave at a time, so the SMs a tail wave leaves idle go to the next
 *    kernel in launch order, and the SMs other kernels free serve the
 *    earliest-launched kernel's remaining blocks. So disjoint partitions
 *    never share SMs, and batches handed the same or overlapping units
 *    (the `streams` policy) share them the way the block scheduler does.
 *  - Shared SMs are not counted twice. Below sat_occupancy a kernel's
 *    blocks each use more than their slots' share of an SM (kernels.h), so
 *    two kernels on the same SMs could ask for more than 100% of them. The
 *    engine adds up what each unit's rounds ask of its SMs and slows them
 *    all by the same factor while the sum is over the unit's SMs. (The
 *    model before sat_occupancy over-counted the same way, which favoured
 *    `streams`.)
 *  - Time of a round: k waves of compute (kernels.h: a full wave is
 *    wave_ns; a wave of j blocks on each SM it touches,
 *    max(j, blocks_per_sm x sat_occupancy) x block time;
 *    blocks spread breadth-first, one per SM first), and its
 *    share of the kernel's bytes. It progresses at
 *        rate = min(1 / compute_ns, bandwidth / bytes)
 *    where its bandwidth is its share of mem_bw (weighted max-min fair
 *    water-filling, weight = SMs held, each round capped at its SMs x
 *    sm_mem_bw and at what it can use at full compute speed). Rates are
 *    recomputed at every event, so kernels in disjoint partitions run side
 *    by side and contend for memory bandwidth only.
 *  - Ideal mode (sim.h): one round per kernel holding a real number of SMs
 *    out of the whole device, recomputed at every event: SMs given in
 *    the order the batches started (each takes what it can use while
 *    any are left: the oldest work first, a batch's kernel chain as one
 *    job); no waves, no units. It pays the same
 *    occupancy cost: a kernel wants blocks / max(1, blocks_per_sm x
 *    sat_occupancy) SMs (its blocks packed so that each SM is saturated)
 *    and takes at best one block time at one block per SM. Bandwidth and
 *    launch gaps as above.
 *  - Busy SM-time: by occupancy, the slots rounds hold / DS_SIM_SM_SLOTS
 *    times time (a wave of 1 block per SM on 8 SMs of a 4-blocks/SM kernel
 *    counts 2 SMs), memory stalls included; a whole-kernel round counts
 *    the slots of its full waves through its tail; ideal mode: the SMs
 *    allocated.
 *
 * LEFT OUT: SM-level placement inside a unit; a kernel that arrives on a
 * range while another runs there as one round (nobody was waiting when it
 * was placed) waits for that round's end rather than taking the SMs its
 * tail leaves idle; preemption; the hardware
 * queue limits (e.g. 128 concurrent kernels); per-block variation
 * (all blocks of a wave end together).
 *
 * Determinism: plain arrays walked in index and launch order, doubles
 * computed in a fixed order, no wall time: the same calls give the same
 * results bit for bit. Not thread-safe: the owner locks.
 */
#ifndef DS_SIM_ENGINE_H
#define DS_SIM_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "sim/kernels.h"

typedef struct ds_sim_engine ds_sim_engine;

/* Called for each batch that ends, in end-time order (ties: start order);
 * end_ns is the end time rounded up to whole ns. */
typedef void (*ds_sim_engine_done_fn)(void *arg, void *user, uint64_t end_ns);

/* NULL when out of memory. The device is copied. */
ds_sim_engine *ds_sim_engine_create(const ds_sim_device *dev, bool ideal);
void ds_sim_engine_destroy(ds_sim_engine *e);

/* Start a batch at `t_ns` (clamped up to the engine's time; the engine does
 * not move: call ds_sim_engine_advance(t_ns) first to hear of batches that
 * end before it): its kernels
 * (borrowed: they must stay valid until the batch ends) on units
 * [first_unit, first_unit + n_units), with `host_bytes` of requests.
 * INVALID_ARGUMENT for a range outside the device; OUT_OF_MEMORY. */
dstack_status ds_sim_engine_start(ds_sim_engine *e, uint64_t t_ns, const ds_sim_kernel *k,
                                  uint32_t n, uint32_t first_unit, uint32_t n_units,
                                  double host_bytes, void *user);

/* End time (whole ns, rounded up) of the first batch to end if nothing else
 * starts; UINT64_MAX when no batch runs. Cached until the next start or
 * the next batch end. */
uint64_t ds_sim_engine_next_end_ns(ds_sim_engine *e);

/* Move time to t_ns (no-op when t_ns is not after the engine's time),
 * calling done for every batch that ends at or before t_ns. */
void ds_sim_engine_advance(ds_sim_engine *e, uint64_t t_ns, ds_sim_engine_done_fn done,
                           void *arg);

/* Run until every batch has ended, calling done for each. */
void ds_sim_engine_drain(ds_sim_engine *e, ds_sim_engine_done_fn done, void *arg);

uint32_t ds_sim_engine_running(const ds_sim_engine *e); /* batches not yet ended */
double ds_sim_engine_now_ns(const ds_sim_engine *e);
double ds_sim_engine_busy_sm_ns(const ds_sim_engine *e);
void ds_sim_engine_set_ideal(ds_sim_engine *e, bool ideal); /* before any start */

#endif /* DS_SIM_ENGINE_H */
