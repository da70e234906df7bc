/* policy.c - the policy table, dynamic batching shared by every policy, and
 * the baselines.
 *
 * Dynamic batching (every policy): a model's batch is ready when its batch
 * size is queued, or when its oldest request has waited as long as the
 * batch formulation lets it: until deadline - 2 L(b, units), b the batch
 * size (room for one batch ahead of it and its own run; a timer fires then:
 * no busy loop). Without an SLO or a
 * latency prediction there is nothing to wait for, so it starts at once.
 * Requests that can no longer make their deadline even alone are expired by
 * the core before they reach a policy.
 *
 * Work conservation: waiting for a batch to fill only pays while the
 * resource the batch would use is busy anyway. So a model whose resource
 * is idle (temporal: the device; streams and ideal: its own instance;
 * static_spatial: its own partition; dstack: a free run of units at its
 * knee that no ready batch wants) starts with what it has queued. Measured
 * on the four-CNN mix, waiting on an idle device to fill batches cut every
 * policy's goodput by 2-5x (requests wait until deadline - 2 L, then queue
 * behind each other).
 *
 * Baselines (the D-STACK policy is in dstack_policy.c):
 *   temporal        one batch at a time on the whole device; among the
 *                   models whose batch is ready, the oldest head request
 *                   goes first (FCFS across models, which is round-robin
 *                   under load: a model served goes to the back because its
 *                   new head is younger). Triton/Clipper-style time sharing.
 *   streams         every ready model starts at once on the whole device
 *                   (no SM limits): several model instances on one GPU, the
 *                   hardware block scheduler shares the SMs.
 *   static_spatial  fixed disjoint partitions sized by the knees, scaled
 *                   down in proportion when they add up to more than the
 *                   device (each keeps at least one unit while units last),
 *                   laid out in registration order; a model runs only on its
 *                   own partition, no time sharing (GSLICE-style).
 *   ideal           (sim only) every ready model starts at once; the sim
 *                   executor in ideal mode gives each kernel exactly the SMs
 *                   it can use, fluidly, from the whole device, the oldest
 *                   batch first when they want more than it has.
 */
#include "sched/policy.h"
#include "util/fault.h"

#include <stddef.h>
#include <stdlib.h>

uint64_t ds_policy_latency(const ds_sched_model_view *m, uint32_t samples, uint32_t units)
{
    return m->latency ? m->latency(m->latency_arg, samples, units) : 0;
}

uint32_t ds_policy_batch_samples(const ds_sched_model_view *m)
{
    uint32_t b = m->queued_samples < m->batch_size ? m->queued_samples : m->batch_size;
    return b ? b : 1;
}

uint32_t ds_policy_batch_samples_at(const ds_sched_view *v, const ds_sched_model_view *m, uint32_t units)
{
    uint32_t b = ds_policy_batch_samples(m);
    if (m->queued_samples <= b || !m->latency || !m->oldest_deadline_ns)
        return b;
    /* A backlog: a bigger batch clears it faster (more throughput per SM),
     * as long as the oldest request still makes its deadline. Doubling
     * steps keep this O(log max_batch). */
    uint32_t most = m->queued_samples < m->max_batch ? m->queued_samples : m->max_batch;
    while (b < most) {
        uint32_t next = 2 * b < most ? 2 * b : most;
        if (v->now_ns + ds_policy_latency(m, next, units) > m->oldest_deadline_ns)
            break;
        b = next;
    }
    return b;
}

bool ds_policy_batch_ready(const ds_sched_view *v, const ds_sched_model_view *m, uint32_t units,
                           uint64_t *go_ns)
{
    *go_ns = 0;
    if (m->queued == 0 || m->running)
        return false;
    if (m->queued_samples >= m->batch_size || m->oldest_deadline_ns == 0)
        return true;
    /* The oldest request may wait for its batch to fill only as long as the
     * batch formulation allows (src/batch/batch.h): its deadline must still
     * hold one full batch ahead of it and its own run, 2 L(b). Waiting to
     * the last ns (deadline - L) would leave no room for units that are
     * still busy or for a prediction a little short. */
    uint64_t run = ds_policy_latency(m, m->batch_size, units);
    if (run == 0)
        return true;
    uint64_t go = m->oldest_deadline_ns > 2 * run ? m->oldest_deadline_ns - 2 * run : 0;
    if (v->now_ns >= go)
        return true;
    *go_ns = go;
    return false;
}

void ds_policy_wake_min(uint64_t *wake, uint64_t t)
{
    if (t && (*wake == 0 || t < *wake))
        *wake = t;
}

uint32_t ds_policy_share(const ds_sched_view *v, const ds_sched_model_view *m)
{
    uint32_t k = m->unit_count ? m->unit_count : 1;
    return k < v->n_units ? k : v->n_units;
}

/* ---- temporal ---- */

/* A batch of model `best` (UINT32_MAX: none) on the whole device. */
static bool whole_device(const ds_sched_view *v, uint32_t best, ds_sched_decision *d)
{
    if (best == UINT32_MAX)
        return false;
    d->model = best;
    d->batch = ds_policy_batch_samples_at(v, &v->models[best], v->n_units);
    d->first_unit = 0;
    d->unit_count = v->n_units;
    return true;
}

/* The model with the oldest waiting request that does not run now, or
 * UINT32_MAX: work conservation when no batch is ready (an idle device or
 * partition gains nothing by waiting for a batch to fill). */
uint32_t ds_policy_oldest_waiting(const ds_sched_view *v);

static bool temporal_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake)
{
    (void)state;
    *wake = 0;
    if (v->n_running > 0)
        return false;
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < v->n_models; i++) {
        const ds_sched_model_view *m = &v->models[i];
        uint64_t go;
        if (!ds_policy_batch_ready(v, m, v->n_units, &go)) {
            ds_policy_wake_min(wake, go);
            continue;
        }
        if (best == UINT32_MAX || m->oldest_submit_ns < v->models[best].oldest_submit_ns)
            best = i;
    }
    if (best == UINT32_MAX)
        best = ds_policy_oldest_waiting(v);
    return whole_device(v, best, d);
}

uint32_t ds_policy_oldest_waiting(const ds_sched_view *v)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < v->n_models; i++) {
        const ds_sched_model_view *m = &v->models[i];
        if (m->queued && !m->running && (best == UINT32_MAX || m->oldest_submit_ns < v->models[best].oldest_submit_ns))
            best = i;
    }
    return best;
}

/* ---- streams and ideal: everyone at once on the whole device ---- */

/* Each model is its own instance on its own stream: an idle instance takes
 * what is queued at once (Triton's default, max_queue_delay 0), so there is
 * nothing to wait for. */
static bool streams_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake)
{
    (void)state;
    *wake = 0;
    return whole_device(v, ds_policy_oldest_waiting(v), d);
}

/* ---- static spatial ---- */

/* Home partitions: knees scaled down to fit, in model order. Recomputed on
 * every pick from the views (O(models^2) at worst, models < units <= 64),
 * so models that come and go get a fresh layout; a running batch keeps its
 * units until it ends. Scaled down, every model keeps one unit and the
 * units beyond one per model are shared out in proportion to what each
 * knee asks beyond one, largest remainders first, so that all the units
 * are used and no model is left without one while there are at least as
 * many units as models (the library refuses to register more models than
 * units under this policy). */
void ds_static_counts(const uint32_t *knees, uint32_t n_models, uint32_t n_units, uint32_t *count)
{
    uint64_t want = 0, n = n_models;
    for (uint32_t i = 0; i < n_models; i++)
        want += knees[i] ? knees[i] : 1;
    bool scaled = want > n_units && n < n_units;
    uint64_t extra = scaled ? n_units - n : 0, asked = scaled ? want - n : 1, given = 0;
    for (uint32_t i = 0; i < n_models; i++) {
        uint64_t k = knees[i] ? knees[i] : 1;
        count[i] = (uint32_t)(want <= n_units ? k : 1 + (scaled ? (k - 1) * extra / asked : 0));
        given += count[i];
    }
    /* the units the floors left, one each to the largest remainders */
    for (; scaled && given < n_units; given++) {
        uint32_t best = UINT32_MAX;
        uint64_t best_rem = 0;
        for (uint32_t i = 0; i < n_models; i++) {
            uint64_t k = knees[i] ? knees[i] : 1;
            uint64_t rem = (k - 1) * extra % asked;
            if (count[i] == 1 + (k - 1) * extra / asked && (best == UINT32_MAX || rem > best_rem)) {
                best = i;
                best_rem = rem;
            }
        }
        if (best == UINT32_MAX)
            break;
        count[best]++;
    }
    uint32_t next = 0; /* more models than units: the last ones get none */
    for (uint32_t i = 0; i < n_models; i++) {
        if (next + count[i] > n_units)
            count[i] = next < n_units ? n_units - next : 0;
        next += count[i];
    }
}

static void static_layout(const uint32_t *knees, uint32_t n_models, uint32_t n_units, uint32_t *first,
                          uint32_t *count)
{
    ds_static_counts(knees, n_models, n_units, count);
    uint32_t next = 0;
    for (uint32_t i = 0; i < n_models; i++) {
        first[i] = next;
        next += count[i];
    }
}

typedef struct static_state {
    uint32_t *buf;
    uint32_t cap;
} static_state;

static void *static_create(void) { return ds_calloc(1, sizeof(static_state)); }

static void static_destroy(void *state)
{
    static_state *s = state;
    if (s)
        free(s->buf);
    free(s);
}

static bool static_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake)
{
    static_state *s = state;
    *wake = 0;
    if (v->n_models > s->cap) {
        uint32_t *buf = ds_realloc(s->buf, 3 * (size_t)v->n_models * sizeof *buf);
        if (!buf)
            return false;
        s->buf = buf;
        s->cap = v->n_models;
    }
    uint32_t *first = s->buf, *count = s->buf + v->n_models, *knees = s->buf + 2 * (size_t)v->n_models;
    for (uint32_t i = 0; i < v->n_models; i++)
        knees[i] = v->models[i].unit_count;
    static_layout(knees, v->n_models, v->n_units, first, count);
    bool found = false;
    for (uint32_t i = 0; i < v->n_models && !found; i++) {
        const ds_sched_model_view *m = &v->models[i];
        if (count[i] == 0)
            continue; /* more models than units: this one never runs */
        if (m->queued == 0 || m->running || (v->units_busy & ds_unit_mask(first[i], count[i])))
            continue; /* its own partition is busy (or held by a batch from before a relayout) */
        d->model = i;
        d->batch = ds_policy_batch_samples_at(v, m, count[i]);
        d->first_unit = first[i];
        d->unit_count = count[i];
        found = true;
    }
    return found;
}

bool ds_dstack_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake);
void *ds_dstack_create(void);
void ds_dstack_destroy(void *state);

static const ds_policy_ops policy_table[] = {
    {"temporal", DSTACK_POLICY_TEMPORAL, false, NULL, NULL, temporal_pick},
    {"streams", DSTACK_POLICY_STREAMS, true, NULL, NULL, streams_pick},
    {"static_spatial", DSTACK_POLICY_STATIC_SPATIAL, false, static_create, static_destroy, static_pick, true,
     ds_static_counts},
    {"ideal", DSTACK_POLICY_IDEAL, true, NULL, NULL, streams_pick},
    {"dstack", DSTACK_POLICY_DSTACK, false, ds_dstack_create, ds_dstack_destroy, ds_dstack_pick, true},
};

const ds_policy_ops *ds_policy_find(dstack_policy policy)
{
    for (size_t i = 0; i < sizeof policy_table / sizeof policy_table[0]; i++)
        if (policy_table[i].id == policy)
            return &policy_table[i];
    return NULL;
}
