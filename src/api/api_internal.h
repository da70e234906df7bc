/* api_internal.h - what the public entry points share: the context and the
 * API layer's side of a model. Argument checks live in the api files; the
 * request path lives in sched; nothing here runs on the hot path except a
 * pointer hand-off. */
#ifndef DS_API_INTERNAL_H
#define DS_API_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "dstack.h"
#include "exec/exec.h"
#include "batch/latency.h"
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
    /* Held only to look up and copy a model's api data, or to free it, so
     * info reads never wait behind a registration (which holds
     * register_lock for as long as building the plans takes). */
    pthread_mutex_t models_lock;
    char note[256];
    ds_logger log;                    /* set at create, immutable after */
    char cache_dir[4096];             /* profile cache directory; "" = off (set at create) */
    /* the planner: re-plans batch sizes (and knees) from measured rates */
    pthread_t planner;
    bool planner_running, planner_stop;
    pthread_mutex_t plan_lock;        /* the list below, api_model.info, planner_stop */
    pthread_cond_t plan_cv;
    struct api_model **live;          /* registered models, in order */
    uint32_t n_live, cap_live;
    uint64_t live_gen, planned_gen;   /* bumped when the list changes; its value at the last joint plan */
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
    ds_latency_model *lat;   /* NULL when nothing was profiled */
    uint32_t fixed_units, fixed_batch;
    uint64_t slo_us;
    double planned_rate;     /* arrival rate the current batch was planned for */
    dstack_model *handle;
} api_model;

/* SMs of a share of `units` partition units on ctx's device, at most the
 * device's SMs; 0 on cpu, where shares do not apply (model.c). */
uint32_t ds_api_share_sms(const dstack_ctx *ctx, uint32_t units);
/* The share model am's batch is planned on: fixed, the whole device (policies
 * without partial shares), or 0 for the knee (model.c). */
uint32_t ds_api_policy_units(const dstack_ctx *ctx, const api_model *am);

/* The planner thread (planner.c): started by dstack_create, stopped by
 * dstack_destroy; models join its list at registration and leave it at
 * unregistration. */
dstack_status ds_planner_start(dstack_ctx *ctx);
void ds_planner_stop(dstack_ctx *ctx);
dstack_status ds_planner_add(dstack_ctx *ctx, api_model *am);
void ds_planner_remove(dstack_ctx *ctx, api_model *am);

void ds_api_model_free(dstack_ctx *ctx, api_model *am);

#endif
