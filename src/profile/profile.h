/* profile.h - latency measurement through the executor interface.
 *
 * ds_profile_measure runs a plan at batch b on a partition of u units the
 * way the scheduler would (the same run() and done callback), after
 * `warmup` runs that are thrown away, `reps` times, and keeps the median
 * and the spread (max - min) in us. It works on every backend: on cuda it
 * is a real measurement on a green-context partition; on cpu the partition
 * is the whole pool; on sim the executor's model_time_ns answers at once
 * (the simulator is its own model: running it in real time would only
 * sleep for the time it already knows).
 *
 * The buffers of the runs are zeroed host memory made here; measuring is
 * never done on the request path (registration and re-planning only).
 */
#ifndef DS_PROFILE_PROFILE_H
#define DS_PROFILE_PROFILE_H

#include <stdint.h>

#include "exec/exec.h"
#include "graph/graph.h"

typedef struct ds_profile_point {
    uint32_t batch, units;
    double median_us;
    double spread_us;
    uint32_t reps;
    bool modeled; /* from the backend's model (sim), not timed */
} ds_profile_point;

dstack_status ds_profile_measure(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, uint32_t batch,
                                 uint32_t units, uint32_t warmup, uint32_t reps, ds_profile_point *out);

/* The kernels one batch of `batch` launches on the whole device (every
 * unit), as the backend's tracer records them (cuda: CUPTI, gpu/cupti.h):
 * one untraced warm-up run, one traced run, one untraced run. out->kernels
 * is malloc'ed (the caller frees it); total_us is the last run's time from
 * run() to done (tracing slows a batch by milliseconds), so total_us minus
 * the kernels' time is what the batch spends outside kernels (copies,
 * launch gaps, the host). UNSUPPORTED on backends
 * without a tracer (sim, cpu) or when the tracer is missing or saw no
 * kernel; *out is zeroed on failure. Trace an otherwise idle device. */
typedef struct ds_profile_trace {
    uint32_t batch;
    uint32_t sm_count; /* SMs of the partition traced */
    double total_us;
    ds_kernel_record *kernels;
    size_t n_kernels;
} ds_profile_trace;

dstack_status ds_profile_kernels(ds_executor *ex, ds_exec_plan *plan, const ds_graph *g, uint32_t batch,
                                 ds_profile_trace *out);

#endif
