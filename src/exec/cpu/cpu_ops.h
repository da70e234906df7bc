/* cpu_ops.h - private to the cpu executor: the worker pool, SGEMM and the
 * op kernels. Nothing outside src/exec/cpu includes this. */
#ifndef DS_EXEC_CPU_OPS_H
#define DS_EXEC_CPU_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph/graph.h"

/* ---- worker pool ----
 * A parallel-for: ds_cpu_pool_run calls fn(ctx, task, worker) for every task
 * in [0, n_tasks), spread over the pool's threads (the caller is worker 0),
 * and returns when all are done. Calls from several threads are serialized,
 * so each worker's scratch belongs to one job at a time. Not reentrant: a
 * task must not call ds_cpu_pool_run. */
typedef struct ds_cpu_pool ds_cpu_pool;
typedef void (*ds_cpu_task_fn)(void *ctx, uint32_t task, uint32_t worker);

dstack_status ds_cpu_pool_create(uint32_t threads, ds_cpu_pool **out);
void ds_cpu_pool_destroy(ds_cpu_pool *pool);
uint32_t ds_cpu_pool_threads(const ds_cpu_pool *pool);
void ds_cpu_pool_run(ds_cpu_pool *pool, uint32_t n_tasks, ds_cpu_task_fn fn, void *ctx);
/* Worker `w`'s packing scratch: DS_SGEMM_SCRATCH_FLOATS floats, 64-byte aligned. */
float *ds_cpu_pool_scratch(ds_cpu_pool *pool, uint32_t worker);

/* ---- SGEMM ----
 * C[M,N] (row stride ldc) = alpha * op(A) * op(B) + beta * C, row-major,
 * op(A) = A[M,K] (lda) or A^T with A stored [K,M]; likewise B. beta == 0
 * never reads C. Cache-blocked with packed panels; tasks are (M block,
 * N block) tiles spread over the pool. */
#define DS_SGEMM_MR 6
#define DS_SGEMM_NR 16
#define DS_SGEMM_KC 256
#define DS_SGEMM_MC 96  /* multiple of MR */
#define DS_SGEMM_NC 512 /* multiple of NR */
#define DS_SGEMM_SCRATCH_FLOATS (DS_SGEMM_MC * DS_SGEMM_KC + DS_SGEMM_KC * DS_SGEMM_NC)

void ds_sgemm(ds_cpu_pool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc);

/* ---- tensors at run time ---- */
typedef struct ds_cpu_tensor {
    float *data;
    uint32_t rank;
    int64_t dims[DS_MAX_RANK];
} ds_cpu_tensor;

int64_t ds_cpu_numel(const ds_cpu_tensor *t);

/* Everything one op needs: its node, its run-time operands (absent
 * optional inputs have data == NULL), the pool and the plan's scratch. */
typedef struct ds_cpu_op_ctx {
    const ds_node *node;
    const ds_cpu_tensor *in[DS_NODE_MAX_INPUTS];
    uint32_t n_in;
    ds_cpu_tensor *out;
    ds_cpu_pool *pool;
    float *scratch;        /* plan-owned, scratch_floats floats (im2col) */
    size_t scratch_floats;
} ds_cpu_op_ctx;

/* Floats of plan scratch node `n` needs for one run with operands at their
 * run-time shapes (im2col for one sample); 0 if none. */
size_t ds_cpu_op_scratch_floats(const ds_node *n, const ds_cpu_tensor *const *in,
                                const ds_cpu_tensor *out);

/* Run one node. Shapes were validated by finalize; nothing here fails. */
void ds_cpu_op_run(const ds_cpu_op_ctx *c);

#endif /* DS_EXEC_CPU_OPS_H */
