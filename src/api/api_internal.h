/* api_internal.h - what the public entry points share: the context and the
 * API layer's side of a model. Argument checks live in the api files; the
 * request path lives in sched; nothing here runs on the hot path except a
 * pointer hand-off. */
#ifndef DS_API_INTERNAL_H
#define DS_API_INTERNAL_H

#include <pthread.h>

#include "dstack.h"
#include "exec/exec.h"
#include "graph/graph.h"
#include "sched/sched.h"
#include "util/log.h"

struct dstack_ctx {
    dstack_options opts;
    ds_executor *exec;
    ds_sched *sched;
    dstack_backend backend;           /* resolved, never AUTO */
    const ds_policy_ops *policy;
    pthread_mutex_t register_lock;    /* register/unregister one at a time */
    char note[256];
    ds_logger log;                    /* set at create, immutable after */
};

/* The context's logger for ds_log (NULL ctx: NULL, which logs nothing). */
static inline const ds_logger *ds_ctx_logger(const dstack_ctx *ctx)
{
    return ctx ? &ctx->log : NULL;
}

/* The API layer's data for a model: the sched's `owner` pointer. Immutable
 * after registration, so info queries read it without locks. */
typedef struct api_model {
    ds_graph *graph;
    ds_exec_plan *plan;
    dstack_model_info info;
} api_model;

/* Copy a caller's growable struct over `defaults` (already filled by the
 * init function), reading only the bytes the caller's header knew. */
dstack_status ds_copy_sized(void *dst, size_t dst_size, const void *src, const char *what);

/* Copy a filled struct out to a caller's growable struct, only as many
 * bytes as the caller's struct_size says it has (at least sizeof(size_t)). */
void ds_copy_out(void *dst, const void *full, size_t full_size);

void ds_api_model_free(dstack_ctx *ctx, api_model *am);

#endif
