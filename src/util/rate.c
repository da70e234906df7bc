/* rate.c - decayed-count arrival rate (see rate.h). */
#include "util/rate.h"

#include <math.h>

void ds_rate_init(ds_rate_tracker *t, uint64_t now_ns, uint64_t tau_ns, uint32_t min_events)
{
    *t = (ds_rate_tracker){
        .tau_ns = (double)(tau_ns ? tau_ns : DS_RATE_DEFAULT_TAU_NS),
        .min_events = min_events ? min_events : DS_RATE_DEFAULT_MIN_EVENTS,
        .start_ns = now_ns,
        .last_ns = now_ns,
    };
}

static double decayed_count(const ds_rate_tracker *t, uint64_t now_ns)
{
    if (now_ns <= t->last_ns)
        return t->count;
    return t->count * exp(-(double)(now_ns - t->last_ns) / t->tau_ns);
}

void ds_rate_arrival(ds_rate_tracker *t, uint64_t now_ns, uint32_t count)
{
    t->count = decayed_count(t, now_ns) + count;
    if (now_ns > t->last_ns)
        t->last_ns = now_ns;
    t->n_events++; /* arrivals, not samples: one request of 32 says as little as one of 1 */
}

double ds_rate_per_s(const ds_rate_tracker *t, uint64_t now_ns)
{
    if (t->n_events < t->min_events)
        return 0.0;
    uint64_t at = now_ns > t->last_ns ? now_ns : t->last_ns;
    /* -expm1(-x) = 1 - e^-x without cancellation for small x */
    double seen = -expm1(-(double)(at - t->start_ns) / t->tau_ns);
    if (seen < DS_RATE_MIN_SEEN)
        return 0.0;
    return decayed_count(t, at) / (t->tau_ns * seen) * 1e9;
}
