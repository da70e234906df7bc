/* policy.h - scheduling policies behind one table of functions.
 *
 * A policy sees a snapshot of the queues and of the free partition units
 * (ds_sched_view) and answers one question: which model runs next, with how
 * many requests, on which units. It does no I/O and keeps its own state, so
 * the same policy code runs under the real worker thread and under the
 * simulator's virtual clock, and is unit-tested on hand-made views.
 *
 * Policies available now:
 *   temporal  one batch at a time on the whole device; the model whose oldest
 *             request is oldest goes first (FCFS across models), with as many
 *             of its queued requests as fit its batch size. This is temporal
 *             sharing as Triton and Clipper do it by default: the baseline
 *             D-STACK is measured against, and the first scheduler of the
 *             request path.
 * The D-STACK policy (knee partitions + fair spatio-temporal cycle), and the
 * streams and static_spatial baselines, come with the scheduler issue and
 * register here; until then ds_policy_find returns NULL for them and the
 * default resolves to temporal (dstack_ctx_info says which runs).
 */
#ifndef DS_SCHED_POLICY_H
#define DS_SCHED_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "dstack.h"

typedef struct ds_sched_model_view {
    uint32_t queued;            /* requests waiting */
    uint64_t oldest_submit_ns;  /* of the head of the queue; valid if queued */
    uint64_t oldest_deadline_ns;/* earliest deadline among queued; 0 = none */
    uint32_t batch_size;        /* the batch the model aims for */
    uint32_t unit_count;        /* its SM share in units (knee) */
    bool running;               /* a batch of it runs now */
} ds_sched_model_view;

typedef struct ds_sched_view {
    uint64_t now_ns;
    uint32_t n_models;
    const ds_sched_model_view *models;
    uint32_t n_units;           /* units of the device */
    uint64_t units_busy;        /* bit u set: unit u is in use (n_units <= 64) */
    uint32_t n_running;         /* batches running now */
} ds_sched_view;

typedef struct ds_sched_decision {
    uint32_t model;             /* index into view.models */
    uint32_t batch;             /* 1..queued */
    uint32_t first_unit;
    uint32_t unit_count;        /* units [first, first+count) must be free */
} ds_sched_decision;

typedef struct ds_policy_ops {
    const char *name;
    dstack_policy id;
    /* Fill *d and return true to start a batch now; false to wait for the
     * next event (a submit or a batch completion). */
    bool (*pick)(void *state, const ds_sched_view *view, ds_sched_decision *d);
} ds_policy_ops;

/* The table entry for `policy`, or NULL if it is not implemented. */
const ds_policy_ops *ds_policy_find(dstack_policy policy);

#endif
