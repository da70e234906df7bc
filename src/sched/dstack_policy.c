/* dstack_policy.c - the D-STACK spatio-temporal policy.
 *
 * Each model has a knee k (partition units past which it barely speeds up,
 * from src/knee), a batch size b (from src/batch) and a latency model
 * L(b, u). The policy places batches of different models side by side on
 * disjoint unit ranges, and time-shares when the knees add up to more than
 * the device. One pick:
 *
 *  1. Candidates: models not running whose batch is ready (dynamic batching,
 *     policy.h). Models not ready tell when they will be (the wake-up time).
 *  2. Order (the fair cycle): first the *starving* models, those with work
 *     that have not started a batch for half their SLO (half the longest
 *     SLO of the models for one without an SLO; oldest head first);
 *     then least laxity first: laxity = oldest deadline - now - L(b, k), the
 *     time the model can still wait; ties and models without an SLO by the
 *     oldest head request.
 *  3. Placement, for each candidate in that order, on the free units:
 *     - the share is right-sized at dispatch: the fewest units, up to the
 *       model's planned share (its knee, or more when the knee cannot carry
 *       its rate), on which this batch fits: its oldest request makes its
 *       deadline, 2 L(b, u) <= SLO (room for the batch behind), and
 *       b / L(b, u) >= 1.5 x its measured rate (it keeps up); a batch that
 *       fits nowhere gets its planned share; without a latency model, the
 *       planned share;
 *     - it goes in the smallest free run of consecutive units that holds it
 *       (best fit keeps large runs for large shares), at the run's start,
 *       or at its end when the run reaches the last unit: the ranges that
 *       end there hold the SMs no unit holds (util/units.h; 12 on a
 *       132-SM Hopper), so they work as often as the last unit can;
 *     - units that no waiting model needs (free units minus the shares of
 *       the models that wait without running) are added to it: idle units
 *       go to a model that has work;
 *     - a backlog (more queued than one batch takes) is a burst the rate
 *       estimate has not caught up with: no right-sizing below the planned
 *       share, and the batch is sized for the spare units it will get.
 *     The batch is the model's planned batch, grown toward max_batch while a
 *     backlog is queued and the oldest request still makes its deadline.
 *  4. A starving model that cannot be placed stops the pick: nothing else
 *     may take the units it waits for (no starvation of wide models by a
 *     stream of narrow ones). Otherwise the next candidate is tried, so no
 *     unit idles while a batch that fits waits.
 *  5. Work conservation: when no ready batch took the free units, a model
 *     still filling its batch starts on them at its knee (oldest head
 *     first): a free partition gains nothing by waiting.
 *
 * Why it is fair: a model with work either runs within half its SLO or
 * becomes starving, and starving models are served first, oldest first, and
 * block everyone else until they are placed; so every model with work starts
 * a batch within about SLO/2 plus one batch time of the running ones,
 * whatever the others' demand (when the device can carry the load at all).
 * Between starvation events, least-laxity-first gives the units to whoever's
 * deadline is closest, which serves models in proportion to their demand
 * (a model with more arrivals fills its batch and reaches low laxity more
 * often): the cycle is weighted by demand.
 *
 * Why this and not the alternatives: a fixed round-robin cycle (the paper's
 * description) needs the cycle length and the slots recomputed whenever
 * rates change, and leaves units idle in slots of models with no work; a
 * pure earliest-deadline order starves wide models behind narrow ones; a
 * static split (static_spatial) cannot give a model more than its share
 * when the others are idle. Least laxity with a starvation guard keeps the
 * cycle implicit and work-conserving.
 *
 * Cost per pick: O(M log M) for M models (the sort of the candidates) plus
 * O(M x U) for the runs and shares of U <= 64 units, each share a call of
 * the latency model (a table lookup); no allocation after the first picks
 * (scratch arrays kept in the state).
 *
 * The shares it places come from the joint plan (ds_plan_joint in
 * src/batch/latency.h, run by the library's planner thread): every model's
 * share sized together so that they fit the device while a split that
 * fits with 1.1x the measured rates to spare exists (the fewest units
 * that keep up with 1.5x the measured rate, the spare spread as an equal
 * margin), and per-model plans that time-share when none does. Planned
 * alone, the four-CNN mix's shares added up to 18-26 units of 15 at every
 * rate, so the policy time-shared where a spatial split existed.
 *
 * What the simulator says about it (bench/results/sched-compare-sim.md):
 * on the H100 model, CNNs at a 25 ms SLO run batches whose latency scales
 * almost linearly to 60-100 SMs, so partitions gain 1.45x over temporal
 * sharing on the four-CNN mix (1.41x with eight models at 50 ms), and
 * sharing SMs at block granularity (streams) packs better than 8-SM units
 * can. A batch placed on every unit runs on the whole device
 * (util/units.h), so a model alone with work gets all the SMs temporal
 * would give it (bursty mix: 0.98x temporal).
 */
#include <stdlib.h>
#include <string.h>

#include "sched/policy.h"
#include "util/fault.h"

typedef struct cand {
    uint32_t model;
    bool starving;
    int64_t laxity_ns;
    uint64_t oldest_ns;
} cand;

typedef struct dstack_state {
    cand *c;
    uint32_t cap;
} dstack_state;

void *ds_dstack_create(void);
void ds_dstack_destroy(void *state);
bool ds_dstack_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake);

void *ds_dstack_create(void) { return ds_calloc(1, sizeof(dstack_state)); }

void ds_dstack_destroy(void *state)
{
    dstack_state *s = state;
    if (s)
        free(s->c);
    free(s);
}

/* deadline - now - run, saturating: a deadline far in the future (a
 * caller's UINT64_MAX for "never") must not wrap to the most urgent. */
static int64_t laxity_ns(uint64_t deadline, uint64_t now, uint64_t run)
{
    const uint64_t big = (uint64_t)INT64_MAX / 2;
    if (deadline == 0)
        return INT64_MAX;
    uint64_t r = run < big ? run : big;
    if (deadline >= now) {
        uint64_t left = deadline - now;
        return (int64_t)(left < big ? left : big) - (int64_t)r;
    }
    uint64_t past = now - deadline;
    return -(int64_t)(past < big ? past : big) - (int64_t)r;
}

static int cand_cmp(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    if (a->starving != b->starving)
        return a->starving ? -1 : 1;
    if (!a->starving && a->laxity_ns != b->laxity_ns)
        return a->laxity_ns < b->laxity_ns ? -1 : 1;
    if (a->oldest_ns != b->oldest_ns)
        return a->oldest_ns < b->oldest_ns ? -1 : 1;
    return a->model < b->model ? -1 : (a->model > b->model);
}

/* Free runs of the unit mask: the smallest run of at least `want` units
 * (best fit) in *first and *len, or the largest run when none is that long.
 * Returns false when no unit is free. */
static bool find_run(uint64_t busy, uint32_t n_units, uint32_t want, uint32_t *first, uint32_t *len)
{
    uint32_t best_f = 0, best_l = 0, big_f = 0, big_l = 0;
    for (uint32_t u = 0; u < n_units;) {
        if (busy & (1ull << u)) {
            u++;
            continue;
        }
        uint32_t f = u;
        while (u < n_units && !(busy & (1ull << u)))
            u++;
        uint32_t l = u - f;
        if (l >= want && (best_l == 0 || l < best_l)) {
            best_f = f;
            best_l = l;
        }
        if (l > big_l) {
            big_f = f;
            big_l = l;
        }
    }
    if (best_l) {
        *first = best_f;
        *len = best_l;
        return true;
    }
    *first = big_f;
    *len = big_l;
    return big_l > 0;
}

/* Free units minus the knees of the other models that wait without
 * running: what model `me` may take beyond its own share without taking
 * anything a waiting model could use. */
static uint32_t spare_units(const ds_sched_view *v, uint32_t me)
{
    int64_t spare = 0;
    for (uint32_t u = 0; u < v->n_units; u++)
        spare += !(v->units_busy & (1ull << u));
    for (uint32_t i = 0; i < v->n_models; i++) {
        const ds_sched_model_view *m = &v->models[i];
        if (i != me && m->queued > 0 && !m->running)
            spare -= ds_policy_share(v, m);
    }
    return spare > 0 ? (uint32_t)spare : 0;
}

/* Poisson arrivals bunch up: a share must carry half again the mean rate
 * to keep a model's queue short (measured on the four-CNN mix: 1.1x lost
 * 8% of goodput against 1.5x, 2x gained nothing more). */
#define RATE_HEADROOM 1.5

/* Does a batch of b on u units fit model m's constraints at now? Its
 * oldest request makes its deadline, the run leaves room for one batch
 * ahead in the SLO (2 L <= SLO, the batch formulation), and the model keeps
 * up with its arrival rate (b / L >= rate). */
static bool share_fits(const ds_sched_view *v, const ds_sched_model_view *m, uint32_t b, uint32_t u)
{
    uint64_t run = ds_policy_latency(m, b, u);
    if (run == 0)
        return false;
    if (m->oldest_deadline_ns && v->now_ns + run > m->oldest_deadline_ns)
        return false;
    if (m->slo_ns && 2 * run > m->slo_ns)
        return false;
    return (double)b * 1e9 / (double)run >= RATE_HEADROOM * m->arrival_rps;
}

/* Try to place candidate m; fills d on success. The share is right-sized
 * at dispatch: the fewest units, up to its knee, on which this batch fits
 * (share_fits), so the units it does not need stay free for the others;
 * without a latency model, its knee. */
static bool place(const ds_sched_view *v, uint32_t mi, ds_sched_decision *d)
{
    const ds_sched_model_view *m = &v->models[mi];
    uint32_t k = ds_policy_share(v, m), first, len;
    if (!find_run(v->units_busy, v->n_units, k, &first, &len))
        return false;
    uint32_t top = len < k ? len : k;
    /* with a backlog, the units nobody waiting needs are this batch's too,
     * and the batch is sized for them: a burst is served at full width */
    uint32_t spare = spare_units(v, mi);
    bool backlog = m->queued_samples > ds_policy_batch_samples(m);
    uint32_t wide = backlog && spare > top ? (len < spare ? len : spare) : top;
    uint32_t b = ds_policy_batch_samples_at(v, m, wide);
    uint32_t units = 0;
    if (m->latency) {
        /* a backlog is a burst the rate estimate has not seen yet: no
         * right-sizing below the planned share then */
        uint32_t lo = backlog ? top : 1, planned = ds_policy_batch_samples(m);
        for (;;) {
            for (uint32_t u = lo; u <= top && !units; u++)
                if (share_fits(v, m, b, u))
                    units = u;
            if (units || b <= planned || len >= k)
                break;
            /* a batch grown for a backlog that fits no free share, and no
             * run holds its planned share (the fallback below): smaller
             * ones, down to the planned batch, before the model waits.
             * Where the planned share is free the grown batch runs there:
             * shrinking it too cost the bursty mix 534 -> 344 req/s. */
            b = b / 2 > planned ? b / 2 : planned;
        }
        if (!units && len >= k)
            units = k; /* fits nowhere: at least its knee */
    } else if (len >= k) {
        units = k;
    }
    if (!units)
        return false;
    if (units < len) /* best fit for the share actually taken */
        find_run(v->units_busy, v->n_units, units, &first, &len);
    if (len > units && spare > units)
        units = len < spare ? len : spare; /* units nobody waiting needs go to this batch */
    d->model = mi;
    d->batch = b;
    if (first + len == v->n_units) /* the run's end: the last unit, the SMs left over with it */
        first += len - units;
    d->first_unit = first;
    d->unit_count = units;
    return true;
}

bool ds_dstack_pick(void *state, ds_sched_view *v, ds_sched_decision *d, uint64_t *wake)
{
    dstack_state *s = state;
    *wake = 0;
    if (v->n_models > s->cap) {
        cand *c = ds_realloc(s->c, v->n_models * sizeof *c);
        if (!c)
            return false;
        s->c = c;
        s->cap = v->n_models;
    }
    /* a model without an SLO has no laxity and would come after every model
     * with one: it starves after half the longest SLO there is instead */
    uint64_t longest_slo = 0;
    for (uint32_t i = 0; i < v->n_models; i++)
        if (v->models[i].slo_ns > longest_slo)
            longest_slo = v->models[i].slo_ns;
    uint32_t n = 0;
    for (uint32_t i = 0; i < v->n_models; i++) {
        const ds_sched_model_view *m = &v->models[i];
        uint32_t k = ds_policy_share(v, m);
        uint64_t go;
        if (!ds_policy_batch_ready(v, m, k, &go)) {
            ds_policy_wake_min(wake, go);
            continue;
        }
        cand *c = &s->c[n++];
        c->model = i;
        c->oldest_ns = m->oldest_submit_ns;
        uint64_t horizon = m->slo_ns ? m->slo_ns : longest_slo;
        c->starving = horizon && v->now_ns - m->ps->last_start_ns > horizon / 2 &&
                      v->now_ns - m->oldest_submit_ns > horizon / 2;
        uint64_t run = ds_policy_latency(m, ds_policy_batch_samples(m), k);
        c->laxity_ns = laxity_ns(m->oldest_deadline_ns, v->now_ns, run);
    }
    if (n > 1) /* qsort(NULL, 0) is undefined: no models, no array yet */
        qsort(s->c, n, sizeof *s->c, cand_cmp);
    for (uint32_t i = 0; i < n; i++) {
        if (place(v, s->c[i].model, d))
            return true;
        if (s->c[i].starving)
            return false; /* it waits for units: nobody takes them first */
    }
    /* Work conservation: no ready batch wants the free units, so a model
     * still filling its batch may start on them at its knee (oldest head
     * first): free units gain nothing by waiting. */
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < v->n_models; i++) {
        const ds_sched_model_view *m = &v->models[i];
        if (!m->queued || m->running)
            continue;
        uint32_t k = ds_policy_share(v, m), first, len;
        if (!find_run(v->units_busy, v->n_units, k, &first, &len) || len < k)
            continue;
        if (best == UINT32_MAX || m->oldest_submit_ns < v->models[best].oldest_submit_ns)
            best = i;
    }
    return best != UINT32_MAX && place(v, best, d);
}
