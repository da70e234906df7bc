/* latency.h - the latency model L(b, u) of one model on one device, and the
 * plan (knee, batch size) chosen from it.
 *
 * L(b, u) is a table over a grid of batch sizes (every b up to 64 where the
 * backend answers from a model, as sim does; powers of two and max_batch
 * where each point is a timed run, as on cuda) and every unit count
 * 1..n_units, filled by src/profile. Between grid batches it is linear in
 * b (a batch is a sum of kernels whose work grows with b, so L is
 * piecewise affine between the sizes where wave counts change); with a
 * single grid batch (cpu: one timed run at b = 1) L(b) = b x L(1), since
 * the cpu is throughput-bound at every batch size.
 *
 * Fit: when only a few points are measured (say 3 batch sizes x 3 shares on
 * cuda), the rest of the table comes from the analytic kernel model A(b, u)
 * (src/sim/kernels) corrected by least squares: L = a x A + c, with a and c
 * fitted on the measured points (ds_latency_fit). A model's kernel shapes
 * fix the curve's shape; the device's real speed fixes a and c.
 *
 * The plan (ds_plan_model): for each grid batch b, the knee k(b) of
 * L(b, .) (src/knee); for every share u from the smallest such knee up to
 * the whole device, the SLO-aware batch at that share (src/batch/batch.h,
 * rate lambda); among those, the (u, b) that meets the SLO and keeps up
 * with lambda with the most throughput per SM (the smallest such share,
 * as curves are sublinear); if none keeps up, the most throughput. So a
 * model gets its knee while the knee can carry its load, and more SMs only
 * when it cannot: the knee depends on the batch and the batch on the
 * share, and trying every share settles both without a fixed point
 * iteration.
 */
#ifndef DS_BATCH_LATENCY_H
#define DS_BATCH_LATENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dstack.h"
#include "exec/exec.h"
#include "graph/graph.h"

#define DS_LAT_MAX_GRID 72

typedef struct ds_latency_model {
    uint32_t max_batch;
    uint32_t n_units;            /* columns: 1..n_units units */
    uint32_t unit_sms;           /* SMs per unit; 0 where shares do not apply (cpu) */
    uint32_t sm_count;           /* SMs of every unit (util/units.h: the whole device under green
                                  * contexts); 0 where shares do not apply */
    uint32_t n_b;
    uint32_t b[DS_LAT_MAX_GRID]; /* grid batches, increasing */
    double us[DS_LAT_MAX_GRID][64]; /* us[i][u-1]: latency of b[i] on u units */
} ds_latency_model;

/* Profile L(b, u) of a planned model over the batch grid and every unit
 * count through the executor (src/profile); *out is malloc'ed. cpu: one
 * timed run at b = 1 on the whole pool. */
dstack_status ds_latency_model_build(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, bool cpu,
                                     uint32_t max_batch, ds_latency_model **out);

/* The same, reporting progress through lg (NULL: silent) under the model's
 * name: each measurement at DEBUG; the start, each batch row of a timed
 * backend (cuda, cpu) and the end at INFO ("profiling resnet50: batch 8,
 * 15/15 unit counts, 1.2 s"); a modeled backend's (sim) rows at DEBUG. */
struct ds_logger;
dstack_status ds_latency_model_build_logged(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, bool cpu,
                                            uint32_t max_batch, const struct ds_logger *lg, const char *name,
                                            ds_latency_model **out);

/* L(b, u) in us; u is clamped to 1..n_units, b to >= 1. */
double ds_latency_us(const ds_latency_model *m, uint32_t b, uint32_t u);
/* The scheduler's ds_latency_fn (policy.h): arg is a ds_latency_model. */
uint64_t ds_latency_sched_ns(const void *arg, uint32_t samples, uint32_t units);

/* Fit measured = a x analytic + c over n points (n >= 2; with n == 1,
 * c = 0) by least squares on the RELATIVE error (weights 1/measured^2):
 * latencies span two orders of magnitude over batch and share (resnet50 on
 * sim: 0.86 ms at b=1 on 120 SMs, 140 ms at b=32 on 8), and a plain fit
 * serves the large points and misses the small ones by tens of percent
 * (resnet50 on sim, 5% noise, fit on 3x3: held-out p90 47% plain, 4.9%
 * relative; bench/results/knee_curve-resnet50-sim-noise5.txt), while the SLO cares
 * about relative error. INVALID_ARGUMENT when n == 0, a measured value is
 * not positive and finite, or the fit is singular. */
dstack_status ds_latency_fit(const double *analytic, const double *measured, size_t n, double *a, double *c);

typedef struct ds_model_plan {
    uint32_t units;          /* share in units (n_units when shares do not apply) */
    uint32_t batch;
    double latency_us;       /* L(batch, units) */
    uint32_t knee_units;     /* the knee of L(batch, .) */
    uint32_t flags;          /* DS_BATCH_* of the chosen batch */
} ds_model_plan;

/* Plan a model. slo_us 0 = none; rate_per_s as in batch.h (INFINITY:
 * saturated). fixed_units / fixed_batch (0 = free) override. */
dstack_status ds_plan_model(const ds_latency_model *m, uint64_t slo_us, double rate_per_s, uint32_t fixed_units,
                            uint32_t fixed_batch, ds_model_plan *out);

/* The headroom a plan keeps over the measured arrival rate: Poisson
 * arrivals bunch up, and no re-plan comes until the rate leaves
 * [rate / 1.5, rate x 1.5], so a plan is made for 1.5x the measured rate
 * (the top of that band). The library's planner (src/api/planner.c) and
 * bench/sched_compare both use it, so the benchmark plans as the library
 * does. */
#define DS_PLAN_HEADROOM 1.5

/* How long a batch may run, as a fraction of the SLO, when the joint plan
 * sizes a share by what it serves with a full queue (ds_plan_min_units):
 * 2 L <= 0.9 SLO, a tenth of the SLO left for what that criterion leaves
 * out (the batch's fill, arrivals bunching up). A model none of whose
 * batches runs that fast on any share is sized with 2 L <= SLO, the hard
 * limit, so that it and its mix still get a joint plan. At 0.5
 * (2 L <= SLO) vgg19's 11 units in the four-CNN mix ran batches of 4 in
 * 11.9 ms for 1% more throughput than batches of 3 in 9.0 ms, and its
 * queue had no slack. Measured on the simulated H100 (bench/sched_compare,
 * dstack, 10 s points, seeds 1-4), four CNNs at 25 ms: 920 980 1003 950
 * req/s at 0.5, 972 1039 1034 966 at 0.45 (and at 0.4), 905 980 986 931 at
 * 0.35; eight models at 50 ms (seeds 1-2) 4088 4112 at 0.5, 4044 4088 at
 * 0.45; two models 4438 and 4412; bursty and step unchanged. */
#define DS_PLAN_RUN_SHARE 0.45

/* The least spare capacity a joint plan's shares must have over the
 * measured rates: a share that serves only the mean rate of Poisson
 * arrivals (utilization near 1) has no room for them to bunch up, and
 * per-model plans that time-share pool their spare instead. At 1.0 the
 * eight-model mix (50 ms SLO) ran joint plans of 1-3 units at 1.0-1.1x
 * their rate (googlenet on 1 unit, batch 13 in 22 ms; p99 65 ms). Measured
 * on the simulated H100 (sched_compare --only dstack, 10 s points, seeds
 * 1-4): eight models 4044 4088 4344 4156 req/s at 1.0, 4588 4562 4650 4544
 * at 1.1 (1.2 and 1.3 the same); four CNNs unchanged (972 1039 1034 966);
 * two models (seeds 1-3) 4412 4488 4525 at 1.0, 4344 4344 4344 at 1.1
 * and 3981 at 1.2 (seed 1); bursty and step unchanged. 1.05 gives exactly
 * the figures of 1.0 on both mixes (seeds 1-4 and 1-3): near goodput both
 * run splits with 1.05-1.1x to spare, so the constant sits on an edge, and
 * a rule that tells the two mixes apart is still wanted. Since the 12 SMs
 * no unit holds join the last unit (util/units.h), 1.0 gives the same
 * figures as 1.1 on four CNNs (seeds 1-4: 1106 1100 1116 972), eight
 * models (full, seeds 1-2: 4825 4825), bursty and step, and 3-5% more on
 * two models (seeds 1-3: 4456 4506 4550 against 4344): kept at 1.1 all the
 * same, because a device whose driver refuses the remainder
 * (tail_leftover false, not yet checked on a GPU) is where it was
 * chosen. */
#define DS_PLAN_JOINT_MIN_MARGIN 1.1

/* Below one request per second a model counts as idle: ds_plan_joint plans
 * it for that rate, and ds_replan_due sees no change between rates under
 * it (a rate decays toward 0, never reaching it, once requests stop). */
#define DS_IDLE_RATE 1.0

/* The fewest units u on which model m keeps up with `rate_per_s` within
 * `slo_us` while its queue is full: some batch b has L(b, u) <=
 * DS_PLAN_RUN_SHARE x SLO (room for the batch ahead, its own run and a
 * little slack; 0.5 x SLO for a model that never runs that fast) and
 * b / L(b, u) >= rate. Its plan in
 * *out: the batch formulation's batch on those units (batch.h) when that
 * keeps up, else that saturated batch (the policy's timer starts a batch
 * that fills slower than planned at its deadline - 2 L, so the fill term
 * never makes a request late). 0 when no share of the device does (then
 * *out is not written) or the rate is not positive. */
uint32_t ds_plan_min_units(const ds_latency_model *m, uint64_t slo_us, double rate_per_s, ds_model_plan *out);

/* One model's part in a joint plan. */
typedef struct ds_plan_request {
    const ds_latency_model *lat; /* NULL: not planned, holds `units` */
    uint64_t slo_us;             /* 0: not planned, holds `units` */
    double rate_per_s;           /* measured arrival rate (<= 0: idle) */
    uint32_t units;              /* what a model left out holds */
} ds_plan_request;

/* Plan n models that share one device of n_units jointly (the D-STACK
 * policy's shares):
 *
 *   u_i(s) = ds_plan_min_units(model i, rate_i x headroom x s)
 *   s*     = the largest s in [DS_PLAN_JOINT_MIN_MARGIN / headroom, 64]
 *            with sum_i u_i(s) <= n_units (bisection: u_i grows with s)
 *
 * Each model gets u_i(s*) units and the batch planned for them at
 * rate_i x headroom x min(s*, 1): the shares add up to at most the device,
 * every model keeps up with DS_PLAN_JOINT_MIN_MARGIN x its measured rate,
 * and
 * the units the smallest shares leave are spread so that every model keeps
 * the same margin s* over its rate. A per-model plan (ds_plan_model: most
 * throughput per SM) sizes each model alone, and its shares can add up to
 * more than the device while a split that fits exists (resnet50,
 * mobilenet_v2, vgg19 and alexnet at 200 req/s each on the simulated
 * H100, 25 ms SLO: 6 + 3 + 10 + 4 units planned alone, 2 + 1 + 11 + 1
 * jointly; tests/test_plan.c).
 *
 * When no margin fits (the load needs more than the device, or more than it
 * with DS_PLAN_JOINT_MIN_MARGIN to spare) *fits is false
 * and every out[i] is ds_plan_model alone at rate_i x headroom: the shares
 * overlap and the policy time-shares. The same, with OUT_OF_MEMORY
 * returned, when there is no memory for the n x 64 table of saturated
 * rates (out[] is still written). Models whose rate is under DS_IDLE_RATE
 * (unknown, idle, NaN) get the share for DS_IDLE_RATE and the batch for a
 * queue that never empties (registration's: a model whose traffic starts
 * runs full batches on whatever units are spare until its rate is
 * known). A headroom under 1, NaN or infinite counts as 1. Models left out
 * (no latency model or no SLO) get out[i].units = their `units`, counted
 * against the device (sums in 64 bits). Cost: n x n_units x max_batch
 * latency lookups for the table, then n x n_units per bisection step, 24
 * steps. */
dstack_status ds_plan_joint(const ds_plan_request *req, uint32_t n, uint32_t n_units, double headroom,
                            ds_model_plan *out, bool *fits);

/* Re-plan when the measured rate differs from the planned one by more than
 * `factor` either way (1.5 by default in the library), or when nothing was
 * planned from a measurement yet and a rate is known. Rates under
 * DS_IDLE_RATE count as DS_IDLE_RATE. */
bool ds_replan_due(double planned_rate, double measured_rate, double factor);

/* Serialization for the profile cache (src/profile/cache.h), field by field
 * and little-endian, never a struct dump (no padding, no host byte order):
 *     0  magic "DSLM"                          4 bytes
 *     4  layout version (2)                    u32
 *     8  max_batch, n_units, unit_sms,         u32 x 5
 *        sm_count, n_b
 *    28  b[0..n_b)                             u32 x n_b
 *     .  us[i][u], i < n_b, u < n_units        IEEE-754 binary64 as u64 x n_b x n_units
 * The size is exact. Decoding checks every field (grid increasing, sizes in
 * range, latencies positive and finite) and returns PARSE with a reason
 * for anything else: a cache entry is never trusted. */
/* 2: sm_count added; every unit became the whole device (132 SMs, not
 * 120), so tables of version 1 measured another share there */
#define DS_LATENCY_BLOB_VERSION 2u
dstack_status ds_latency_model_encode(const ds_latency_model *m, void **blob, size_t *n_blob);
dstack_status ds_latency_model_decode(const void *blob, size_t n_blob, ds_latency_model **out);

/* The knee in units of the curve L(b, .) (1 when n_units is 1). */
uint32_t ds_latency_knee_units(const ds_latency_model *m, uint32_t b);

#endif
