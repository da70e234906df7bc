/* exec.h - the one executor interface every backend implements.
 *
 * The scheduler sees a backend only through this table: build a plan for a
 * model, run the plan at batch b on a partition, be told when it is done.
 * cpu, cuda and sim implement it; nothing above this line knows about cuDNN,
 * and nothing below it knows about SLOs or queues.
 *
 * Partitions are values. The device is cut into `n_units` equal units of
 * `unit_sms` SMs (green-context granularity on cuda: 8 SMs on Hopper); a
 * partition is a run of consecutive units plus the backend's handle for it.
 * Backends cache whatever a partition needs (green context, stream, cuDNN
 * handle) so partition_get costs nothing on the hot path. Which partitions
 * run side by side, and that they never overlap, is the scheduler's
 * decision: backends run what they are given.
 */
#ifndef DS_EXEC_H
#define DS_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dstack.h"
#include "graph/graph.h"

typedef struct ds_partition {
    uint32_t first_unit;
    uint32_t unit_count; /* units; the whole device is (0, n_units) */
    uint32_t sm_count;   /* SMs really granted (read back from the device) */
    void *handle;        /* backend's: green-context streams (cuda), NULL (cpu) */
} ds_partition;

typedef struct ds_device_info {
    char name[DSTACK_NAME_LEN];
    uint32_t sm_count;   /* cpu: worker threads */
    uint32_t unit_sms;   /* SMs per partition unit */
    uint32_t n_units;    /* units the scheduler may hand out */
    dstack_partitioning partitioning; /* in use, never AUTO */
    /* GREEN_CTX: the SMs no unit holds join every range that ends at the
     * last unit, not only the range of every unit (util/units.h) */
    bool tail_leftover;
    /* What the backend's timings depend on beyond the name and SM counts,
     * for the profile cache key: on cuda the cuDNN, cuBLAS and driver
     * versions ("cudnn 91900 cublas 130100 driver 13000"); "" elsewhere. */
    char version[96];
} ds_device_info;

/* One kernel launch as a backend's tracer saw it (cuda: a CUPTI activity
 * record), for the analytic knee (src/knee/analytic.h). */
typedef struct ds_kernel_record {
    uint64_t grid_blocks;    /* gridX x gridY x gridZ */
    uint32_t block_threads;  /* blockX x blockY x blockZ */
    uint32_t regs_per_thread;
    uint32_t smem_bytes;     /* static + dynamic shared memory per block */
    uint32_t smem_config;    /* shared memory per SM the launch ran with; 0 = unknown */
    uint64_t start_ns, end_ns;
    char name[64];           /* the kernel's (mangled) name, truncated */
} ds_kernel_record;

typedef struct ds_plan_options {
    uint32_t max_batch;        /* plans must accept every batch 1..max_batch */
    dstack_precision precision;
    uint64_t max_memory_bytes; /* device/host memory the plan may take; 0 = no limit.
                                  Over it: RESOURCE_LIMIT before allocating */
} ds_plan_options;

/* One batch: `batch` requests, each with the graph's inputs and outputs.
 * inputs[i * n_inputs + j] is request i's input j (product(dims) floats of
 * the graph's input tensor j), likewise outputs. */
typedef struct ds_exec_batch {
    uint32_t batch;
    const void *const *inputs;
    void *const *outputs;
} ds_exec_batch;

/* Called exactly once per accepted run, from any thread (a CUDA host
 * callback, the scheduler thread): must not block and must not call back
 * into the executor. */
typedef void (*ds_exec_done_fn)(void *arg, dstack_status status);

typedef struct ds_executor ds_executor;
typedef struct ds_exec_plan ds_exec_plan; /* backend-defined */

typedef struct ds_executor_ops {
    const char *name; /* "cpu", "cuda", "sim" */
    /* Build everything the model needs for batches 1..o->max_batch: memory,
     * descriptors, algorithms, uploaded weights. The graph outlives the plan. */
    dstack_status (*plan_create)(ds_executor *ex, const ds_graph *g, const ds_plan_options *o,
                                 ds_exec_plan **out);
    void (*plan_destroy)(ds_executor *ex, ds_exec_plan *plan);
    /* Start running `b` on partition `part`. On OK, `done` is called exactly
     * once, possibly before run returns; the request buffers must stay valid
     * until then. On failure done is not called. A plan runs one batch at a
     * time: the scheduler never starts a plan that is still running. */
    dstack_status (*run)(ds_executor *ex, ds_exec_plan *plan, const ds_exec_batch *b,
                         const ds_partition *part, ds_exec_done_fn done, void *done_arg);
    /* The partition of `unit_count` units starting at `first_unit`; cheap
     * (cached). INVALID_ARGUMENT if it does not fit the device. */
    dstack_status (*partition_get)(ds_executor *ex, uint32_t first_unit, uint32_t unit_count,
                                   ds_partition *out);
    /* Wait for every run to finish and free the executor. */
    void (*destroy)(ds_executor *ex);
    /* Optional (NULL: plain aligned malloc/free). Host memory this backend
     * moves to and from the device without a staging copy: page-locked on
     * cuda. run() takes the fast path for request buffers that are such
     * memory. `bytes` comes checked from dstack_host_alloc: a non-zero
     * multiple of 64, at most PTRDIFF_MAX. */
    dstack_status (*host_alloc)(ds_executor *ex, size_t bytes, void **out);
    void (*host_free)(ds_executor *ex, void *ptr);
    /* Optional (NULL on real devices). The time the backend's own model
     * predicts for `batch` on `unit_count` units, alone on the device, in
     * ns: on sim this IS the measurement (the simulator is its model), so
     * profiling asks instead of running in real time. */
    dstack_status (*model_time_ns)(ds_executor *ex, ds_exec_plan *plan, uint32_t batch, uint32_t unit_count,
                                   uint64_t *out_ns);
    /* Optional (NULL: the backend has no kernel tracer). Trace the kernels
     * that the runs between trace_begin and trace_end launch (cuda: CUPTI's
     * activity API, loaded at run time; UNSUPPORTED with the reason when it
     * is missing). The tracer is process-wide: trace_begin waits for any
     * other executor's trace to end, so call trace_end on the same thread
     * exactly once after every successful trace_begin. Other work on the
     * device in between is traced too: trace an otherwise idle device.
     * trace_end hands back *out (malloc'ed, the caller frees; NULL when
     * *n is 0), in launch order. */
    dstack_status (*trace_begin)(ds_executor *ex);
    dstack_status (*trace_end)(ds_executor *ex, ds_kernel_record **out, size_t *n);
} ds_executor_ops;

struct ds_executor {
    const ds_executor_ops *ops;
    ds_device_info device;
};

typedef struct ds_executor_config {
    int device;                       /* CUDA ordinal */
    dstack_partitioning partitioning; /* may be AUTO */
    uint32_t cpu_threads;             /* 0 = one per core */
    uint32_t sim_sm_count;
    /* cuda: fail with NO_DEVICE before loading anything when there is no
     * CUDA driver (backend auto on a host without a GPU stays small). */
    bool driver_first;
} ds_executor_config;

/* Backend constructors. Each fails with a status and a message, never a
 * crash: cuda gives NO_DEVICE without driver or GPU, UNSUPPORTED when the
 * library was built without CUDA. */
dstack_status ds_exec_cpu_create(const ds_executor_config *cfg, ds_executor **out);
dstack_status ds_exec_cuda_create(const ds_executor_config *cfg, ds_executor **out);

#endif /* DS_EXEC_H */
