/* des.h - the discrete-event driver: the scheduler core in virtual time.
 *
 * No threads and no sleeping: a virtual clock jumps from event to event
 * (the next arrival of a trace, the next batch end of the executor, the
 * core's next wake-up), so a minute of serving replays in milliseconds and
 * the same trace gives the same completions, byte for byte. It runs the
 * same core and the same policy code as the real-time driver; benchmarks
 * (bench/sim_speed, bench/sched_compare) and tests use it.
 *
 * The executor must run in virtual time: by default the sim executor
 * (ds_sim_exec_set_virtual / next_ns / advance); tests may pass their own
 * three functions.
 */
#ifndef DS_SCHED_DES_H
#define DS_SCHED_DES_H

#include <stddef.h>
#include <stdint.h>

#include "sched/core.h"
#include "util/clock.h"

typedef struct ds_des ds_des;

typedef struct ds_des_exec_ops {
    void (*set_virtual)(ds_executor *ex, const ds_clock *clock);
    uint64_t (*next_ns)(ds_executor *ex);      /* UINT64_MAX: nothing runs */
    void (*advance)(ds_executor *ex, uint64_t t_ns);
} ds_des_exec_ops;

typedef struct ds_des_config {
    const ds_policy_ops *policy;
    ds_executor *exec;                 /* borrowed */
    const ds_des_exec_ops *exec_ops;   /* NULL: the sim executor's */
    uint32_t queue_capacity;           /* per model, samples; 0 = 1024 */
} ds_des_config;

typedef struct ds_des_arrival {
    uint64_t t_ns;
    uint32_t model;    /* index in order of ds_des_add_model */
    uint32_t samples;  /* 0 is taken as 1 */
} ds_des_arrival;

/* Every completion, in order, with its request's sample count. */
typedef void (*ds_des_completion_fn)(void *arg, uint32_t model, const dstack_completion *c,
                                     uint32_t samples);

/* Called every `period_ns` of virtual time during ds_des_run (off the
 * request path, as the library's planner thread is): it may read rates and
 * change models with ds_des_model_rate / ds_des_model_update. */
typedef void (*ds_des_replan_fn)(void *arg, ds_des *d, uint64_t now_ns);
void ds_des_set_replan(ds_des *d, uint64_t period_ns, ds_des_replan_fn fn, void *arg);
double ds_des_model_rate(ds_des *d, uint32_t model);
dstack_status ds_des_model_update(ds_des *d, uint32_t model, uint32_t batch_size, uint32_t unit_count);

dstack_status ds_des_create(const ds_des_config *cfg, ds_des **out);
void ds_des_destroy(ds_des *d);

/* Add a model (before ds_des_run); its index is the order of addition. The
 * driver makes the request buffers (the sim writes zeros into outputs). */
dstack_status ds_des_add_model(ds_des *d, const ds_sched_model_config *cfg);

/* Fill cfg's inputs and outputs (counts, bytes of one sample) from graph g:
 * what a benchmark or test needs to add a model it built itself. */
void ds_des_io_from_graph(const ds_graph *g, ds_sched_model_config *cfg);

/* Replay `trace` (sorted by time) until every request is answered, or
 * until virtual time passes end_ns (0 = no limit): then the rest is
 * cancelled. Arrivals refused with QUEUE_FULL are counted in the model's
 * stats (rejected_queue_full), not completed. */
dstack_status ds_des_run(ds_des *d, const ds_des_arrival *trace, size_t n, uint64_t end_ns,
                         ds_des_completion_fn on_completion, void *arg);

uint64_t ds_des_now_ns(const ds_des *d);
dstack_status ds_des_stats(ds_des *d, uint32_t model, dstack_model_stats *out);
void ds_des_totals(ds_des *d, ds_core_totals *out);
uint64_t ds_des_model_unit_ns(ds_des *d, uint32_t model);
/* The virtual clock (reads the driver's now). */
const ds_clock *ds_des_clock(ds_des *d);

#endif /* DS_SCHED_DES_H */
