/* request.c - submit, poll, stats: argument checks, then the scheduler. */
#include <stdio.h>
#include <string.h>

#include "api/api_internal.h"
#include "api/sized.h"
#include "sim/sim.h"
#include "util/error.h"
#include "util/units.h"

DSTACK_API void dstack_request_init(dstack_request *r)
{
    if (!r)
        return;
    memset(r, 0, sizeof *r);
    r->struct_size = sizeof *r;
    r->n_samples = 1;
}

DSTACK_API void dstack_model_stats_init(dstack_model_stats *s)
{
    if (!s)
        return;
    memset(s, 0, sizeof *s);
    s->struct_size = sizeof *s;
}

DSTACK_API dstack_status dstack_submit(dstack_ctx *ctx, dstack_model *model, const dstack_request *request,
                                       dstack_ticket *ticket)
{
    ds_error_clear();
    if (!ctx || !model || !request || !ticket)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx, model, request or ticket is NULL");
    dstack_request r;
    dstack_request_init(&r);
    dstack_status st = ds_copy_sized(&r, sizeof r, request, "request");
    if (st != DSTACK_OK)
        return st;
    return ds_sched_submit(ctx->sched, model, &r, ticket);
}

DSTACK_API dstack_status dstack_poll(dstack_ctx *ctx, dstack_completion *out, size_t max, int64_t timeout_us,
                                     size_t *n_out)
{
    ds_error_clear();
    if (!ctx || !out || !n_out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx, out or n_out is NULL");
    if (max == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "max is 0");
    return ds_sched_poll(ctx->sched, out, max, timeout_us, n_out);
}

DSTACK_API dstack_status dstack_stats(dstack_ctx *ctx, const dstack_model *model, dstack_model_stats *stats)
{
    ds_error_clear();
    if (!ctx || !model || !stats)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx, model or stats is NULL");
    if (stats->struct_size < sizeof(size_t))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "stats.struct_size is %zu: call dstack_model_stats_init",
                       stats->struct_size);
    dstack_model_stats full;
    dstack_model_stats_init(&full);
    dstack_status st = ds_sched_stats(ctx->sched, model, &full);
    if (st == DSTACK_OK) {
        full.sm_count = ds_api_share_sms(ctx, ds_sched_model_units(ctx->sched, model));
        ds_copy_out(stats, &full, sizeof full);
    }
    return st;
}

DSTACK_API void dstack_ctx_stats_init(dstack_ctx_stats *s)
{
    if (!s)
        return;
    memset(s, 0, sizeof *s);
    s->struct_size = sizeof *s;
}

DSTACK_API dstack_status dstack_ctx_stats_get(dstack_ctx *ctx, dstack_ctx_stats *stats)
{
    ds_error_clear();
    if (!ctx || !stats)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx or stats is NULL");
    if (stats->struct_size < sizeof(size_t))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "stats.struct_size is %zu: call dstack_ctx_stats_init",
                       stats->struct_size);
    dstack_ctx_stats full;
    dstack_ctx_stats_init(&full);
    ds_core_totals t;
    uint64_t elapsed_ns;
    ds_sched_totals(ctx->sched, &t, &elapsed_ns);
    const ds_device_info *dev = &ctx->exec->device;
    full.uptime_s = (double)elapsed_ns / 1e9;
    full.batches_running = t.running;
    full.units_in_use = t.units_in_use;
    full.units_total = dev->n_units;
    full.batches = t.batches;
    full.samples = t.samples_run;
    full.cycle_us = t.cycle_ns / 1000u;
    snprintf(full.policy_name, sizeof full.policy_name, "%s", ctx->policy->name);
    double total = (double)elapsed_ns * (dev->sm_count ? dev->sm_count : 1);
    if (ctx->backend == DSTACK_BACKEND_SIM)
        full.gpu_utilization = total > 0 ? ds_sim_exec_busy_sm_ns(ctx->exec) / total : 0;
    else
    {
        uint32_t left = ds_units_leftover(dev->partitioning, dev->sm_count, dev->unit_sms, dev->n_units);
        uint64_t left_busy = dev->tail_leftover ? t.tail_busy_ns : t.whole_busy_ns; /* util/units.h */
        double busy = (double)t.unit_busy_ns * dev->unit_sms + (double)left_busy * left;
        full.gpu_utilization = total > 0 ? busy / total : 0;
    }
    if (full.gpu_utilization > 1)
        full.gpu_utilization = 1;
    ds_copy_out(stats, &full, sizeof full);
    return DSTACK_OK;
}
