/* batch.h - the SLO-aware batch size: the most throughput per SM that still
 * lets every request meet its latency objective.
 *
 * Formulation. The model runs on a share of s SMs (its knee; 0 where SM
 * shares do not apply, as on cpu). L(b) is the latency of a batch of b at
 * that share, for b = 1..max_batch (measured, or from the latency model).
 * Requests arrive at rate lambda. The worst request of a batch of b is its
 * first one, which
 *   - waits for the batch ahead of it to finish:        at most L(b)
 *   - waits for its own batch to fill with b-1 others:  (b - 1) / lambda
 *   - runs:                                             L(b)
 * so b is feasible when  W(b) = 2 L(b) + (b - 1) / lambda  <=  SLO,
 * and the optimizer picks, among feasible b, the one with the largest
 * throughput per SM  b / (L(b) s)  (s is fixed within one call, so this is
 * the largest b / L(b); ties go to the smaller b, which has less latency).
 *
 * Why the sum and not max(fill, L(b)) + L(b): the fill and the batch ahead
 * overlap only when the batch ahead started when this request arrived;
 * under bursty (Poisson) arrivals a request can find the GPU busy with a
 * batch that just started and then wait for peers as well. The sum is the
 * bound that holds without that assumption; with lambda large it is the
 * "run time within about half the SLO" rule of DESIGN.md.
 * Why not the largest feasible b: L(b) is not linear (wave quantization,
 * algorithm changes between batch sizes), so b / L(b) can fall past some b.
 *
 * Edge cases, each reported in ds_batch_plan.flags:
 *   - slo_us == 0 (no objective): every b is feasible; NO_SLO.
 *   - rate unknown (0, negative or NaN): a batch cannot be counted on to
 *     fill, so b = 1; RATE_UNKNOWN. Re-plan once the rate is known (see
 *     rate.h). INFINITY means a queue that is never empty: no fill time.
 *   - no b is feasible (2 L(1) > SLO): b = 1, the least latency there is;
 *     INFEASIBLE (the scheduler should give more SMs or warn).
 *   - the chosen batch cannot keep up with lambda (b / L(b) < lambda): the
 *     queue grows and requests will miss; OVERLOADED.
 *
 * Pure functions: no clock, no allocation, reentrant.
 */
#ifndef DS_BATCH_BATCH_H
#define DS_BATCH_BATCH_H

#include <stdint.h>

#include "dstack.h"

enum {
    DS_BATCH_NO_SLO = 1u << 0,
    DS_BATCH_RATE_UNKNOWN = 1u << 1,
    DS_BATCH_INFEASIBLE = 1u << 2,
    DS_BATCH_OVERLOADED = 1u << 3
};

typedef struct ds_batch_query {
    uint32_t max_batch; /* largest batch to consider, >= 1 */
    uint64_t slo_us;    /* latency objective per request; 0 = none */
    double rate_per_s;  /* lambda, requests/s; 0 = unknown; INFINITY = saturated */
    uint32_t share_sms; /* SMs of the share L was measured on; 0 = not applicable */
} ds_batch_query;

typedef struct ds_batch_plan {
    uint32_t batch;           /* the batch size to aim for, 1..max_batch */
    uint32_t flags;           /* DS_BATCH_* */
    double latency_us;        /* L(batch) */
    double worst_us;          /* W(batch): 2 L + fill (fill 0 when the rate is unknown) */
    double throughput_per_s;  /* batch / L(batch) */
    double throughput_per_sm; /* throughput_per_s / share_sms; 0 when share_sms is 0 */
} ds_batch_plan;

/* L(batch) in us for batch in 1..max_batch; must be > 0 and finite. */
typedef double (*ds_batch_latency_fn)(void *user, uint32_t batch);

/* Pick the batch for query *q with L given by latency_us(user, b).
 * INVALID_ARGUMENT (message set) when q, latency_us or out is NULL,
 * max_batch is 0, or some L(b) is not a positive finite number; *out is
 * written only on success. */
dstack_status ds_batch_pick_for_slo(const ds_batch_query *q, ds_batch_latency_fn latency_us,
                                    void *user, ds_batch_plan *out);

/* The same with L(b) = latency_us[b - 1], an array of q->max_batch values. */
dstack_status ds_batch_pick_for_slo_array(const ds_batch_query *q, const double *latency_us,
                                          ds_batch_plan *out);

#endif
