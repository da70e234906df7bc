/* context.c - dstack_create / shutdown / destroy / ctx info: choosing the
 * backend and the policy. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "api/sized.h"
#include "profile/cache.h"
#include "sim/sim.h"
#include "util/checked.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/log.h"

#define MAX_QUEUE_CAPACITY (1u << 20)

DSTACK_API void dstack_options_init(dstack_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->backend = DSTACK_BACKEND_AUTO;
    o->partitioning = DSTACK_PARTITION_AUTO;
    o->policy = DSTACK_POLICY_DSTACK;
    o->queue_capacity = 1024;
    o->sim_sm_count = 132;
    o->max_model_memory_bytes = (uint64_t)4 << 30;
    o->max_request_ops = 1000000000000ull;
    o->log_level = DSTACK_LOG_INFO;
}

static dstack_status check_options(const dstack_options *o)
{
    if ((unsigned)o->backend > DSTACK_BACKEND_SIM)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.backend %d is not a dstack_backend", (int)o->backend);
    if ((unsigned)o->partitioning > DSTACK_PARTITION_NONE)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.partitioning %d is not a dstack_partitioning",
                       (int)o->partitioning);
    if ((unsigned)o->policy > DSTACK_POLICY_IDEAL)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.policy %d is not a dstack_policy", (int)o->policy);
    if (o->queue_capacity == 0 || o->queue_capacity > MAX_QUEUE_CAPACITY)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.queue_capacity must be 1..%u, got %u",
                       MAX_QUEUE_CAPACITY, o->queue_capacity);
    if (o->max_model_memory_bytes == 0 || o->max_request_ops == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.max_model_memory_bytes and "
                       "options.max_request_ops must be > 0 (UINT64_MAX for no limit)");
    if ((unsigned)o->log_level > DSTACK_LOG_OFF)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.log_level %d is not a dstack_log_level",
                       (int)o->log_level);
    if (o->device < 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.device must be >= 0, got %d", o->device);
    return DSTACK_OK;
}

static dstack_status open_backend(dstack_ctx *ctx)
{
    const dstack_options *o = &ctx->opts;
    ds_executor_config cfg = {o->device, o->partitioning, o->cpu_threads, o->sim_sm_count};
    switch (o->backend) {
    case DSTACK_BACKEND_CPU:
        ctx->backend = DSTACK_BACKEND_CPU;
        return ds_exec_cpu_create(&cfg, &ctx->exec);
    case DSTACK_BACKEND_CUDA:
        ctx->backend = DSTACK_BACKEND_CUDA;
        return ds_exec_cuda_create(&cfg, &ctx->exec);
    case DSTACK_BACKEND_SIM:
        ctx->backend = DSTACK_BACKEND_SIM;
        return ds_exec_sim_create(&cfg, &ctx->exec);
    case DSTACK_BACKEND_AUTO:
        break;
    }
    cfg.driver_first = true;
    dstack_status st = ds_exec_cuda_create(&cfg, &ctx->exec);
    if (st == DSTACK_OK) {
        ctx->backend = DSTACK_BACKEND_CUDA;
        snprintf(ctx->note, sizeof ctx->note, "auto: using cuda");
        return st;
    }
    if (st != DSTACK_ERR_NO_DEVICE && st != DSTACK_ERR_UNSUPPORTED)
        return st;
    snprintf(ctx->note, sizeof ctx->note, "auto: cuda unavailable (%s: %s); using cpu",
             dstack_strerror(st), ds_error_message());
    ds_error_clear();
    ctx->backend = DSTACK_BACKEND_CPU;
    return ds_exec_cpu_create(&cfg, &ctx->exec);
}

/* A partitioning mode asked for that the backend does not have (MPS on
 * sim, green contexts or MPS on cpu) falls back to what it has: say so in
 * the note of dstack_ctx_info and at WARN (dstack.h), not silently. */
static void note_partitioning(dstack_ctx *ctx)
{
    static const char *const names[] = {"auto", "green contexts", "mps", "none"};
    dstack_partitioning want = ctx->opts.partitioning, got = ctx->exec->device.partitioning;
    if (want == DSTACK_PARTITION_AUTO || want == got || (unsigned)want > DSTACK_PARTITION_NONE ||
        (unsigned)got > DSTACK_PARTITION_NONE)
        return;
    static const char *const backends[] = {"auto", "cpu", "cuda", "sim"};
    size_t len = strlen(ctx->note);
    snprintf(ctx->note + len, sizeof ctx->note - len, "%spartitioning %s unavailable on backend %s: using %s",
             len ? "; " : "", names[want], backends[ctx->backend], names[got]);
    ds_log(&ctx->log, DSTACK_LOG_WARN, "partitioning %s unavailable on backend %s: using %s", names[want],
           backends[ctx->backend], names[got]);
}

/* Every policy is in the table; `ideal` needs the sim executor's ideal
 * mode (each kernel gets exactly the SMs it can use), which no real device
 * has. */
static dstack_status choose_policy(dstack_ctx *ctx)
{
    dstack_policy p = ctx->opts.policy;
    if (p == DSTACK_POLICY_IDEAL && ctx->backend != DSTACK_BACKEND_SIM)
        return ds_fail(DSTACK_ERR_UNSUPPORTED, "the ideal policy exists only on the sim backend");
    ctx->policy = ds_policy_find(p);
    if (!ctx->policy)
        return ds_fail(DSTACK_ERR_INTERNAL, "policy %d is missing from the policy table", (int)p);
    if (p == DSTACK_POLICY_IDEAL)
        ds_sim_exec_set_ideal(ctx->exec, true);
    return DSTACK_OK;
}

/* Create every partition the policy may hand out before serving. On cuda a
 * partition is a green context, a stream, cuDNN and cuBLAS handles and a
 * workspace, made lazily on first use; made on the request path they cost
 * milliseconds each and the cudaMalloc in them waits for the whole device,
 * stalling every running batch (on an H200, dstack held 144 req/s of the
 * four-CNN mix with lazy partitions; bench/results/gpu-h200.md). Policies
 * that use only the whole device need nothing. n(n+1)/2 ranges: 120 on a
 * 15-unit Hopper, about 1 GB of device memory there (an 8 MB cuBLAS
 * workspace and the handles' own per range; 0.30 s). A range that cannot be
 * made now is logged and left to be made on first use. */
static void warm_partitions(dstack_ctx *ctx)
{
    uint32_t n = ctx->exec->device.n_units;
    if (!ctx->policy->partial_shares || n < 2)
        return;
    uint64_t t0 = ds_monotonic_ns();
    uint32_t made = 0, failed = 0;
    for (uint32_t count = 1; count <= n; count++)
        for (uint32_t first = 0; first + count <= n; first++) {
            ds_partition part;
            if (ctx->exec->ops->partition_get(ctx->exec, first, count, &part) == DSTACK_OK)
                made++;
            else if (failed++ == 0)
                ds_log(&ctx->log, DSTACK_LOG_WARN, "partition units %u+%u not made ahead (%s): made on first use",
                       first, count, ds_error_message());
        }
    if (failed)
        ds_error_clear(); /* not an error of dstack_create: those ranges are made on first use */
    ds_log(&ctx->log, DSTACK_LOG_INFO, "%u partitions made ahead in %.3f s (%u failed)", made,
           (double)(ds_monotonic_ns() - t0) / 1e9, failed);
}

static void log_backend_choice(const dstack_ctx *ctx)
{
    static const char *const backends[] = {"auto", "cpu", "cuda", "sim"};
    static const char *const partitionings[] = {"auto", "green contexts", "mps", "none"};
    const ds_device_info *d = &ctx->exec->device;
    ds_log(&ctx->log, DSTACK_LOG_INFO,
           "backend %s on '%s': %u SMs, %u units of %u SMs, partitioning %s; policy %s%s%s",
           backends[ctx->backend], d->name, d->sm_count, d->n_units, d->unit_sms,
           (unsigned)d->partitioning <= DSTACK_PARTITION_NONE ? partitionings[d->partitioning] : "?",
           ctx->policy->name, ctx->note[0] ? "; " : "", ctx->note);
}

DSTACK_API dstack_status dstack_create(const dstack_options *options, dstack_ctx **out)
{
    ds_error_clear();
    if (!out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx is NULL");
    dstack_ctx *ctx = ds_calloc(1, sizeof *ctx);
    if (!ctx)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for a context");
    dstack_options_init(&ctx->opts);
    dstack_status st = options ? ds_copy_sized(&ctx->opts, sizeof ctx->opts, options, "options") : DSTACK_OK;
    if (st == DSTACK_OK)
        st = check_options(&ctx->opts);
    if (st == DSTACK_OK)
        ds_logger_init(&ctx->log, ctx->opts.log_fn, ctx->opts.log_user, ctx->opts.log_level,
                       getenv("DSTACK_LOG"));
    if (st == DSTACK_OK) {
        /* the caller's string need not outlive this call: keep the path */
        if (!ds_cache_dir_default(ctx->opts.profile_cache_dir, ctx->cache_dir, sizeof ctx->cache_dir) &&
            ctx->opts.profile_cache_dir && ctx->opts.profile_cache_dir[0])
            st = ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "options.profile_cache_dir is longer than %zu bytes",
                         sizeof ctx->cache_dir - 1);
        ctx->opts.profile_cache_dir = NULL;
    }
    if (st == DSTACK_OK)
        st = open_backend(ctx);
    if (st == DSTACK_OK)
        note_partitioning(ctx);
    if (st == DSTACK_OK)
        st = choose_policy(ctx);
    if (st == DSTACK_OK)
        warm_partitions(ctx);
    if (st == DSTACK_OK) {
        ds_sched_config sc = {&ds_clock_monotonic, ctx->exec, ctx->policy, ctx->opts.queue_capacity};
        st = ds_sched_create(&sc, &ctx->sched);
        if (st == DSTACK_OK && (st = ds_planner_start(ctx)) != DSTACK_OK) {
            ds_sched_destroy(ctx->sched);
            ctx->sched = NULL;
        }
    }
    if (st != DSTACK_OK) {
        ds_log(&ctx->log, DSTACK_LOG_ERROR, "dstack_create: %s", ds_error_message());
        if (ctx->exec)
            ctx->exec->ops->destroy(ctx->exec);
        free(ctx);
        return st;
    }
    log_backend_choice(ctx);
    ds_log(&ctx->log, DSTACK_LOG_DEBUG, "profile cache: %s", ctx->cache_dir[0] ? ctx->cache_dir : "off");
    pthread_mutex_init(&ctx->register_lock, NULL);
    pthread_mutex_init(&ctx->models_lock, NULL);
    *out = ctx;
    return DSTACK_OK;
}

DSTACK_API dstack_status dstack_shutdown(dstack_ctx *ctx)
{
    ds_error_clear();
    if (!ctx)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx is NULL");
    ds_sched_shutdown(ctx->sched);
    return DSTACK_OK;
}

DSTACK_API void dstack_destroy(dstack_ctx *ctx)
{
    if (!ctx)
        return;
    ds_sched_shutdown(ctx->sched);
    ds_planner_stop(ctx);
    /* Every model still live gets its plan and graph freed. */
    pthread_mutex_lock(&ctx->register_lock);
    for (;;) {
        void *owner = NULL;
        if (ds_sched_take_any_owner(ctx->sched, &owner) != DSTACK_OK)
            break;
        pthread_mutex_lock(&ctx->models_lock);
        ds_api_model_free(ctx, owner);
        pthread_mutex_unlock(&ctx->models_lock);
    }
    pthread_mutex_unlock(&ctx->register_lock);
    ds_sched_destroy(ctx->sched);
    ctx->exec->ops->destroy(ctx->exec);
    pthread_mutex_destroy(&ctx->register_lock);
    pthread_mutex_destroy(&ctx->models_lock);
    free(ctx);
}

#define HOST_ALIGN 64
/* No allocator hands out more than PTRDIFF_MAX bytes (pointer differences
 * inside the block must fit), so anything above it is refused up front. */
#define HOST_MAX_BYTES ((size_t)PTRDIFF_MAX)

DSTACK_API dstack_status dstack_host_alloc(dstack_ctx *ctx, size_t bytes, void **ptr)
{
    ds_error_clear();
    if (!ctx || !ptr || bytes == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx or ptr is NULL, or bytes is 0");
    /* Executors get the size already rounded to the alignment, so none of
     * them rounds (and wraps) a caller's size again. */
    size_t rounded = 0;
    if (!ds_size_round_up(bytes, HOST_ALIGN, &rounded) || rounded > HOST_MAX_BYTES)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "%zu host bytes: over the %zu one block can hold", bytes,
                       HOST_MAX_BYTES);
    ds_executor *ex = ctx->exec;
    if (ex->ops->host_alloc)
        return ex->ops->host_alloc(ex, rounded, ptr);
    void *p = ds_aligned_alloc(HOST_ALIGN, rounded);
    if (!p)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for %zu host bytes", bytes);
    *ptr = p;
    return DSTACK_OK;
}

DSTACK_API void dstack_host_free(dstack_ctx *ctx, void *ptr)
{
    if (!ctx || !ptr)
        return;
    if (ctx->exec->ops->host_free)
        ctx->exec->ops->host_free(ctx->exec, ptr);
    else
        free(ptr);
}

DSTACK_API uint64_t dstack_now_ns(const dstack_ctx *ctx)
{
    return ctx ? ds_sched_now_ns(ctx->sched) : ds_monotonic_ns();
}

DSTACK_API void dstack_ctx_info_init(dstack_ctx_info *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
}

static void copy_name(char *dst, const char *src)
{
    snprintf(dst, DSTACK_NAME_LEN, "%s", src ? src : "");
}

/* The oldest dstack_ctx_info a caller may hold: up to and including policy. */
#define CTX_INFO_MIN_SIZE (offsetof(dstack_ctx_info, policy) + sizeof(dstack_policy))

DSTACK_API dstack_status dstack_ctx_info_get(dstack_ctx *ctx, dstack_ctx_info *info)
{
    ds_error_clear();
    if (!ctx || !info)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx or info is NULL");
    if (info->struct_size < CTX_INFO_MIN_SIZE)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "info.struct_size is %zu, less than the %zu that reach past `policy`: call dstack_ctx_info_init",
                       info->struct_size, CTX_INFO_MIN_SIZE);
    const ds_device_info *d = &ctx->exec->device;
    dstack_ctx_info full;
    dstack_ctx_info_init(&full);
    full.backend = ctx->backend;
    full.partitioning = d->partitioning;
    full.policy = ctx->policy->id;
    copy_name(full.policy_name, ctx->policy->name);
    copy_name(full.device_name, d->name);
    full.sm_count = d->sm_count;
    full.partition_unit_sms = d->unit_sms;
    full.partition_units = d->n_units;
    full.n_models = ds_sched_model_count(ctx->sched);
    snprintf(full.note, sizeof full.note, "%s", ctx->note);
    ds_copy_out(info, &full, sizeof full);
    return DSTACK_OK;
}
