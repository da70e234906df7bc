/* gpu.h - one CUDA device, its SM partitions, and the driver calls behind them.
 *
 * libcuda is never linked: the green-context driver calls are fetched at run
 * time with cudaGetDriverEntryPointByVersion (12040 for the green-context
 * calls, 12050 for cuGreenCtxStreamCreate), so libdstack loads on machines
 * without a driver and ds_gpu_open says NO_DEVICE there.
 *
 * Partitioning modes:
 *  - GREEN_CTX: the SM resource is split ONCE into units of the minimum
 *    partition size (cuDevSmResourceSplitByCount; 8 SMs on Hopper, 15 units
 *    and 12 SMs left over on a 132-SM H100). A partition (first, count) is a
 *    green context built from that contiguous run of units
 *    (cuDevResourceGenerateDesc), its own non-blocking stream
 *    (cuGreenCtxStreamCreate), a cuDNN and a cuBLAS handle bound to that
 *    stream (cublasSetSmCountTarget = the SMs read back with
 *    cuGreenCtxGetDevResource; the legacy cuDNN API has no SM target) and a
 *    cuBLAS workspace. The range of every unit is the exception: it is the
 *    whole device, an ordinary non-blocking stream of the primary context
 *    with all sm_count SMs (the 12 left over included; util/units.h), which
 *    is safe because nothing else runs while a batch holds every unit.
 *    A range of fewer units that ends at the last unit also takes the
 *    split's remainder into its descriptor (8 + 12 SMs for the last unit
 *    alone on an H100) where the driver accepts that (asked once at open:
 *    info.tail_leftover), so the 12 SMs work whenever the last unit does.
 *    Created LAZILY on the first ds_gpu_partition call for
 *    that range and cached for the life of the device (overlapping green
 *    contexts are allowed; disjointness of what runs together is the
 *    scheduler's job). Warm-up: the scheduler (or ds_gpu_partition_warm)
 *    asks for every range it will use before serving, after which nothing is
 *    created on the hot path. Eager creation of all n(n+1)/2 = 120 ranges
 *    would cost ~120 cuDNN handles (seconds, ~GBs) for ranges never used.
 *  - NONE: one unit covering the whole device (all SMs), an ordinary
 *    non-blocking stream.
 *  - MPS: the process is an MPS client; the daemon must already run. The
 *    library never starts it. An operator starts it with
 *        export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
 *        nvidia-cuda-mps-control -d          # stop: echo quit | nvidia-cuda-mps-control
 *    and limits each serving process before it starts with
 *    CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=<pct> (a per-process upper limit, no
 *    reservation, rounded down). What is implemented: one unit covering this
 *    process's share, sm_count = floor(SMs * pct / 100) from that variable,
 *    ordinary streams. Per-context SM counts (cuCtxCreate with a
 *    CU_EXEC_AFFINITY_TYPE_SM_COUNT affinity) are NOT implemented.
 *  - AUTO: GREEN_CTX when the driver has the entry points and the split
 *    works, else NONE.
 */
#ifndef DS_GPU_GPU_H
#define DS_GPU_GPU_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "dstack.h"

typedef struct ds_gpu ds_gpu;

/* One partition's resources; owned by the ds_gpu, valid until ds_gpu_close. */
typedef struct ds_gpu_part {
    uint32_t first_unit, unit_count;
    uint32_t sm_count;        /* read back from the green context (or device/MPS share) */
    cudaStream_t stream;      /* non-blocking; green-context stream under GREEN_CTX */
    void *green_ctx;          /* CUgreenCtx, NULL otherwise */
    cudnnHandle_t cudnn;      /* bound to stream */
    cublasHandle_t cublas;    /* bound to stream, SM-count target set */
    void *cublas_workspace;
    pthread_mutex_t lock;     /* the handles are used by one host thread at a time */
} ds_gpu_part;

typedef struct ds_gpu_info {
    char name[DSTACK_NAME_LEN];
    int device;
    int cc_major, cc_minor;
    uint32_t sm_count;        /* whole device */
    uint32_t unit_sms;        /* SMs per unit */
    uint32_t n_units;
    uint32_t leftover_sms;    /* GREEN_CTX: SMs no unit holds */
    bool tail_leftover;       /* GREEN_CTX: they join the ranges that end at the last
                                 unit (the driver takes the split's remainder in
                                 their descriptor); else only the whole device has them */
    dstack_partitioning partitioning; /* in use, never AUTO */
} ds_gpu_info;

/* Open device `device` with `mode`. NO_DEVICE (message: the CUDA error)
 * when there is no driver or GPU; UNSUPPORTED when GREEN_CTX is asked for
 * and the driver lacks it; DEVICE when a CUDA call fails. */
dstack_status ds_gpu_open(int device, dstack_partitioning mode, ds_gpu **out);
/* Synchronize the device, destroy every partition, free. NULL is a no-op. */
void ds_gpu_close(ds_gpu *gpu);
const ds_gpu_info *ds_gpu_get_info(const ds_gpu *gpu);
/* The cached partition for the unit range, created on first use.
 * INVALID_ARGUMENT for a range outside the device; DEVICE on a failed call. */
dstack_status ds_gpu_partition(ds_gpu *gpu, uint32_t first_unit, uint32_t unit_count,
                               ds_gpu_part **out);
/* Make the current host thread use this device (cheap; every thread that
 * calls the runtime must do it once). */
dstack_status ds_gpu_bind_thread(const ds_gpu *gpu);

/* Turn a failed CUDA/cuDNN/cuBLAS return into DSTACK_ERR_DEVICE with the call named. */
dstack_status ds_gpu_cuda_fail(cudaError_t e, const char *what);
dstack_status ds_gpu_cudnn_fail(cudnnStatus_t s, const char *what);
dstack_status ds_gpu_cublas_fail(cublasStatus_t s, const char *what);

#endif
