/* sched.h - request queues, batching, deadlines, completions, policies.
 *
 * The scheduler owns the request path: per-model bounded queues that submit
 * appends to, a worker thread that asks the policy for the next (model,
 * batch, partition), hands the batch to the executor and turns the
 * executor's done signal into completions, and the completion queue that
 * dstack_poll drains. It knows models only as queues with a plan, a batch
 * size, an SM share and an SLO; it knows backends only through exec.h; it
 * reads time only through a ds_clock.
 *
 * Exactly-once: a request accepted by ds_sched_submit lives in exactly one
 * place at a time (its model's queue, a running batch, the completion
 * queue) and each move happens under the scheduler lock, so it is answered
 * once whatever the interleaving of submit, the worker, unregister and
 * shutdown.
 *
 * Backpressure: a model accepts at most `queue_capacity` outstanding
 * requests (queued + running + completed but not yet polled), so memory is
 * bounded even when the caller stops polling; beyond that, QUEUE_FULL.
 */
#ifndef DS_SCHED_H
#define DS_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "dstack.h"
#include "exec/exec.h"
#include "sched/policy.h"
#include "util/clock.h"

typedef struct ds_sched ds_sched;

typedef struct ds_sched_config {
    const ds_clock *clock;
    ds_executor *exec;
    const ds_policy_ops *policy;
    uint32_t queue_capacity;
} ds_sched_config;

/* What the scheduler needs to know of a model. */
typedef struct ds_sched_model_config {
    ds_exec_plan *plan;       /* borrowed: the caller frees it after remove */
    uint32_t n_inputs, n_outputs;
    size_t input_bytes[DSTACK_MAX_IO];
    size_t output_bytes[DSTACK_MAX_IO];
    uint32_t batch_size;      /* the batch the policy aims for */
    uint32_t max_batch;
    uint32_t unit_count;      /* SM share in partition units (the knee) */
    uint64_t slo_ns;          /* 0 = no deadline */
    void *owner;              /* the API layer's model data, opaque here */
} ds_sched_model_config;

dstack_status ds_sched_create(const ds_sched_config *cfg, ds_sched **out);
/* Shutdown (if not yet), join the worker, free everything. */
void ds_sched_destroy(ds_sched *s);
/* See dstack_shutdown. Idempotent. */
void ds_sched_shutdown(ds_sched *s);
bool ds_sched_is_shut_down(ds_sched *s);

/* Register a model with the scheduler; *out is the public handle. */
dstack_status ds_sched_add_model(ds_sched *s, const ds_sched_model_config *cfg,
                                 dstack_model **out);
/* Stop the model: refuse its submits, cancel its queue, wait for its running
 * batch. The handle stays known (as removed) until ds_sched_destroy so that
 * a stale handle gives NOT_FOUND instead of a crash. Returns the owner
 * pointer in *owner for the caller to free. */
dstack_status ds_sched_remove_model(ds_sched *s, dstack_model *m, void **owner);
/* Remove any one live model (after shutdown, for destroy): OK with its
 * owner, NOT_FOUND when none is left. */
dstack_status ds_sched_take_any_owner(ds_sched *s, void **owner);
/* The owner pointer of a live model of s, or NOT_FOUND. The owner's
 * immutable data may be read afterwards; the model stays live until the
 * caller's own remove. */
dstack_status ds_sched_model_owner(ds_sched *s, const dstack_model *m, void **owner);
uint32_t ds_sched_model_count(ds_sched *s);

dstack_status ds_sched_submit(ds_sched *s, dstack_model *m, const dstack_request *req,
                              dstack_ticket *ticket);
dstack_status ds_sched_poll(ds_sched *s, dstack_completion *out, size_t max, int64_t timeout_us,
                            size_t *n_out);
dstack_status ds_sched_stats(ds_sched *s, const dstack_model *m, dstack_model_stats *out);

uint64_t ds_sched_now_ns(const ds_sched *s);

#endif /* DS_SCHED_H */
