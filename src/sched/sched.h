/* sched.h - the real-time driver of the scheduler core, behind the public API.
 *
 * The decisions (queues, batching, deadlines, the policy) are core.c's; this
 * driver adds what a live process needs: one lock around every core call, a
 * worker thread that sleeps on CLOCK_MONOTONIC until the next event (a
 * submit, a batch done, a model change) or the core's own wake-up time (a
 * batch to close, a deadline to enforce), the executor calls (made with the
 * lock released), and the completion ring that dstack_poll drains.
 *
 * Exactly-once: a request accepted by ds_sched_submit lives in exactly one
 * place at a time (the core's queue, a running batch, the completion ring)
 * and each move happens under the lock, so it is answered once whatever the
 * interleaving of submit, the worker, unregister and shutdown.
 *
 * Backpressure: a model accepts at most `queue_capacity` outstanding samples
 * (queued + running + completed but not yet polled), so memory is bounded
 * even when the caller stops polling; beyond that, QUEUE_FULL. Room in the
 * completion ring is reserved when a model is added, so completing never
 * allocates and never fails.
 *
 * Removed models: freed as soon as their running batch is done; their
 * unpolled completions keep only the handle value, which no longer resolves
 * (NOT_FOUND), so nothing is kept for models that came and went.
 */
#ifndef DS_SCHED_H
#define DS_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "dstack.h"
#include "exec/exec.h"
#include "sched/core.h"
#include "sched/policy.h"
#include "util/clock.h"

typedef struct ds_sched ds_sched;

typedef struct ds_sched_config {
    const ds_clock *clock;    /* must be CLOCK_MONOTONIC-based: the worker's
                               * timed waits use that clock */
    ds_executor *exec;
    const ds_policy_ops *policy;
    uint32_t queue_capacity;
} ds_sched_config;

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
 * batch, then forget it (a stale handle gives NOT_FOUND). Returns the owner
 * pointer in *owner for the caller to free. */
dstack_status ds_sched_remove_model(ds_sched *s, dstack_model *m, void **owner);
/* Remove any one live model (after shutdown, for destroy): OK with its
 * owner, NOT_FOUND when none is left. */
dstack_status ds_sched_take_any_owner(ds_sched *s, void **owner);
/* The owner pointer of a live model of s, or NOT_FOUND. */
dstack_status ds_sched_model_owner(ds_sched *s, const dstack_model *m, void **owner);
uint32_t ds_sched_model_count(ds_sched *s);
/* New batch size and share for a live model (the batch optimizer re-plans). */
dstack_status ds_sched_model_update(ds_sched *s, dstack_model *m, uint32_t batch_size,
                                    uint32_t unit_count);

dstack_status ds_sched_submit(ds_sched *s, dstack_model *m, const dstack_request *req,
                              dstack_ticket *ticket);
dstack_status ds_sched_poll(ds_sched *s, dstack_completion *out, size_t max, int64_t timeout_us,
                            size_t *n_out);
dstack_status ds_sched_stats(ds_sched *s, const dstack_model *m, dstack_model_stats *out);
/* The core's totals, and the time since creation (for utilization). */
void ds_sched_totals(ds_sched *s, ds_core_totals *out, uint64_t *elapsed_ns);
uint32_t ds_sched_model_units(ds_sched *s, const dstack_model *m);
/* Measured arrival rate of a live model, per s (0 unknown). */
double ds_sched_model_rate(ds_sched *s, const dstack_model *m);

uint64_t ds_sched_now_ns(const ds_sched *s);

#endif /* DS_SCHED_H */
