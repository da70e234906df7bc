/* rate.c - decayed-count arrival rate and the re-plan rule (see rate.h). */
#include "batch/rate.h"

#include <math.h>

void ds_rate_init(ds_rate_tracker *t, uint64_t now_ns, uint64_t tau_ns, double factor,
                  uint32_t min_events)
{
    *t = (ds_rate_tracker){
        .tau_ns = (double)(tau_ns ? tau_ns : DS_RATE_DEFAULT_TAU_NS),
        .factor = factor > 1.0 ? factor : DS_RATE_DEFAULT_FACTOR,
        .min_events = min_events ? min_events : DS_RATE_DEFAULT_MIN_EVENTS,
        .start_ns = now_ns,
        .last_ns = now_ns,
        .planned_rate = -1.0,
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
    t->n_events += count;
}

double ds_rate_per_s(const ds_rate_tracker *t, uint64_t now_ns)
{
    if (t->n_events < t->min_events)
        return 0.0;
    uint64_t at = now_ns > t->last_ns ? now_ns : t->last_ns;
    double age = (double)(at - t->start_ns);
    /* -expm1(-x) = 1 - e^-x without cancellation for small x; at age 0
     * every arrival is at this instant: fall back to a window of tau. */
    double seen = age > 0.0 ? -expm1(-age / t->tau_ns) : 1.0;
    return decayed_count(t, at) / (t->tau_ns * seen) * 1e9;
}

bool ds_rate_replan_due(const ds_rate_tracker *t, uint64_t now_ns)
{
    if (t->n_events < t->min_events)
        return false;
    if (t->planned_rate < 0.0)
        return true;
    double r = ds_rate_per_s(t, now_ns), p = t->planned_rate;
    if (p <= 0.0 || r <= 0.0)
        return (p > 0.0) != (r > 0.0);
    return r > p * t->factor || p > r * t->factor;
}

void ds_rate_planned(ds_rate_tracker *t, double rate_per_s)
{
    t->planned_rate = rate_per_s > 0.0 ? rate_per_s : 0.0;
}
