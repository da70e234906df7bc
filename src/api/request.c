/* request.c - submit, poll, stats: argument checks, then the scheduler. */
#include <string.h>

#include "api/api_internal.h"
#include "api/sized.h"
#include "util/error.h"

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
    if (st == DSTACK_OK)
        ds_copy_out(stats, &full, sizeof full);
    return st;
}
