/* policy.h - scheduling policies behind one table of functions.
 *
 * A policy sees a snapshot of the queues and of the free partition units
 * (ds_sched_view) and answers one question at a time: start this batch now
 * (model, samples, units), or nothing now and wake me at time T. It does no
 * I/O, reads no clock (the view carries `now_ns`) and keeps its own state
 * (create/destroy), so the same policy code runs under the real-time worker
 * thread and under the discrete-event driver's virtual clock, and is
 * unit-tested on hand-made views.
 *
 * The policies themselves and their algorithms are documented in policy.c
 * (temporal and the baselines) and dstack_policy.c (D-STACK).
 */
#ifndef DS_SCHED_POLICY_H
#define DS_SCHED_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "dstack.h"

/* Predicted run time in ns of a batch of `samples` on `units` partition
 * units, 0 when unknown. Supplied by the API layer from the latency model
 * (src/batch); the scheduler never knows where it comes from. Must be cheap,
 * pure and thread-safe. */
typedef uint64_t (*ds_latency_fn)(const void *arg, uint32_t samples, uint32_t units);

/* A policy's per-model scratch, kept by the scheduler core for the model's
 * life and zeroed when the model is added. */
typedef struct ds_policy_mstate {
    int64_t credit_ns;     /* deficit round robin: service the model is owed */
    uint64_t last_start_ns;/* last time a batch of it started */
    uint64_t served_ns;    /* predicted service time granted so far */
    uint32_t home_first;   /* static placement: first unit, count (0 = none) */
    uint32_t home_count;
} ds_policy_mstate;

typedef struct ds_sched_model_view {
    uint64_t id;                /* stable for the model's life, increasing */
    uint32_t queued;            /* requests waiting */
    uint32_t queued_samples;    /* samples waiting (a request may carry several) */
    uint32_t head_samples;      /* samples of the request at the head */
    uint64_t oldest_submit_ns;  /* of the head of the queue; valid if queued */
    uint64_t oldest_deadline_ns;/* earliest deadline among queued; 0 = none */
    uint32_t batch_size;        /* samples the model aims for */
    uint32_t max_batch;         /* most samples a batch may hold */
    uint32_t unit_count;        /* its SM share in units (knee) */
    uint64_t slo_ns;            /* 0 = none */
    bool running;               /* a batch of it runs now */
    uint32_t running_first, running_count; /* its units while running */
    uint64_t running_end_ns;    /* predicted end of that batch; 0 unknown */
    double arrival_rps;         /* measured arrival rate of samples */
    ds_latency_fn latency;      /* may be NULL: nothing predicted */
    const void *latency_arg;
    ds_policy_mstate *ps;       /* the policy's scratch for this model */
} ds_sched_model_view;

typedef struct ds_sched_view {
    uint64_t now_ns;
    uint32_t n_models;
    ds_sched_model_view *models;
    uint32_t n_units;           /* units of the device */
    uint64_t units_busy;        /* bit u set: unit u is in use (n_units <= 64) */
    uint32_t n_running;         /* batches running now */
} ds_sched_view;

typedef struct ds_sched_decision {
    uint32_t model;             /* index into view.models */
    uint32_t batch;             /* samples, >= 1; whole requests are taken up
                                 * to this many samples (at least one request) */
    uint32_t first_unit;
    uint32_t unit_count;        /* units [first, first+count) */
} ds_sched_decision;

typedef struct ds_policy_ops {
    const char *name;
    dstack_policy id;
    /* true: decisions may use units that are busy (every batch on the whole
     * device, the hardware shares SMs: streams, ideal). false: the core
     * refuses any decision that overlaps a running batch's units. */
    bool shares_units;
    /* Optional state. create returns NULL on failure (no memory). */
    void *(*create)(void);
    void (*destroy)(void *state);
    /* Fill *d and return true to start a batch now. Return false to start
     * nothing now; then *wake_ns is the time the policy wants to be asked
     * again (0: only at the next event: submit, batch done, model change).
     * The core calls pick again after each batch it starts. */
    bool (*pick)(void *state, ds_sched_view *view, ds_sched_decision *d, uint64_t *wake_ns);
    /* true: it hands out ranges of units smaller than the device (dstack,
     * static_spatial), so every range is made before serving (dstack_create)
     * and it runs on green-context partitions where the others take the
     * whole device as it is. */
    bool partial_shares;
    /* The most units each of n live models (in view order, planned shares
     * `knees`) can ever get, into out[0..n): static_spatial's home
     * partitions. NULL: any model may get the whole device (temporal and
     * streams always, dstack when units are spare). The core expires a
     * request when even the fastest share the policy may give cannot make
     * its deadline, and re-asks whenever a model comes, goes or is
     * re-planned. */
    void (*max_units)(const uint32_t *knees, uint32_t n, uint32_t n_units, uint32_t *out);
} ds_policy_ops;

/* static_spatial's home partition sizes (its max_units): knees scaled down
 * to fit, every model at least one unit while n <= n_units (0 beyond). */
void ds_static_counts(const uint32_t *knees, uint32_t n, uint32_t n_units, uint32_t *count);

/* The table entry for `policy`, or NULL if it is not implemented. */
const ds_policy_ops *ds_policy_find(dstack_policy policy);

/* ---- shared by the policies (policy.c) ---- */

/* Units [first, first + count) as a bit mask (count <= 64). The core uses
 * the same mask for its busy units. */
static inline uint64_t ds_unit_mask(uint32_t first, uint32_t count)
{
    uint64_t ones = count >= 64 ? ~0ull : ((1ull << count) - 1);
    return ones << first;
}

/* Model m's planned share in units, at least 1 and at most the device. */
uint32_t ds_policy_share(const ds_sched_view *v, const ds_sched_model_view *m);

/* Lower *wake to t when t is a time (non-zero) before it (0: no time yet). */
void ds_policy_wake_min(uint64_t *wake, uint64_t t);

/* Dynamic batching: is model m's batch ready to start at view->now_ns on
 * `units` units? Ready when it has batch_size samples queued, or when its
 * oldest request reaches deadline - 2 L(batch_size, units) (room for a
 * batch ahead of it and its own run, as the batch optimizer assumes), or when
 * nothing can be predicted (no SLO or no latency model: start at once, as
 * before). When not ready, *go_ns is the time it becomes ready (a timer,
 * not a busy loop). */
bool ds_policy_batch_ready(const ds_sched_view *v, const ds_sched_model_view *m, uint32_t units,
                           uint64_t *go_ns);

/* Samples to take for model m: its batch size, capped by what is queued. */
uint32_t ds_policy_batch_samples(const ds_sched_model_view *m);

/* The same, grown toward max_batch while a backlog is queued and the
 * oldest request still makes its deadline on `units` (every policy uses
 * this, as Triton's dynamic batcher takes up to its max batch). */
uint32_t ds_policy_batch_samples_at(const ds_sched_view *v, const ds_sched_model_view *m, uint32_t units);

/* Predicted run time of `samples` of m on `units`, 0 when unknown. */
uint64_t ds_policy_latency(const ds_sched_model_view *m, uint32_t samples, uint32_t units);

#endif
