#include "sched/policy.h"

#include <stddef.h>

/* temporal: see policy.h. Ties on arrival go to the lower model index, so a
 * replayed trace schedules identically. */
static bool temporal_pick(void *state, const ds_sched_view *v, ds_sched_decision *d)
{
    (void)state;
    if (v->n_running > 0)
        return false;
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < v->n_models; i++) {
        const ds_sched_model_view *m = &v->models[i];
        if (m->queued == 0 || m->running)
            continue;
        if (best == UINT32_MAX || m->oldest_submit_ns < v->models[best].oldest_submit_ns)
            best = i;
    }
    if (best == UINT32_MAX)
        return false;
    const ds_sched_model_view *m = &v->models[best];
    d->model = best;
    d->batch = m->queued < m->batch_size ? m->queued : m->batch_size;
    d->first_unit = 0;
    d->unit_count = v->n_units;
    return true;
}

static const ds_policy_ops policy_table[] = {
    {"temporal", DSTACK_POLICY_TEMPORAL, temporal_pick},
};

const ds_policy_ops *ds_policy_find(dstack_policy policy)
{
    for (size_t i = 0; i < sizeof policy_table / sizeof policy_table[0]; i++)
        if (policy_table[i].id == policy)
            return &policy_table[i];
    return NULL;
}
