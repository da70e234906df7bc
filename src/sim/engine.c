/* engine.c - the event engine; the model is documented in engine.h.
 *
 * State is flat arrays linked by index (no pointers into itself), so the
 * whole engine can be cloned with memcpy: ds_sim_engine_next_end_ns runs a
 * clone forward to the first batch end (kernel ends in between change
 * bandwidth shares, so the end time needs the simulation, and the real
 * engine must not move ahead of the caller's clock). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim/engine.h"
#include "util/error.h"
#include "util/units.h"

typedef struct eng_batch {
    bool live;
    bool launched;           /* current kernel launched (else waiting for `timer`) */
    uint32_t cur;            /* current kernel */
    uint32_t n;
    uint32_t first_unit, n_units;
    uint32_t live_rounds;
    uint64_t seq;            /* start order */
    uint64_t undispatched;   /* blocks of the current kernel not yet placed */
    double timer;            /* launch time of the current kernel (or end, cur == n) */
    const ds_sim_kernel *k;
    void *user;
} eng_batch;

typedef struct eng_round {
    bool live;
    bool listed;             /* scratch of compute_rates, false between calls */
    uint32_t batch;
    uint32_t slots;          /* normal mode: slots held in all */
    double sms;              /* SMs held (normal: slots / SLOTS; ideal: allocated) */
    double touched;          /* SMs its blocks are spread over (bandwidth cap, weight) */
    double want_sms;         /* ideal: SMs the kernel can use */
    double compute_ns;       /* at full speed, >= 1 */
    double bytes;
    double left;             /* fraction of the round still to do */
    double rate;             /* fraction per ns */
    double end;              /* now + left / rate */
    /* scratch for the allocations */
    double bw_speed;         /* share of sm_mem_bw its SMs reach (occupancy) */
    double use_per_slot;     /* share of an SM's throughput one slot of it uses */
    double want_bw, weight, key;
} eng_round;

struct ds_sim_engine {
    ds_sim_device dev;
    bool ideal;
    double now;
    double busy;             /* SM x ns */
    uint64_t next_seq;
    /* Units as the engine holds them: the device's n_units, plus one unit
     * of the SMs no unit holds (12 on the H100) when there are any, which
     * only a batch on every unit reaches (util/units.h: that range is the
     * whole device). */
    uint32_t n_units;
    uint32_t *usms;          /* SMs of each unit */
    uint32_t *unit_free;     /* free slots per unit */
    double *unit_load;       /* scratch: SM throughput asked of each unit / its SMs */
    eng_batch *b;
    uint32_t nb, cap_b;      /* nb: slots used (live or not) */
    uint32_t running;
    eng_round *r;
    uint32_t nr, cap_r;
    uint32_t *rslots;        /* cap_r x n_units: slots round i holds in unit u */
    uint32_t *pending;       /* batch indices in launch order */
    uint32_t n_pending;      /* capacity cap_b */
    uint32_t *order;         /* scratch, cap_r */
    uint32_t *prev;          /* compute_rates' last order (cap_r), to start the next sort from */
    uint32_t n_prev;
    /* next_end cache */
    ds_sim_engine *spec;
    bool spec_valid;
    uint64_t spec_end;
};

/* ---- memory ---- */

static bool grow_batches(ds_sim_engine *e, uint32_t want)
{
    if (want <= e->cap_b)
        return true;
    uint32_t cap = e->cap_b ? e->cap_b : 16;
    while (cap < want)
        cap *= 2;
    eng_batch *b = realloc(e->b, cap * sizeof *b);
    if (!b)
        return false;
    e->b = b;
    uint32_t *p = realloc(e->pending, cap * sizeof *p);
    if (!p)
        return false;
    e->pending = p;
    e->cap_b = cap;
    return true;
}

static bool grow_rounds(ds_sim_engine *e, uint32_t want)
{
    if (want <= e->cap_r)
        return true;
    uint32_t cap = e->cap_r ? e->cap_r : 16;
    while (cap < want)
        cap *= 2;
    eng_round *r = realloc(e->r, cap * sizeof *r);
    if (!r)
        return false;
    e->r = r;
    uint32_t *s = realloc(e->rslots, (size_t)cap * e->n_units * sizeof *s);
    if (!s)
        return false;
    e->rslots = s;
    uint32_t *o = realloc(e->order, cap * sizeof *o);
    if (!o)
        return false;
    e->order = o;
    uint32_t *pv = realloc(e->prev, cap * sizeof *pv);
    if (!pv)
        return false;
    e->prev = pv;
    e->cap_r = cap;
    return true;
}

ds_sim_engine *ds_sim_engine_create(const ds_sim_device *dev, bool ideal)
{
    if (!dev || dev->n_units == 0 || dev->unit_sms == 0 || dev->n_units == UINT32_MAX)
        return NULL;
    ds_sim_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->dev = *dev;
    e->ideal = ideal;
    uint32_t left = ds_units_leftover(dev->partitioning, dev->sm_count, dev->unit_sms, dev->n_units);
    e->n_units = dev->n_units + (left > 0);
    e->usms = malloc(e->n_units * sizeof *e->usms);
    e->unit_free = malloc(e->n_units * sizeof *e->unit_free);
    e->unit_load = malloc(e->n_units * sizeof *e->unit_load);
    if (!e->usms || !e->unit_free || !e->unit_load || !grow_batches(e, 16) || !grow_rounds(e, 16)) {
        ds_sim_engine_destroy(e);
        return NULL;
    }
    for (uint32_t u = 0; u < dev->n_units; u++)
        e->usms[u] = dev->unit_sms;
    if (left)
        e->usms[dev->n_units] = left;
    for (uint32_t u = 0; u < e->n_units; u++)
        e->unit_free[u] = e->usms[u] * DS_SIM_SM_SLOTS;
    return e;
}

void ds_sim_engine_destroy(ds_sim_engine *e)
{
    if (!e)
        return;
    ds_sim_engine_destroy(e->spec);
    free(e->usms);
    free(e->unit_free);
    free(e->unit_load);
    free(e->b);
    free(e->pending);
    free(e->r);
    free(e->rslots);
    free(e->order);
    free(e->prev);
    free(e);
}

/* dst becomes a copy of src (dst's own spec cache untouched). */
static bool engine_clone(ds_sim_engine *dst, const ds_sim_engine *src)
{
    if (!grow_batches(dst, src->cap_b) || !grow_rounds(dst, src->cap_r))
        return false;
    dst->dev = src->dev;
    dst->ideal = src->ideal;
    dst->now = src->now;
    dst->busy = src->busy;
    dst->next_seq = src->next_seq;
    memcpy(dst->prev, src->prev, src->n_prev * sizeof *src->prev); /* a head start for its sort */
    dst->n_prev = src->n_prev;
    memcpy(dst->usms, src->usms, src->n_units * sizeof *src->usms);
    memcpy(dst->unit_free, src->unit_free, src->n_units * sizeof *src->unit_free);
    memcpy(dst->b, src->b, src->nb * sizeof *src->b);
    dst->nb = src->nb;
    dst->running = src->running;
    memcpy(dst->r, src->r, src->nr * sizeof *src->r);
    memcpy(dst->rslots, src->rslots, (size_t)src->nr * src->n_units * sizeof *src->rslots);
    dst->nr = src->nr;
    memcpy(dst->pending, src->pending, src->n_pending * sizeof *src->pending);
    dst->n_pending = src->n_pending;
    return true;
}

/* ---- placing blocks ---- */

static void pending_remove(ds_sim_engine *e, uint32_t i)
{
    memmove(&e->pending[i], &e->pending[i + 1], (e->n_pending - i - 1) * sizeof *e->pending);
    e->n_pending--;
}

static uint32_t new_round(ds_sim_engine *e)
{
    for (uint32_t i = 0; i < e->nr; i++)
        if (!e->r[i].live)
            return i;
    if (!grow_rounds(e, e->nr + 1))
        return UINT32_MAX;
    return e->nr++;
}

/* A round computing for `compute_ns` at full speed, its SMs at occupancy
 * `per_sm` blocks each (bandwidth cap and share of their throughput). */
static void round_init(ds_sim_engine *e, uint32_t ri, uint32_t bi, double compute_ns,
                       double per_sm, double bytes)
{
    const ds_sim_kernel *k = &e->b[bi].k[e->b[bi].cur];
    eng_round *r = &e->r[ri];
    memset(r, 0, sizeof *r);
    r->live = true;
    r->batch = bi;
    r->compute_ns = fmax(compute_ns, 1.0);
    r->bw_speed = ds_sim_occupancy_speed(k, &e->dev, per_sm);
    r->use_per_slot = r->bw_speed / (per_sm / (double)k->blocks_per_sm) / DS_SIM_SM_SLOTS;
    r->bytes = bytes;
    r->left = 1.0;
    e->b[bi].live_rounds++;
}

/* Whether a kernel other than pending[i] waits for SMs in pending[i]'s
 * unit range. */
static bool others_wait(const ds_sim_engine *e, uint32_t i)
{
    const eng_batch *b = &e->b[e->pending[i]];
    for (uint32_t j = 0; j < e->n_pending; j++) {
        const eng_batch *o = &e->b[e->pending[j]];
        if (j != i && o->first_unit < b->first_unit + b->n_units &&
            b->first_unit < o->first_unit + o->n_units)
            return true;
    }
    return false;
}

/* Normal mode: walk the queue in launch order; each kernel takes whole
 * blocks in the free slots of its units, lowest unit first. */
static bool dispatch_normal(ds_sim_engine *e)
{
    for (uint32_t i = 0; i < e->n_pending;) {
        uint32_t bi = e->pending[i];
        eng_batch *b = &e->b[bi];
        const ds_sim_kernel *k = &b->k[b->cur];
        uint32_t spb = DS_SIM_SM_SLOTS / k->blocks_per_sm;
        uint64_t fit = 0;
        bool all_free = true;
        for (uint32_t u = b->first_unit; u < b->first_unit + b->n_units; u++) {
            fit += e->unit_free[u] / spb;
            all_free = all_free && e->unit_free[u] == e->usms[u] * DS_SIM_SM_SLOTS;
        }
        if (fit == 0) {
            i++;
            continue;
        }
        /* The whole kernel in one round only on a range nobody else holds
         * or waits for: there it gets its own SMs back at every wave
         * boundary, and compute-or-memory is taken over all its waves
         * (kernels.c, kernel_alone_ns). Beside other kernels one wave at a
         * time, so SMs they free later serve this kernel's remaining
         * blocks, and the SMs its tail leaves idle serve the next kernel in
         * the queue, as the hardware would. */
        bool whole = b->undispatched >= fit && all_free && !others_wait(e, i);
        uint64_t blocks = whole || b->undispatched < fit ? b->undispatched : fit;
        uint64_t per_wave = blocks < fit ? blocks : fit;
        uint32_t ri = new_round(e);
        if (ri == UINT32_MAX)
            return false;
        eng_round *r = &e->r[ri];
        r->live = false; /* filled below, initialised once its SMs are known */
        uint32_t *rs = &e->rslots[(size_t)ri * e->n_units];
        memset(rs, 0, e->n_units * sizeof *rs);
        r->slots = 0;
        r->touched = 0;
        /* Breadth-first, as the block scheduler: first one block per SM
         * across the range, then fill up. */
        uint64_t need = per_wave;
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t u = b->first_unit; u < b->first_unit + b->n_units && need; u++) {
                uint64_t take = e->unit_free[u] / spb;
                if (pass == 0 && take > e->usms[u])
                    take = e->usms[u];
                if (take > need)
                    take = need;
                uint64_t had = rs[u] / spb;
                rs[u] += (uint32_t)(take * spb);
                e->unit_free[u] -= (uint32_t)(take * spb);
                r->slots += (uint32_t)(take * spb);
                uint64_t now_sms = had + take < e->usms[u] ? had + take : e->usms[u];
                uint64_t had_sms = had < e->usms[u] ? had : e->usms[u];
                r->touched += (double)(now_sms - had_sms);
                need -= take;
            }
        uint32_t slots = r->slots;
        double touched = r->touched;
        double per_sm = ceil((double)per_wave / touched);
        double compute = ds_sim_wave_of_ns(k, &e->dev, per_sm);
        if (whole) { /* full waves, then the tail over min(tail, touched) SMs */
            uint64_t tail = blocks % fit;
            compute *= (double)(blocks / fit);
            if (tail)
                compute += ds_sim_wave_of_ns(k, &e->dev,
                                             ceil((double)tail / fmin((double)tail, touched)));
        }
        round_init(e, ri, bi, compute, per_sm, k->bytes * (double)blocks / (double)k->blocks);
        r->slots = slots;
        r->touched = touched;
        r->sms = (double)slots / DS_SIM_SM_SLOTS;
        b->undispatched -= blocks;
        if (b->undispatched == 0)
            pending_remove(e, i);
        else
            i++;
    }
    return true;
}

/* Ideal mode: every launched kernel is one round at once. */
static bool dispatch_ideal(ds_sim_engine *e)
{
    while (e->n_pending) {
        uint32_t bi = e->pending[0];
        eng_batch *b = &e->b[bi];
        const ds_sim_kernel *k = &b->k[b->cur];
        uint32_t ri = new_round(e);
        if (ri == UINT32_MAX)
            return false;
        /* A block alone on an SM runs at its occupancy speed: the kernel
         * is done at best in one such block time, with its blocks packed
         * so that every SM it holds is saturated. */
        round_init(e, ri, bi, ds_sim_wave_of_ns(k, &e->dev, 1.0), 1.0, k->bytes);
        double pack = (double)k->blocks_per_sm * e->dev.sat_occupancy;
        e->r[ri].want_sms = (double)k->blocks / (pack > 1.0 ? pack : 1.0);
        e->r[ri].bw_speed = 1.0;
        b->undispatched = 0;
        pending_remove(e, 0);
    }
    return true;
}

/* ---- rates ---- */

/* Sort e->order[0..n) by r[].key ascending, ties by index: a total order,
 * so the result does not depend on the order it starts from. An insertion
 * sort: compute_rates starts it from its previous order, which the keys
 * mostly keep from one event to the next (started from index order it was
 * a third of the eight-model benchmark's time). */
static void sort_by_key(ds_sim_engine *e, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        uint32_t x = e->order[i];
        double kx = e->r[x].key;
        uint32_t j = i;
        while (j > 0) {
            uint32_t y = e->order[j - 1];
            if (!(e->r[y].key > kx || (e->r[y].key == kx && y > x)))
                break;
            e->order[j] = y;
            j--;
        }
        e->order[j] = x;
    }
}

/* Ideal mode: SMs in the order the batches started, each round taking
 * the SMs it can use (want_sms, a real number) while any are left: the
 * oldest work first, without waves, units or fragmentation. Two orders
 * were tried before and were no bound: a max-min fair split delays the
 * oldest kernels (`streams` beat it by 2% on the four-CNN mix), and the
 * hardware's kernel launch order puts each kernel of a long chain behind
 * every kernel launched meanwhile, so a deep net (densenet121, ~200
 * kernels) fell behind: `streams` beat it by 2.4% on the eight-model mix
 * at full length. Started-first serves each batch's chain as one job; on
 * that mix it holds every SLO up to 99.9% SM utilization. */
static void share_sms(ds_sim_engine *e)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->nr; i++)
        if (e->r[i].live) {
            e->r[i].key = (double)e->b[e->r[i].batch].seq;
            e->order[n++] = i;
        }
    sort_by_key(e, n);
    double left = e->dev.sm_count;
    for (uint32_t j = 0; j < n; j++) {
        eng_round *r = &e->r[e->order[j]];
        r->sms = r->want_sms < left ? r->want_sms : left;
        left -= r->sms;
    }
}

/* Bandwidth by weighted max-min fair water-filling, then each round's rate
 * and end time. */
/* Normal mode: with sat_occupancy < 1 a kernel reaches an SM's full rate
 * before it holds all its slots, so two kernels sharing SMs could ask for
 * more than the SMs have. Each unit's rounds are slowed together until
 * they ask for at most its SMs' throughput; unit_slowdown gives round i its factor. */
static void unit_loads(ds_sim_engine *e)
{
    for (uint32_t u = 0; u < e->n_units; u++)
        e->unit_load[u] = 0;
    for (uint32_t i = 0; i < e->nr; i++)
        if (e->r[i].live) { /* a round holds slots only in its batch's units */
            const eng_batch *b = &e->b[e->r[i].batch];
            for (uint32_t u = b->first_unit; u < b->first_unit + b->n_units; u++)
                e->unit_load[u] += e->rslots[(size_t)i * e->n_units + u] * e->r[i].use_per_slot;
        }
    for (uint32_t u = 0; u < e->n_units; u++)
        e->unit_load[u] /= e->usms[u];
}

static double unit_slowdown(const ds_sim_engine *e, uint32_t i)
{
    double most = 1.0;
    const eng_batch *b = &e->b[e->r[i].batch];
    for (uint32_t u = b->first_unit; u < b->first_unit + b->n_units; u++)
        if (e->rslots[(size_t)i * e->n_units + u] && e->unit_load[u] > most)
            most = e->unit_load[u];
    return 1.0 / most;
}

static void compute_rates(ds_sim_engine *e)
{
    if (e->ideal)
        share_sms(e);
    else
        unit_loads(e);
    /* e->order: the live rounds, those of the last call first in its order
     * (the sort below then has little to move), the new ones after */
    uint32_t n = 0;
    for (uint32_t j = 0; j < e->n_prev; j++) {
        uint32_t i = e->prev[j];
        if (i < e->nr && e->r[i].live && !e->r[i].listed) {
            e->r[i].listed = true;
            e->order[n++] = i;
        }
    }
    for (uint32_t i = 0; i < e->nr; i++)
        if (e->r[i].live && !e->r[i].listed)
            e->order[n++] = i;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t i = e->order[j];
        eng_round *r = &e->r[i];
        r->listed = false;
        double speed = e->ideal ? (r->want_sms > 0 ? r->sms / r->want_sms : 1.0)
                                : unit_slowdown(e, i);
        r->rate = speed / r->compute_ns;        /* compute-bound rate */
        double demand = r->bytes * r->rate * 1e9; /* bytes/s at that rate */
        double touched = e->ideal ? r->sms : r->touched;
        double cap = touched * e->dev.sm_mem_bw * r->bw_speed;
        r->want_bw = demand < cap ? demand : cap;
        r->weight = touched > 0 ? touched : 1e-9;
        r->key = r->want_bw / r->weight;
    }
    double sum_want = 0; /* in index order, as it always was: the same sum to the bit */
    for (uint32_t i = 0; i < e->nr; i++)
        if (e->r[i].live)
            sum_want += e->r[i].want_bw;
    if (sum_want > e->dev.mem_bw) {
        sort_by_key(e, n);
        memcpy(e->prev, e->order, n * sizeof *e->order);
        e->n_prev = n;
        double bw = e->dev.mem_bw, w = 0;
        for (uint32_t j = 0; j < n; j++)
            w += e->r[e->order[j]].weight;
        for (uint32_t j = 0; j < n; j++) {
            eng_round *r = &e->r[e->order[j]];
            double share = bw * r->weight / w;
            if (r->want_bw > share)
                r->want_bw = share;
            bw -= r->want_bw;
            w -= r->weight;
        }
    }
    for (uint32_t j = 0; j < n; j++) {
        eng_round *r = &e->r[e->order[j]];
        if (r->bytes > 0) {
            double mem_rate = r->want_bw / r->bytes * 1e-9;
            if (mem_rate < r->rate)
                r->rate = mem_rate;
        }
        r->end = r->rate > 0 ? e->now + r->left / r->rate : INFINITY;
    }
}

/* ---- events ---- */

static void launch(ds_sim_engine *e, uint32_t bi)
{
    eng_batch *b = &e->b[bi];
    b->launched = true;
    b->undispatched = b->k[b->cur].blocks;
    e->pending[e->n_pending++] = bi;
}

/* Batch bi's current kernel has no blocks left anywhere: on to the next. */
static void kernel_done(ds_sim_engine *e, uint32_t bi)
{
    eng_batch *b = &e->b[bi];
    b->cur++;
    b->launched = false;
    b->timer = b->cur < b->n ? e->now + e->dev.launch_gap_ns : e->now;
}

static void advance_fluid(ds_sim_engine *e, double t)
{
    double dt = t - e->now;
    if (dt <= 0)
        return;
    double held = 0;
    for (uint32_t i = 0; i < e->nr; i++) {
        eng_round *r = &e->r[i];
        if (!r->live)
            continue;
        r->left -= r->rate * dt;
        held += r->sms;
    }
    e->busy += held * dt;
    e->now = t;
}

/* The earliest event: a round end or a batch timer. */
static double next_event(const ds_sim_engine *e)
{
    double t = INFINITY;
    for (uint32_t i = 0; i < e->nr; i++)
        if (e->r[i].live && e->r[i].end < t)
            t = e->r[i].end;
    for (uint32_t i = 0; i < e->nb; i++)
        if (e->b[i].live && !e->b[i].launched && e->b[i].timer < t)
            t = e->b[i].timer;
    return t;
}

/* Process every event at exactly e->now. Returns the number of batches
 * ended (reported through done, in start order). */
static uint32_t process_events(ds_sim_engine *e, ds_sim_engine_done_fn done, void *arg)
{
    for (uint32_t i = 0; i < e->nr; i++) {
        eng_round *r = &e->r[i];
        if (!r->live || r->end > e->now)
            continue;
        r->live = false;
        uint32_t *rs = &e->rslots[(size_t)i * e->n_units];
        eng_batch *b = &e->b[r->batch];
        if (!e->ideal)
            for (uint32_t u = b->first_unit; u < b->first_unit + b->n_units; u++)
                e->unit_free[u] += rs[u];
        b->live_rounds--;
        if (b->live_rounds == 0 && b->undispatched == 0)
            kernel_done(e, r->batch);
    }
    while (e->nr && !e->r[e->nr - 1].live) /* the loops over rounds stop at nr */
        e->nr--;
    /* Batches whose timer is due: launch the kernel, or end the batch; in
     * start order so ties end in start order. */
    uint32_t ended = 0;
    for (;;) {
        uint32_t best = UINT32_MAX;
        for (uint32_t i = 0; i < e->nb; i++) {
            eng_batch *b = &e->b[i];
            if (b->live && !b->launched && b->timer <= e->now &&
                (best == UINT32_MAX || b->seq < e->b[best].seq))
                best = i;
        }
        if (best == UINT32_MAX)
            break;
        eng_batch *b = &e->b[best];
        if (b->cur >= b->n) {
            b->live = false;
            e->running--;
            ended++;
            if (done)
                done(arg, b->user, (uint64_t)ceil(e->now));
        } else if (b->k[b->cur].blocks == 0) {
            kernel_done(e, best);
        } else {
            launch(e, best);
        }
    }
    if (e->ideal)
        dispatch_ideal(e);
    else
        dispatch_normal(e);
    compute_rates(e);
    return ended;
}

/* Run events up to and including time `limit`; stop early after the first
 * batch end when `stop_at_end`. Returns the time of the stop (limit, or the
 * batch end). */
static double run_until(ds_sim_engine *e, double limit, bool stop_at_end,
                        ds_sim_engine_done_fn done, void *arg)
{
    for (;;) {
        double t = next_event(e);
        if (t > limit) {
            advance_fluid(e, limit);
            return limit;
        }
        if (t < e->now)
            t = e->now;
        advance_fluid(e, t);
        e->now = t;
        if (process_events(e, done, arg) && stop_at_end)
            return t;
    }
}

/* ---- API ---- */

dstack_status ds_sim_engine_start(ds_sim_engine *e, uint64_t t_ns, const ds_sim_kernel *k,
                                  uint32_t n, uint32_t first_unit, uint32_t n_units,
                                  double host_bytes, void *user)
{
    if (!e || (n && !k))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "sim engine: NULL argument");
    if (n_units == 0 || first_unit >= e->dev.n_units || n_units > e->dev.n_units - first_unit)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "sim: units [%u, %u) do not fit the %u units of the device", first_unit,
                       first_unit + n_units, e->dev.n_units);
    for (uint32_t i = 0; i < n; i++)
        if (k[i].blocks_per_sm == 0 || DS_SIM_SM_SLOTS % k[i].blocks_per_sm)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                           "sim: kernel %u has %u blocks per SM (must divide %u)", i,
                           k[i].blocks_per_sm, DS_SIM_SM_SLOTS);
    /* The engine's own state stays at `now`: the batch's first event is
     * simply later when t_ns is ahead (nothing of it happens before). */
    double base = (double)t_ns > e->now ? (double)t_ns : e->now;
    uint32_t bi = UINT32_MAX;
    for (uint32_t i = 0; i < e->nb; i++)
        if (!e->b[i].live) {
            bi = i;
            break;
        }
    if (bi == UINT32_MAX) {
        if (!grow_batches(e, e->nb + 1))
            return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim: no memory for a batch");
        bi = e->nb++;
    }
    eng_batch *b = &e->b[bi];
    memset(b, 0, sizeof *b);
    b->live = true;
    b->k = k;
    b->n = n;
    b->first_unit = first_unit;
    /* the range of every unit is the whole device, and a range that ends at
     * the last unit holds the SMs left over too where they join it
     * (util/units.h): the engine's extra unit after the last */
    bool tail = first_unit + n_units == e->dev.n_units && (first_unit == 0 || e->dev.tail_leftover);
    b->n_units = tail ? e->n_units - first_unit : n_units;
    b->seq = e->next_seq++;
    b->user = user;
    b->timer = base + ds_sim_batch_overhead_ns(&e->dev, host_bytes) +
               (n ? e->dev.launch_gap_ns : 0.0);
    e->running++;
    e->spec_valid = false;
    return DSTACK_OK;
}

uint64_t ds_sim_engine_next_end_ns(ds_sim_engine *e)
{
    if (!e || e->running == 0)
        return UINT64_MAX;
    if (e->spec_valid)
        return e->spec_end;
    if (!e->spec) {
        e->spec = calloc(1, sizeof *e->spec);
        if (!e->spec)
            return (uint64_t)ceil(e->now); /* out of memory: poll again soon */
        e->spec->n_units = e->n_units;
        e->spec->unit_free = malloc(e->n_units * sizeof *e->spec->unit_free);
        e->spec->unit_load = malloc(e->n_units * sizeof *e->spec->unit_load);
        e->spec->usms = malloc(e->n_units * sizeof *e->spec->usms);
        if (!e->spec->unit_free || !e->spec->unit_load || !e->spec->usms) {
            free(e->spec->usms);
            free(e->spec->unit_free);
            free(e->spec->unit_load);
            free(e->spec);
            e->spec = NULL;
            return (uint64_t)ceil(e->now);
        }
    }
    if (!engine_clone(e->spec, e))
        return (uint64_t)ceil(e->now);
    double t = run_until(e->spec, INFINITY, true, NULL, NULL);
    e->spec_end = (uint64_t)ceil(t);
    e->spec_valid = true;
    return e->spec_end;
}

typedef struct end_relay {
    ds_sim_engine *e;
    ds_sim_engine_done_fn done;
    void *arg;
} end_relay;

static void relay(void *arg, void *user, uint64_t end_ns)
{
    end_relay *r = arg;
    r->e->spec_valid = false;
    if (r->done)
        r->done(r->arg, user, end_ns);
}

void ds_sim_engine_advance(ds_sim_engine *e, uint64_t t_ns, ds_sim_engine_done_fn done,
                           void *arg)
{
    if (!e || (double)t_ns <= e->now)
        return;
    end_relay r = {e, done, arg};
    run_until(e, (double)t_ns, false, relay, &r);
}

void ds_sim_engine_drain(ds_sim_engine *e, ds_sim_engine_done_fn done, void *arg)
{
    if (!e)
        return;
    end_relay r = {e, done, arg};
    while (e->running) {
        double t = next_event(e);
        if (t == INFINITY)
            break; /* cannot happen: a live batch always has an event */
        run_until(e, t, false, relay, &r);
    }
}

uint32_t ds_sim_engine_running(const ds_sim_engine *e) { return e ? e->running : 0; }
double ds_sim_engine_now_ns(const ds_sim_engine *e) { return e ? e->now : 0; }
double ds_sim_engine_busy_sm_ns(const ds_sim_engine *e) { return e ? e->busy : 0; }
void ds_sim_engine_set_ideal(ds_sim_engine *e, bool ideal)
{
    if (e)
        e->ideal = ideal;
}
