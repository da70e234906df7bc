/* core.h - the scheduler's decisions, in virtual time.
 *
 * The core owns every request from submit to completion and every decision
 * of what runs where; it has no threads, no locks and no clock of its own:
 * each call takes `now_ns`, and ds_core_step answers with the batches to
 * start now and the time it next wants to be woken. Two drivers run it:
 *
 *   sched.c  the real-time driver behind the public API: a lock around every
 *            core call, a worker thread that sleeps on CLOCK_MONOTONIC until
 *            the next event or the core's wake-up time, the completion ring
 *            that dstack_poll drains;
 *   des.c    the discrete-event driver: virtual time that jumps from event to
 *            event (arrivals of a trace, batch ends of the sim executor, the
 *            core's timers), no threads, no sleeping.
 *
 * Costs: a step costs O(models) per decision plus O(1) amortized per
 * request it moves, and nothing scans a queue: deadlines from the SLO grow
 * with arrival order, so a forward-only cursor finds the earliest of them;
 * requests with a deadline of their own sit in an indexed min-heap
 * (O(log n) for those only); a request expired in the middle of a queue is
 * a tombstone skipped at the head. Submit is O(1) (O(log n) with an own
 * deadline); a model
 * handle resolves in O(1) through a slot table with generation numbers, so
 * models that came and went cost nothing once their completions are out.
 *
 * Exactly-once: a request lives in exactly one place (its queue, a running
 * batch) until the core emits its completion through the driver's `emit`
 * callback, exactly once. Deadlines: a request whose deadline can no longer
 * be met (now + the model's fastest predicted run > deadline; with no
 * prediction, now > deadline) completes as DEADLINE_MISSED without running,
 * at that very time (the core asks to be woken for it).
 */
#ifndef DS_SCHED_CORE_H
#define DS_SCHED_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dstack.h"
#include "exec/exec.h"
#include "sched/policy.h"
#include "util/hist.h"

#define DS_CORE_MAX_UNITS 64 /* units_busy is one 64-bit mask */

/* What the scheduler needs to know of a model. */
typedef struct ds_sched_model_config {
    ds_exec_plan *plan;       /* borrowed: the caller frees it after remove */
    uint32_t n_inputs, n_outputs;
    size_t input_bytes[DSTACK_MAX_IO];  /* of ONE sample */
    size_t output_bytes[DSTACK_MAX_IO];
    uint32_t batch_size;      /* samples the policy aims for */
    uint32_t max_batch;
    uint32_t unit_count;      /* SM share in partition units (the knee) */
    uint64_t slo_ns;          /* 0 = no deadline */
    ds_latency_fn latency;    /* optional prediction, see policy.h */
    const void *latency_arg;
    void *owner;              /* the API layer's model data, opaque here */
} ds_sched_model_config;

typedef struct ds_core ds_core;

/* Receives each completion once, in order, with the number of samples its
 * request carried (hand them back to ds_core_polled). Called from inside
 * core calls. */
typedef void (*ds_core_emit_fn)(void *arg, const dstack_completion *c, uint32_t samples);

typedef struct ds_core_config {
    const ds_policy_ops *policy;
    uint32_t n_units;         /* 1..DS_CORE_MAX_UNITS */
    ds_core_emit_fn emit;
    void *emit_arg;
} ds_core_config;

/* A batch the driver must hand to the executor. The pointers stay valid
 * until ds_core_batch_done for this model. */
typedef struct ds_core_start {
    dstack_model *model;
    ds_exec_plan *plan;
    ds_exec_batch batch;      /* batch.batch = samples */
    uint32_t first_unit, unit_count;
} ds_core_start;

typedef struct ds_core_totals {
    uint64_t unit_busy_ns;    /* time-integral of the units held by running batches (their union) */
    uint64_t whole_busy_ns;   /* time a batch held every unit: it ran on the whole device, the SMs
                               * no unit holds included (util/units.h); batches that hold
                               * every unit together but not one alone do not count */
    uint64_t tail_busy_ns;    /* time some batch held the last unit: where the SMs no unit holds
                               * join the ranges that end there (util/units.h), they worked */
    uint64_t batches, samples_run;
    uint32_t running;         /* batches running now */
    uint32_t units_in_use;    /* units covered by running batches now */
    uint64_t decisions;       /* batches the policy started */
    uint64_t cycle_ns;        /* longest mean gap between two starts of one model */
} ds_core_totals;

/* A per-model record a driver may hand to the executor as the `done`
 * argument: it lives as long as the model, and a model is never freed while
 * a batch of it runs. The core sets `model`; `driver` is the driver's. */
typedef struct ds_core_run_tag {
    void *driver;
    dstack_model *model;
} ds_core_run_tag;
ds_core_run_tag *ds_core_run_tag_of(ds_core *c, dstack_model *m);

/* The units a core can hand out on `dev`: its units, 1..DS_CORE_MAX_UNITS. */
uint32_t ds_core_units_of(const ds_device_info *dev);

dstack_status ds_core_create(const ds_core_config *cfg, ds_core **out);
void ds_core_destroy(ds_core *c);

/* Add a model whose queue holds at most `capacity` samples outstanding
 * (queued + running + completed but not yet acknowledged with
 * ds_core_polled). */
dstack_status ds_core_add_model(ds_core *c, const ds_sched_model_config *cfg, uint32_t capacity,
                                uint64_t now_ns, dstack_model **out);
/* Refuse its submits and cancel its queue (CANCELLED). *running tells
 * whether a batch of it still runs: then call ds_core_free_model after its
 * ds_core_batch_done. */
dstack_status ds_core_remove_model(ds_core *c, dstack_model *m, uint64_t now_ns, bool *running);
/* Forget a removed model whose batch is done; returns its owner pointer.
 * The handle answers NOT_FOUND from now on. */
void *ds_core_free_model(ds_core *c, dstack_model *m);
bool ds_core_model_running(const ds_core *c, const dstack_model *m);
/* Any live model (for destroy), NULL if none. */
dstack_model *ds_core_any_model(const ds_core *c);
uint32_t ds_core_model_count(const ds_core *c);
/* The owner pointer of a live model, or NOT_FOUND / SHUTTING_DOWN
 * (being removed). */
dstack_status ds_core_model_owner(const ds_core *c, const dstack_model *m, void **owner);
/* Change a live model's batch size and share (the batch optimizer re-plans). */
dstack_status ds_core_model_update(ds_core *c, dstack_model *m, uint32_t batch_size, uint32_t unit_count);

/* Measured arrival rate of a live model's samples (per s), 0 if unknown. */
double ds_core_model_rate(const ds_core *c, const dstack_model *m, uint64_t now_ns);

/* Queue a request. Checks the buffers against the model (n_samples each:
 * request->n_samples, 1 when the caller's struct predates it). */
dstack_status ds_core_submit(ds_core *c, dstack_model *m, const dstack_request *req, uint64_t now_ns,
                             dstack_ticket *ticket);
/* The driver finished a batch of m (executor done, or run refused). */
void ds_core_batch_done(ds_core *c, dstack_model *m, dstack_status status, uint64_t now_ns);
/* A completion of m was handed to the caller: its samples leave the
 * outstanding count. Stale handles are ignored. */
void ds_core_polled(ds_core *c, dstack_model *m, uint32_t samples);
/* Cancel every queue; later submits and steps do nothing. */
void ds_core_shutdown(ds_core *c, uint64_t now_ns);
bool ds_core_is_shut_down(const ds_core *c);

/* Expire what must expire, then ask the policy until it starts nothing.
 * Writes at most `max` starts (the policy is not asked for more) and
 * returns their number; *wake_ns is the time the core wants to be called
 * again (UINT64_MAX: only at the next event). */
size_t ds_core_step(ds_core *c, uint64_t now_ns, ds_core_start *out, size_t max, uint64_t *wake_ns);

dstack_status ds_core_stats(const ds_core *c, const dstack_model *m, uint64_t now_ns,
                            dstack_model_stats *out);
void ds_core_totals_get(const ds_core *c, ds_core_totals *out);
/* A live model's share in units now (0 if unknown handle). */
uint32_t ds_core_model_units(const ds_core *c, const dstack_model *m);
/* Per-model unit-time granted (units x ns of finished batches). */
uint64_t ds_core_model_unit_ns(const ds_core *c, const dstack_model *m);

#endif /* DS_SCHED_CORE_H */
