/* batch.c - the SLO-bounded batch optimizer (formulation in batch.h). */
#include "batch/batch.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/error.h"

static double fill_us(double rate_per_s, uint32_t batch)
{
    if (batch <= 1 || isinf(rate_per_s))
        return 0.0;
    return (double)(batch - 1) / rate_per_s * 1e6;
}

static void plan_for(const ds_batch_query *q, uint32_t b, double lat, bool rate_known,
                     ds_batch_plan *p)
{
    p->batch = b;
    p->latency_us = lat;
    p->worst_us = 2.0 * lat + (rate_known ? fill_us(q->rate_per_s, b) : 0.0);
    p->throughput_per_s = (double)b / lat * 1e6;
    p->throughput_per_sm = q->share_sms ? p->throughput_per_s / q->share_sms : 0.0;
}

dstack_status ds_batch_pick_for_slo(const ds_batch_query *q, ds_batch_latency_fn latency_us,
                                    void *user, ds_batch_plan *out)
{
    if (!q || !latency_us || !out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "batch: query, latency function or plan is NULL");
    if (q->max_batch == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "batch: max_batch is 0");
    bool rate_known = q->rate_per_s > 0.0; /* false for NaN too */
    uint32_t flags = (q->slo_us ? 0u : DS_BATCH_NO_SLO) | (rate_known ? 0u : DS_BATCH_RATE_UNKNOWN);
    uint32_t last = rate_known ? q->max_batch : 1;
    ds_batch_plan best = {0}, fallback = {0}, cand;
    bool found = false;
    for (uint32_t b = 1; b <= q->max_batch; b++) {
        double lat = latency_us(user, b);
        if (!(lat > 0.0) || !isfinite(lat))
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "batch: L(%u) = %g us", b, lat);
        if (b > last)
            continue; /* still validated: a bad table is a bug at any rate */
        plan_for(q, b, lat, rate_known, &cand);
        if (b == 1)
            fallback = cand;
        if (q->slo_us != 0 && cand.worst_us > (double)q->slo_us)
            continue;
        if (!found || cand.throughput_per_s > best.throughput_per_s)
            best = cand;
        found = true;
    }
    if (!found) {
        best = fallback;
        flags |= DS_BATCH_INFEASIBLE;
    }
    if (rate_known && best.throughput_per_s < q->rate_per_s)
        flags |= DS_BATCH_OVERLOADED;
    best.flags = flags;
    *out = best;
    return DSTACK_OK;
}

static double array_latency(void *user, uint32_t batch)
{
    return ((const double *)user)[batch - 1];
}

dstack_status ds_batch_pick_for_slo_array(const ds_batch_query *q, const double *latency_us,
                                          ds_batch_plan *out)
{
    if (!latency_us)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "batch: latency array is NULL");
    return ds_batch_pick_for_slo(q, array_latency, (void *)latency_us, out);
}
