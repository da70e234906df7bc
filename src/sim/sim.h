/* sim.h - the simulated GPU: device description, graph -> kernels, the
 * event engine that runs kernels of several batches side by side, and the
 * `sim` executor behind src/exec/exec.h.
 *
 * CONTRACT (the scheduler, the DES driver, the knee module and the public
 * API use exactly this; the model itself is documented in kernels.h and
 * engine.h):
 *
 *  - ds_sim_device: what is simulated. ds_sim_device_default() gives the
 *    H100 SXM as measured (132 SMs; green-context units of 8 SMs: 15 units
 *    and 12 SMs left over, which a batch on every unit gets too: that range
 *    is the whole device, util/units.h; partitioning NONE: one unit of all
 *    132 SMs), with
 *    the constants fitted in bench/profiles/h100-sim.txt (compiled in; the
 *    file is the record of the data and the fit).
 *  - ds_sim_kernels(): the kernel list of a graph at batch b (one or more
 *    kernels per node: grid in blocks, blocks per SM, FLOPs and bytes per
 *    block, a launch gap). The knee module reads the same list.
 *  - ds_sim_kernels_time_ns(): the time of a kernel list alone on s SMs
 *    (analytic: sum over kernels of waves x wave time + gap, no contention).
 *  - The executor computes no outputs: run() writes zeros into every output
 *    buffer of the batch (so a caller never reads uninitialised memory) and
 *    completes after the engine's modeled time. It exists to size and
 *    compare scheduling, not to infer.
 *  - Two clocks: by default (public API) the executor runs on the real
 *    monotonic clock with a timer thread that calls `done` when a batch's
 *    modeled end time has passed. ds_sim_exec_set_virtual() switches it to
 *    virtual time for the discrete-event driver: run() then starts the
 *    batch at the virtual time given by the clock the driver passes, no
 *    thread is used, and the driver moves time forward with
 *    ds_sim_exec_next_ns() / ds_sim_exec_advance(), which call the `done`
 *    callbacks of every batch ending at or before that time, in end-time
 *    order (ties: start order), from the caller's thread.
 */
#ifndef DS_SIM_SIM_H
#define DS_SIM_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "dstack.h"
#include "exec/exec.h"
#include "graph/graph.h"
#include "util/clock.h"

typedef struct ds_sim_device {
    char name[DSTACK_NAME_LEN];
    uint32_t sm_count;        /* SMs of the device (132) */
    uint32_t unit_sms;        /* SMs per partition unit (8; NONE: sm_count) */
    uint32_t n_units;         /* units the scheduler hands out (15; NONE: 1) */
    dstack_partitioning partitioning; /* GREEN_CTX or NONE, never AUTO */
    bool tail_leftover;       /* GREEN_CTX: the SMs no unit holds join every range
                                 that ends at the last unit (util/units.h);
                                 false: only the range of every unit has them */
    /* fitted constants, see kernels.h / engine.h for their meaning */
    double sm_flops;          /* FP32 FLOP/s one SM sustains on conv/GEMM tiles */
    double sm_flops_simple;   /* FLOP/s of one SM on elementwise/pool kernels */
    double mem_bw;            /* bytes/s of the whole device (HBM) */
    double sm_mem_bw;         /* bytes/s one SM can pull on its own */
    double launch_gap_ns;     /* per kernel, serial with the kernel */
    double batch_overhead_ns; /* per batch: copies in/out, host callback */
    double host_bw;           /* bytes/s of request data in and out (page-locked) */
    double sat_occupancy;     /* share of an SM's block slots a kernel must hold
                                 there to reach sm_flops / sm_mem_bw (0..1];
                                 0: one block alone already does (kernels.h) */
} ds_sim_device;

/* The H100 SXM as measured; `partitioning` GREEN_CTX/AUTO or NONE (MPS is
 * treated as NONE); sm_count_override 0 keeps 132 (else that many SMs,
 * units of 8, the remainder left over as on the H100). */
void ds_sim_device_default(ds_sim_device *d, dstack_partitioning partitioning,
                           uint32_t sm_count_override);

typedef struct ds_sim_kernel {
    uint32_t node;            /* graph node it comes from */
    uint64_t blocks;          /* grid size */
    uint32_t blocks_per_sm;   /* resident blocks per SM (occupancy) */
    double flops_per_block;
    double bytes;             /* DRAM traffic of the whole kernel */
    uint8_t kind;             /* 0 = GEMM-like tile, 1 = simple (elementwise, pool) */
} ds_sim_kernel;

/* The kernels of graph g at batch b, malloc'ed into *out (caller frees). */
dstack_status ds_sim_kernels(const ds_graph *g, uint32_t batch, const ds_sim_device *dev,
                             ds_sim_kernel **out, uint32_t *n_out);

/* Modeled time of the kernel list alone on `sms` SMs, in ns, including
 * launch gaps and the fixed per-batch overhead (batch_overhead_ns; the
 * request copies, bytes / host_bw, are added by ds_sim_batch_time_ns in
 * kernels.h, which needs the graph's request bytes). */
uint64_t ds_sim_kernels_time_ns(const ds_sim_kernel *k, uint32_t n, uint32_t sms,
                                const ds_sim_device *dev);

/* The time the event engine gives the kernel list alone on units
 * [0, units) of an otherwise idle device, host copies included: the
 * simulator's own answer, used for profiles and the analytic knee. (The
 * closed form ds_sim_batch_time_ns in kernels.h follows the same wave
 * formula but differs from the engine by up to ~20% on kernels with a
 * partial wave, e.g. 128 blocks of 4 per SM on 48 SMs; until the two
 * agree, the engine is the one to trust.) OUT_OF_MEMORY, INVALID_ARGUMENT
 * for units outside the device. */
dstack_status ds_sim_alone_ns(const ds_sim_device *dev, const ds_sim_kernel *k, uint32_t n, uint32_t units,
                              double host_bytes, uint64_t *out_ns);

/* The sim executor. cfg->partitioning and cfg->sim_sm_count choose the
 * device (ds_sim_device_default). */
dstack_status ds_exec_sim_create(const ds_executor_config *cfg, ds_executor **out);

/* The device a sim executor simulates. */
const ds_sim_device *ds_sim_exec_device(const ds_executor *ex);

/* Switch to virtual time (before any run): `clock` is the driver's virtual
 * clock, read by run() as the batch's start time. */
void ds_sim_exec_set_virtual(ds_executor *ex, const ds_clock *clock);
/* Virtual mode: the end time of the earliest running batch, UINT64_MAX when
 * none runs. */
uint64_t ds_sim_exec_next_ns(ds_executor *ex);
/* Virtual mode: advance the engine to t_ns, calling `done` for every batch
 * that ends at or before t_ns (end-time order). */
void ds_sim_exec_advance(ds_executor *ex, uint64_t t_ns);

/* Ideal mode (the `ideal` policy's device, sim only): every batch runs on
 * the pool of all sm_count SMs whatever partition it was given; at every
 * instant each running kernel gets the SMs it can use (one per block: blocks
 * are throughput-bound, kernels.h; as a real number: no wave quantization,
 * no partition granularity); when the kernels want more than the device
 * has, the oldest batch's kernel is served first (batches in start order).
 * Memory contention and launch gaps as in normal mode. Set it before any
 * run. */
void ds_sim_exec_set_ideal(ds_executor *ex, bool ideal);

/* SM-time the engine counted busy since creation (SM x ns), for utilization:
 * an SM is busy while a block of some kernel is resident on it. */
double ds_sim_exec_busy_sm_ns(ds_executor *ex);

#endif /* DS_SIM_SIM_H */
