/* core.c - the scheduler's state and decisions; the contract is in core.h. */
#include "sched/core.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/fault.h"
#include "util/rate.h"

typedef enum model_state { MODEL_LIVE, MODEL_REMOVING } model_state;

typedef struct ds_req {
    dstack_ticket ticket;
    void *user_data;
    uint64_t submit_ns;
    uint64_t deadline_ns;
    uint64_t seq;
    uint32_t samples;
    bool dead;     /* completed while queued (expired): skipped at the head */
    bool explicit; /* caller's own deadline: kept in the heap */
} ds_req;

typedef struct model_counters {
    uint64_t submitted, rejected_queue_full;
    uint64_t completed_ok, deadline_missed, cancelled, failed, slo_met;
    uint64_t batches, batched_samples;
    uint64_t unit_ns;
    uint64_t starts, gap_ns_sum, gaps; /* between consecutive batch starts */
    ds_hist latency_us;
} model_counters;


struct dstack_model {
    uint32_t slot;
    uint32_t gen;
    uint64_t id;
    model_state state;
    ds_sched_model_config cfg;
    uint32_t n_io;            /* pointers per request: inputs then outputs */
    uint32_t cap;             /* samples outstanding at most */
    /* queue: ring of requests indexed by sequence number; per slot n_io
     * buffer pointers */
    ds_req *ring;
    void **ring_ptrs;
    uint64_t head_seq, tail_seq; /* [head, tail) in the ring, dead ones included */
    uint32_t live;               /* live requests queued */
    uint32_t live_samples;
    /* Earliest deadline, two ways. Deadlines from the SLO (submit + slo)
     * grow with the sequence number, so the first live such request is the
     * earliest of them: a cursor that only moves forward finds it in O(1)
     * amortized. Requests with their own deadline go to an indexed min-heap
     * of ring slots by (expiry, seq) (hpos[slot] = NO_POS when not in it),
     * which leaves them when batched, expired or cancelled. */
    uint64_t icur;
    uint32_t *heap, *hpos;
    uint32_t hn;
    uint32_t outstanding;        /* samples queued + running + unpolled */
    uint64_t min_run_ns;         /* fastest predicted run: a batch of 1 on the best share */
    /* the one batch of this model that may be running */
    bool running;
    uint32_t batch_reqs_n, batch_samples;
    uint64_t batch_start_ns, batch_end_pred_ns;
    uint32_t batch_first_unit, batch_units;
    ds_req *batch_reqs;
    const void **batch_in;
    void **batch_out;
    uint64_t registered_ns;
    ds_rate_tracker rate;     /* arrival rate of samples (util/rate.h), O(1) at submit */
    ds_policy_mstate ps;
    ds_core_run_tag tag;
    model_counters stats;
};

typedef struct slot_entry {
    dstack_model *m; /* NULL when free */
    uint32_t gen;
} slot_entry;

struct ds_core {
    ds_core_config cfg;
    uint32_t gen_base;            /* where this core's generations start (see ds_core_create) */
    void *policy_state;
    bool stopped;
    /* live and removing models, in order of addition (the policies see them
     * in this order: deterministic) */
    dstack_model **models;
    uint32_t n_models, cap_models;
    dstack_model **live;          /* scratch of ds_core_step */
    ds_sched_model_view *views;
    uint32_t cap_views;
    slot_entry *slots;
    uint32_t n_slots, cap_slots;
    uint32_t *free_slots;
    uint32_t n_free, cap_free;
    uint64_t next_ticket, next_id;
    uint64_t units_busy;
    uint32_t n_running;
    /* the union of the units that running batches hold, integrated over
     * time into totals.unit_busy_ns: batches that share units (streams)
     * count once, so utilization stays within 0..1 */
    uint32_t unit_refs[64];
    uint32_t units_union;
    uint32_t n_whole;             /* running batches that hold every unit: the whole device */
    uint64_t union_since_ns;
    ds_core_totals totals;
};

static void union_account(ds_core *c, uint64_t now)
{
    if (now > c->union_since_ns) {
        c->totals.unit_busy_ns += (uint64_t)c->units_union * (now - c->union_since_ns);
        if (c->n_whole > 0)
            c->totals.whole_busy_ns += now - c->union_since_ns;
        uint32_t last = (c->cfg.n_units < 64 ? c->cfg.n_units : 64) - 1;
        if (c->cfg.n_units > 0 && c->unit_refs[last] > 0)
            c->totals.tail_busy_ns += now - c->union_since_ns;
    }
    c->union_since_ns = now;
}

static void union_add(ds_core *c, uint32_t first, uint32_t count, uint64_t now, bool add)
{
    union_account(c, now);
    if (first == 0 && count >= c->cfg.n_units) /* util/units.h: every unit is the whole device */
        c->n_whole = add ? c->n_whole + 1 : c->n_whole - (c->n_whole > 0);
    for (uint32_t u = first; u < first + count && u < 64; u++) {
        if (add && c->unit_refs[u]++ == 0)
            c->units_union++;
        else if (!add && c->unit_refs[u] > 0 && --c->unit_refs[u] == 0)
            c->units_union--;
    }
}

/* ---- handles ---- */

static dstack_model *handle_of(const dstack_model *m)
{
    return (dstack_model *)(uintptr_t)(((uint64_t)m->gen << 32) | ((uint64_t)m->slot + 1));
}

static dstack_model *resolve(const ds_core *c, const dstack_model *h)
{
    uint64_t v = (uint64_t)(uintptr_t)h;
    uint32_t slot = (uint32_t)(v & 0xffffffffu), gen = (uint32_t)(v >> 32);
    if (slot == 0 || slot > c->n_slots)
        return NULL;
    const slot_entry *e = &c->slots[slot - 1];
    return e->m && e->gen == gen ? e->m : NULL;
}

/* ---- deadlines ---- */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* The latest time the request can still start and meet its deadline. */
static uint64_t expiry_ns(const dstack_model *m, const ds_req *r)
{
    if (r->deadline_ns == 0)
        return UINT64_MAX;
    return r->deadline_ns > m->min_run_ns ? r->deadline_ns - m->min_run_ns : 0;
}

static ds_req *req_at(const dstack_model *m, uint64_t seq, void ***ptrs)
{
    uint32_t slot = (uint32_t)(seq % m->cap);
    if (ptrs)
        *ptrs = &m->ring_ptrs[(size_t)slot * m->n_io];
    return &m->ring[slot];
}

#define NO_POS UINT32_MAX

static bool heap_less(const dstack_model *m, uint32_t sa, uint32_t sb)
{
    const ds_req *a = &m->ring[sa], *b = &m->ring[sb];
    uint64_t ea = expiry_ns(m, a), eb = expiry_ns(m, b);
    return ea != eb ? ea < eb : a->seq < b->seq;
}

static void heap_set(dstack_model *m, uint32_t i, uint32_t slot)
{
    m->heap[i] = slot;
    m->hpos[slot] = i;
}

static void heap_up(dstack_model *m, uint32_t i)
{
    uint32_t slot = m->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!heap_less(m, slot, m->heap[p]))
            break;
        heap_set(m, i, m->heap[p]);
        i = p;
    }
    heap_set(m, i, slot);
}

static void heap_down(dstack_model *m, uint32_t i)
{
    uint32_t slot = m->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= m->hn)
            break;
        if (c + 1 < m->hn && heap_less(m, m->heap[c + 1], m->heap[c]))
            c++;
        if (!heap_less(m, m->heap[c], slot))
            break;
        heap_set(m, i, m->heap[c]);
        i = c;
    }
    heap_set(m, i, slot);
}

static void heap_push(dstack_model *m, uint32_t slot)
{
    m->heap[m->hn] = slot;
    m->hpos[slot] = m->hn;
    m->hn++;
    heap_up(m, m->hn - 1);
}

static void heap_remove(dstack_model *m, uint32_t slot)
{
    uint32_t i = m->hpos[slot];
    if (i == NO_POS)
        return;
    m->hpos[slot] = NO_POS;
    m->hn--;
    if (i == m->hn)
        return;
    uint32_t moved = m->heap[m->hn];
    heap_set(m, i, moved);
    heap_up(m, i);
    heap_down(m, m->hpos[moved]);
}

static void heap_clear(dstack_model *m)
{
    for (uint32_t i = 0; i < m->hn; i++)
        m->hpos[m->heap[i]] = NO_POS;
    m->hn = 0;
}

static uint32_t slot_of(const dstack_model *m, uint64_t seq) { return (uint32_t)(seq % m->cap); }

/* The first live request whose deadline comes from the SLO, or NULL. */
static ds_req *first_implicit(dstack_model *m)
{
    if (m->icur < m->head_seq)
        m->icur = m->head_seq;
    while (m->icur < m->tail_seq) {
        ds_req *r = &m->ring[slot_of(m, m->icur)];
        if (!r->dead && !r->explicit && r->deadline_ns)
            return r;
        m->icur++;
    }
    return NULL;
}

/* The queued request that expires first, or NULL. */
static ds_req *earliest(dstack_model *m)
{
    ds_req *a = first_implicit(m), *b = m->hn ? &m->ring[m->heap[0]] : NULL;
    if (!a || !b)
        return a ? a : b;
    return expiry_ns(m, b) < expiry_ns(m, a) ? b : a;
}

static uint64_t earliest_expiry(dstack_model *m)
{
    ds_req *r = earliest(m);
    return r ? expiry_ns(m, r) : UINT64_MAX;
}

static uint64_t earliest_deadline(dstack_model *m)
{
    ds_req *r = earliest(m);
    return r ? r->deadline_ns : 0;
}

/* ---- completions ---- */

static void count_completion(dstack_model *m, const dstack_completion *c)
{
    model_counters *st = &m->stats;
    switch (c->status) {
    case DSTACK_OK:
        st->completed_ok++;
        ds_hist_record(&st->latency_us, (c->end_ns - c->submit_ns) / 1000u);
        if (c->deadline_ns == 0 || c->end_ns <= c->deadline_ns)
            st->slo_met++;
        break;
    case DSTACK_ERR_DEADLINE_MISSED: st->deadline_missed++; break;
    case DSTACK_ERR_CANCELLED: st->cancelled++; break;
    default: st->failed++; break;
    }
}

static void complete(ds_core *c, dstack_model *m, const ds_req *r, dstack_status status, uint32_t batch,
                     uint64_t start_ns, uint64_t end_ns)
{
    dstack_completion out;
    memset(&out, 0, sizeof out);
    out.ticket = r->ticket;
    out.user_data = r->user_data;
    out.model = handle_of(m);
    out.status = status;
    out.batch_size = batch;
    out.submit_ns = r->submit_ns;
    out.start_ns = start_ns;
    out.end_ns = end_ns;
    out.deadline_ns = r->deadline_ns;
    count_completion(m, &out);
    c->cfg.emit(c->cfg.emit_arg, &out, r->samples);
}

/* ---- queues ---- */

/* Pop the head (live or dead) and skip dead ones after it. */
static void queue_pop(dstack_model *m)
{
    m->head_seq++;
    while (m->head_seq < m->tail_seq && req_at(m, m->head_seq, NULL)->dead)
        m->head_seq++;
}

static void cancel_queue(ds_core *c, dstack_model *m, uint64_t now)
{
    for (uint64_t seq = m->head_seq; seq < m->tail_seq; seq++) {
        ds_req *r = req_at(m, seq, NULL);
        if (!r->dead)
            complete(c, m, r, DSTACK_ERR_CANCELLED, 0, 0, now);
    }
    m->head_seq = m->tail_seq;
    m->live = m->live_samples = 0;
    heap_clear(m);
}

/* Complete as DEADLINE_MISSED every queued request that can no longer meet
 * its deadline. O(1) per expired request. */
static void expire(ds_core *c, dstack_model *m, uint64_t now)
{
    while (earliest_expiry(m) < now) {
        ds_req *r = earliest(m);
        heap_remove(m, slot_of(m, r->seq)); /* no-op for an SLO deadline */
        complete(c, m, r, DSTACK_ERR_DEADLINE_MISSED, 0, 0, now);
        r->dead = true;
        m->live--;
        m->live_samples -= r->samples;
        if (r->seq == m->head_seq)
            queue_pop(m);
    }
}

/* ---- models ---- */

static void model_free(dstack_model *m)
{
    if (!m)
        return;
    free(m->ring);
    free(m->ring_ptrs);
    free(m->heap);
    free(m->hpos);
    free(m->batch_reqs);
    free(m->batch_in);
    free(m->batch_out);
    free(m);
}

/* The fastest a batch of one can run on up to `top` units, the most the
 * policy may grant the model: a request expires only when even that run
 * would miss its deadline. Every policy but static_spatial may give a
 * model the whole device (temporal and streams always, dstack spare
 * units); static_spatial its home partition (policy.h max_units,
 * refresh_max_units below). 0 without a latency model. */
static uint64_t fastest_run_ns(const ds_sched_model_config *cfg, uint32_t top)
{
    uint64_t best = 0;
    if (!cfg->latency)
        return 0;
    for (uint32_t u = 1; u <= top && u <= 64; u++) {
        uint64_t l = cfg->latency(cfg->latency_arg, 1, u);
        if (l > 0 && (best == 0 || l < best))
            best = l;
    }
    return best;
}

/* Under a policy that keeps models to home partitions (static_spatial),
 * the fastest run of every live model is on its home partition, whose size
 * depends on all the live models: recomputed whenever one comes, goes or
 * is re-planned. Such a policy has at most one live model per unit. */
static void refresh_max_units(ds_core *c)
{
    if (!c->cfg.policy->max_units)
        return;
    uint32_t knees[DS_CORE_MAX_UNITS] = {0}, top[DS_CORE_MAX_UNITS] = {0};
    dstack_model *live[DS_CORE_MAX_UNITS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_models && n < DS_CORE_MAX_UNITS; i++)
        if (c->models[i]->state == MODEL_LIVE) {
            live[n] = c->models[i];
            knees[n++] = c->models[i]->cfg.unit_count;
        }
    c->cfg.policy->max_units(knees, n, c->cfg.n_units, top);
    for (uint32_t i = 0; i < n; i++)
        live[i]->min_run_ns = fastest_run_ns(&live[i]->cfg, top[i] ? top[i] : 1);
}

static dstack_model *model_alloc(const ds_sched_model_config *cfg, uint32_t cap, uint32_t n_units)
{
    dstack_model *m = ds_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->cfg = *cfg;
    m->n_io = cfg->n_inputs + cfg->n_outputs;
    m->cap = cap;
    m->ring = ds_calloc(cap, sizeof *m->ring);
    m->ring_ptrs = ds_calloc((size_t)cap * m->n_io, sizeof *m->ring_ptrs);
    m->heap = ds_calloc(cap, sizeof *m->heap);
    m->hpos = ds_malloc((size_t)cap * sizeof *m->hpos);
    m->batch_reqs = ds_calloc(cfg->max_batch, sizeof *m->batch_reqs);
    m->batch_in = ds_calloc((size_t)cfg->max_batch * cfg->n_inputs, sizeof *m->batch_in);
    m->batch_out = ds_calloc((size_t)cfg->max_batch * cfg->n_outputs, sizeof *m->batch_out);
    if (!m->ring || !m->ring_ptrs || !m->heap || !m->hpos || !m->batch_reqs || !m->batch_in || !m->batch_out) {
        model_free(m);
        return NULL;
    }
    for (uint32_t i = 0; i < cap; i++)
        m->hpos[i] = NO_POS;
    m->min_run_ns = fastest_run_ns(cfg, n_units);
    return m;
}

static dstack_status grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return DSTACK_OK;
    uint32_t n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    void *q = ds_realloc(*p, (size_t)n * elem);
    if (!q)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the scheduler's model table");
    *p = q;
    *cap = n;
    return DSTACK_OK;
}

uint32_t ds_core_units_of(const ds_device_info *dev)
{
    uint32_t units = dev->n_units < DS_CORE_MAX_UNITS ? dev->n_units : DS_CORE_MAX_UNITS;
    return units ? units : 1;
}

dstack_status ds_core_create(const ds_core_config *cfg, ds_core **out)
{
    if (!cfg->policy || !cfg->emit || cfg->n_units == 0 || cfg->n_units > DS_CORE_MAX_UNITS)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "scheduler: bad core configuration");
    ds_core *c = ds_calloc(1, sizeof *c);
    if (!c)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the scheduler");
    c->cfg = *cfg;
    /* Handles are slot + generation. Every core starting its generations
     * at 0 made the first model of any two contexts the same handle, so
     * one context's handle named another's model (found by a new user:
     * unregister on the wrong context returned OK). Each core starts at
     * its own point of the 32-bit circle, golden-ratio spaced, so handles
     * of different contexts differ unless a slot is reused about 2^32 /
     * contexts^2 times (a million with 60 contexts). */
    static atomic_uint next_core;
    c->gen_base = (uint32_t)atomic_fetch_add(&next_core, 1u) * 0x9E3779B1u;
    if (cfg->policy->create && !(c->policy_state = cfg->policy->create())) {
        free(c);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the %s policy", cfg->policy->name);
    }
    *out = c;
    return DSTACK_OK;
}

void ds_core_destroy(ds_core *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->n_models; i++)
        model_free(c->models[i]);
    if (c->cfg.policy->destroy)
        c->cfg.policy->destroy(c->policy_state);
    free(c->models);
    free(c->live);
    free(c->views);
    free(c->slots);
    free(c->free_slots);
    free(c);
}

dstack_status ds_core_add_model(ds_core *c, const ds_sched_model_config *cfg, uint32_t capacity,
                                uint64_t now, dstack_model **out)
{
    if (cfg->max_batch == 0 || cfg->batch_size == 0 || cfg->batch_size > cfg->max_batch ||
        cfg->n_inputs == 0 || cfg->n_outputs == 0 || cfg->n_inputs > DSTACK_MAX_IO ||
        cfg->n_outputs > DSTACK_MAX_IO || capacity == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "scheduler: bad model configuration");
    if (c->stopped)
        return ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shutting down");
    if (c->cfg.policy->id == DSTACK_POLICY_STATIC_SPATIAL) {
        /* fixed disjoint partitions and no time sharing: a model beyond one
         * per unit would never run, so it is refused, not queued forever */
        uint32_t live = 0;
        for (uint32_t i = 0; i < c->n_models; i++)
            live += c->models[i]->state == MODEL_LIVE;
        if (live >= c->cfg.n_units)
            return ds_fail(DSTACK_ERR_RESOURCE_LIMIT,
                           "policy static_spatial gives every model a partition of its own and never "
                           "time-shares: the %u model%s registered already hold%s all %u partition "
                           "unit%s of the device (unregister one, or use policy dstack or temporal)",
                           live, live == 1 ? "" : "s", live == 1 ? "s" : "", c->cfg.n_units,
                           c->cfg.n_units == 1 ? "" : "s");
    }
    uint32_t cap_live = c->cap_views;
    dstack_status st = grow((void **)&c->models, &c->cap_models, c->n_models + 1, sizeof *c->models);
    if (st == DSTACK_OK)
        st = grow((void **)&c->live, &cap_live, c->n_models + 1, sizeof *c->live);
    if (st == DSTACK_OK && cap_live != c->cap_views)
        st = grow((void **)&c->views, &c->cap_views, cap_live, sizeof *c->views);
    if (st == DSTACK_OK && c->n_free == 0) {
        /* a new slot needs room in both tables; each keeps its own capacity
         * so a failure between the two leaves them consistent */
        st = grow((void **)&c->slots, &c->cap_slots, c->n_slots + 1, sizeof *c->slots);
        if (st == DSTACK_OK)
            st = grow((void **)&c->free_slots, &c->cap_free, c->n_slots + 1, sizeof *c->free_slots);
    }
    if (st != DSTACK_OK)
        return st;
    dstack_model *m = model_alloc(cfg, capacity, c->cfg.n_units);
    if (!m)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for a queue of %u requests", capacity);
    if (c->n_free > 0) {
        m->slot = c->free_slots[--c->n_free];
    } else {
        m->slot = c->n_slots++;
        c->slots[m->slot].gen = c->gen_base;
    }
    m->gen = ++c->slots[m->slot].gen;
    c->slots[m->slot].m = m;
    m->id = ++c->next_id;
    m->registered_ns = now;
    ds_rate_init(&m->rate, now, 0, 0);
    c->models[c->n_models++] = m;
    refresh_max_units(c);
    *out = handle_of(m);
    return DSTACK_OK;
}

static dstack_status not_live(const dstack_model *m)
{
    if (m && m->state == MODEL_REMOVING)
        return ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the model is being unregistered");
    return ds_fail(DSTACK_ERR_NOT_FOUND, "not a registered model of this context");
}

dstack_status ds_core_remove_model(ds_core *c, dstack_model *h, uint64_t now, bool *running)
{
    dstack_model *m = resolve(c, h);
    if (!m || m->state != MODEL_LIVE)
        return not_live(m);
    m->state = MODEL_REMOVING;
    cancel_queue(c, m, now);
    refresh_max_units(c);
    *running = m->running;
    return DSTACK_OK;
}

void *ds_core_free_model(ds_core *c, dstack_model *h)
{
    dstack_model *m = resolve(c, h);
    if (!m || m->state != MODEL_REMOVING || m->running)
        return NULL;
    void *owner = m->cfg.owner;
    for (uint32_t i = 0; i < c->n_models; i++) {
        if (c->models[i] == m) {
            memmove(&c->models[i], &c->models[i + 1], (c->n_models - i - 1) * sizeof *c->models);
            c->n_models--;
            break;
        }
    }
    c->slots[m->slot].m = NULL;
    c->free_slots[c->n_free++] = m->slot;
    model_free(m);
    return owner;
}

ds_core_run_tag *ds_core_run_tag_of(ds_core *c, dstack_model *h)
{
    dstack_model *m = resolve(c, h);
    if (!m)
        return NULL;
    m->tag.model = h;
    return &m->tag;
}

bool ds_core_model_running(const ds_core *c, const dstack_model *h)
{
    const dstack_model *m = resolve(c, h);
    return m && m->running;
}

dstack_model *ds_core_any_model(const ds_core *c)
{
    for (uint32_t i = 0; i < c->n_models; i++)
        if (c->models[i]->state == MODEL_LIVE)
            return handle_of(c->models[i]);
    return NULL;
}

uint32_t ds_core_model_count(const ds_core *c)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_models; i++)
        n += c->models[i]->state == MODEL_LIVE;
    return n;
}

dstack_status ds_core_model_owner(const ds_core *c, const dstack_model *h, void **owner)
{
    const dstack_model *m = resolve(c, h);
    if (!m || m->state != MODEL_LIVE)
        return not_live(m);
    *owner = m->cfg.owner;
    return DSTACK_OK;
}

dstack_status ds_core_model_update(ds_core *c, dstack_model *h, uint32_t batch_size, uint32_t unit_count)
{
    dstack_model *m = resolve(c, h);
    if (!m || m->state != MODEL_LIVE)
        return not_live(m);
    if (batch_size == 0 || batch_size > m->cfg.max_batch || unit_count == 0 || unit_count > c->cfg.n_units)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "batch %u or units %u out of range", batch_size, unit_count);
    m->cfg.batch_size = batch_size;
    m->cfg.unit_count = unit_count;
    refresh_max_units(c);
    return DSTACK_OK;
}

double ds_core_model_rate(const ds_core *c, const dstack_model *h, uint64_t now)
{
    const dstack_model *m = resolve(c, h);
    return m ? ds_rate_per_s(&m->rate, now) : 0.0;
}

/* ---- requests ---- */

static dstack_status check_request(const dstack_model *m, const dstack_request *req, uint32_t samples)
{
    const ds_sched_model_config *c = &m->cfg;
    if (req->n_inputs != c->n_inputs || req->n_outputs != c->n_outputs)
        return ds_fail(DSTACK_ERR_SIZE_MISMATCH, "the model takes %u inputs and %u outputs, got %u and %u",
                       c->n_inputs, c->n_outputs, req->n_inputs, req->n_outputs);
    if (!req->inputs || !req->outputs)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "request inputs or outputs array is NULL");
    if (samples > c->max_batch)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "request has %u samples, the model's max_batch is %u",
                       samples, c->max_batch);
    if (samples > m->cap) /* QUEUE_FULL says "retry later": this one never fits */
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "request has %u samples, more than the model's queue ever holds (%u samples: "
                       "options.queue_capacity)", samples, m->cap);
    for (uint32_t j = 0; j < c->n_inputs; j++) {
        if (!req->inputs[j].data)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "input %u data is NULL", j);
        if (req->inputs[j].bytes != c->input_bytes[j] * samples)
            return ds_fail(DSTACK_ERR_SIZE_MISMATCH, "input %u expects %zu bytes (%u x %zu), got %zu", j,
                           c->input_bytes[j] * samples, samples, c->input_bytes[j], req->inputs[j].bytes);
    }
    for (uint32_t j = 0; j < c->n_outputs; j++) {
        if (!req->outputs[j].data)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "output %u data is NULL", j);
        if (req->outputs[j].bytes != c->output_bytes[j] * samples)
            return ds_fail(DSTACK_ERR_SIZE_MISMATCH, "output %u expects %zu bytes (%u x %zu), got %zu", j,
                           c->output_bytes[j] * samples, samples, c->output_bytes[j], req->outputs[j].bytes);
    }
    return DSTACK_OK;
}

/* The ring is full of live requests and dead ones that expired behind a
 * head without a deadline: move the live ones together (FIFO order kept)
 * and rebuild the deadline heap. Rare: only when deadline-less and
 * deadlined requests share a model and the queue is near capacity. */
static void compact(dstack_model *m)
{
    uint64_t w = m->head_seq;
    for (uint64_t seq = m->head_seq; seq < m->tail_seq; seq++) {
        void **src_ptrs, **dst_ptrs;
        ds_req *r = req_at(m, seq, &src_ptrs);
        if (r->dead)
            continue;
        if (w != seq) {
            ds_req *d = req_at(m, w, &dst_ptrs);
            *d = *r;
            d->seq = w;
            memcpy(dst_ptrs, src_ptrs, m->n_io * sizeof *dst_ptrs);
        }
        w++;
    }
    m->tail_seq = w;
    heap_clear(m);
    m->icur = m->head_seq;
    for (uint64_t seq = m->head_seq; seq < m->tail_seq; seq++)
        if (req_at(m, seq, NULL)->explicit)
            heap_push(m, slot_of(m, seq));
}

static uint32_t request_samples(const dstack_request *req)
{
    if (req->struct_size < offsetof(dstack_request, n_samples) + sizeof req->n_samples)
        return 1;
    return req->n_samples ? req->n_samples : 1;
}

dstack_status ds_core_submit(ds_core *c, dstack_model *h, const dstack_request *req, uint64_t now,
                             dstack_ticket *ticket)
{
    if (c->stopped)
        return ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shutting down");
    dstack_model *m = resolve(c, h);
    if (!m || m->state != MODEL_LIVE)
        return not_live(m);
    uint32_t samples = request_samples(req);
    dstack_status st = check_request(m, req, samples);
    if (st != DSTACK_OK)
        return st;
    if (samples > m->cap - (m->outstanding < m->cap ? m->outstanding : m->cap)) {
        m->stats.rejected_queue_full++;
        return ds_fail(DSTACK_ERR_QUEUE_FULL,
                       "%u samples outstanding of %u (queued, running or not yet polled), %u more asked",
                       m->outstanding, m->cap, samples);
    }
    if (m->tail_seq - m->head_seq == m->cap)
        compact(m);
    uint64_t seq = m->tail_seq++;
    void **ptrs;
    ds_req *r = req_at(m, seq, &ptrs);
    r->ticket = ++c->next_ticket;
    r->user_data = req->user_data;
    r->submit_ns = now;
    r->deadline_ns = req->deadline_ns ? req->deadline_ns : (m->cfg.slo_ns ? sat_add(now, m->cfg.slo_ns) : 0);
    r->samples = samples;
    r->seq = seq;
    r->dead = false;
    r->explicit = req->deadline_ns != 0;
    for (uint32_t j = 0; j < m->cfg.n_inputs; j++)
        ptrs[j] = req->inputs[j].data;
    for (uint32_t j = 0; j < m->cfg.n_outputs; j++)
        ptrs[m->cfg.n_inputs + j] = req->outputs[j].data;
    if (r->explicit)
        heap_push(m, slot_of(m, seq));
    m->live++;
    m->live_samples += samples;
    m->outstanding += samples;
    m->stats.submitted++;
    ds_rate_arrival(&m->rate, now, samples);
    *ticket = r->ticket;
    return DSTACK_OK;
}

void ds_core_batch_done(ds_core *c, dstack_model *h, dstack_status status, uint64_t now)
{
    dstack_model *m = resolve(c, h);
    if (!m || !m->running)
        return;
    for (uint32_t i = 0; i < m->batch_reqs_n; i++)
        complete(c, m, &m->batch_reqs[i], status, m->batch_samples, m->batch_start_ns, now);
    uint64_t unit_ns = (now - m->batch_start_ns) * m->batch_units;
    m->stats.batches++;
    m->stats.batched_samples += m->batch_samples;
    m->stats.unit_ns += unit_ns;
    union_add(c, m->batch_first_unit, m->batch_units, now, false);
    c->totals.batches++;
    c->totals.samples_run += m->batch_samples;
    m->running = false;
    m->batch_reqs_n = m->batch_samples = 0;
    if (!c->cfg.policy->shares_units)
        c->units_busy &= ~ds_unit_mask(m->batch_first_unit, m->batch_units);
    c->n_running--;
}

void ds_core_polled(ds_core *c, dstack_model *h, uint32_t samples)
{
    dstack_model *m = resolve(c, h);
    if (m)
        m->outstanding -= samples < m->outstanding ? samples : m->outstanding;
}

void ds_core_shutdown(ds_core *c, uint64_t now)
{
    if (c->stopped)
        return;
    c->stopped = true;
    for (uint32_t i = 0; i < c->n_models; i++)
        cancel_queue(c, c->models[i], now);
}

bool ds_core_is_shut_down(const ds_core *c) { return c->stopped; }

/* ---- decisions ---- */

static void fill_view(dstack_model *m, ds_sched_model_view *v, uint64_t now)
{
    memset(v, 0, sizeof *v);
    v->id = m->id;
    v->queued = m->live;
    v->queued_samples = m->live_samples;
    if (m->live) {
        const ds_req *r = req_at(m, m->head_seq, NULL);
        v->oldest_submit_ns = r->submit_ns;
        v->head_samples = r->samples;
    }
    v->oldest_deadline_ns = earliest_deadline(m);
    v->batch_size = m->cfg.batch_size;
    v->max_batch = m->cfg.max_batch;
    v->unit_count = m->cfg.unit_count;
    v->slo_ns = m->cfg.slo_ns;
    v->running = m->running;
    v->running_first = m->batch_first_unit;
    v->running_count = m->running ? m->batch_units : 0;
    v->running_end_ns = m->running ? m->batch_end_pred_ns : 0;
    v->arrival_rps = ds_rate_per_s(&m->rate, now);
    v->latency = m->cfg.latency;
    v->latency_arg = m->cfg.latency_arg;
    v->ps = &m->ps;
}

static bool decision_ok(const ds_core *c, const ds_sched_decision *d, uint32_t n_live)
{
    if (d->model >= n_live)
        return false;
    const ds_sched_model_view *v = &c->views[d->model];
    if (v->queued == 0 || v->running || d->batch == 0 || d->unit_count == 0 ||
        d->unit_count > c->cfg.n_units || d->first_unit > c->cfg.n_units - d->unit_count)
        return false;
    return c->cfg.policy->shares_units || !(c->units_busy & ds_unit_mask(d->first_unit, d->unit_count));
}

/* Take whole requests from the head up to d->batch samples (at least one
 * request) into the model's batch; returns false if nothing was taken. */
static bool form_batch(ds_core *c, dstack_model *m, const ds_sched_decision *d, uint64_t now,
                       ds_core_start *s)
{
    uint32_t n = 0, samples = 0, nin = m->cfg.n_inputs, nout = m->cfg.n_outputs;
    uint32_t want = d->batch < m->cfg.max_batch ? d->batch : m->cfg.max_batch;
    while (m->live > 0) {
        void **ptrs;
        ds_req *r = req_at(m, m->head_seq, &ptrs);
        if (n > 0 && samples + r->samples > want)
            break;
        for (uint32_t k = 0; k < r->samples; k++) {
            uint32_t at = samples + k;
            for (uint32_t j = 0; j < nin; j++)
                m->batch_in[at * nin + j] = (const char *)ptrs[j] + k * m->cfg.input_bytes[j];
            for (uint32_t j = 0; j < nout; j++)
                m->batch_out[at * nout + j] = (char *)ptrs[nin + j] + k * m->cfg.output_bytes[j];
        }
        heap_remove(m, slot_of(m, m->head_seq));
        m->batch_reqs[n++] = *r;
        samples += r->samples;
        m->live--;
        m->live_samples -= r->samples;
        queue_pop(m);
    }
    if (n == 0)
        return false;
    m->running = true;
    m->batch_reqs_n = n;
    m->batch_samples = samples;
    m->batch_start_ns = now;
    uint64_t pred = m->cfg.latency ? m->cfg.latency(m->cfg.latency_arg, samples, d->unit_count) : 0;
    m->batch_end_pred_ns = pred ? now + pred : 0;
    m->batch_first_unit = d->first_unit;
    m->batch_units = d->unit_count;
    if (!c->cfg.policy->shares_units)
        c->units_busy |= ds_unit_mask(d->first_unit, d->unit_count);
    union_add(c, d->first_unit, d->unit_count, now, true);
    c->n_running++;
    c->totals.decisions++;
    if (m->stats.starts++ > 0) {
        m->stats.gap_ns_sum += now - m->ps.last_start_ns;
        m->stats.gaps++;
    }
    m->ps.last_start_ns = now;
    s->model = handle_of(m);
    s->plan = m->cfg.plan;
    s->batch.batch = samples;
    s->batch.inputs = (const void *const *)m->batch_in;
    s->batch.outputs = (void *const *)m->batch_out;
    s->first_unit = d->first_unit;
    s->unit_count = d->unit_count;
    return true;
}

size_t ds_core_step(ds_core *c, uint64_t now, ds_core_start *out, size_t max, uint64_t *wake_ns)
{
    *wake_ns = UINT64_MAX;
    if (c->stopped)
        return 0;
    /* live models first, in order; removing ones are invisible to policies */
    dstack_model **live = c->live;
    uint32_t n_live = 0;
    for (uint32_t i = 0; i < c->n_models; i++) {
        dstack_model *m = c->models[i];
        if (m->state != MODEL_LIVE)
            continue;
        expire(c, m, now);
        live[n_live++] = m;
    }
    size_t n = 0;
    uint64_t policy_wake = 0;
    while (n < max) {
        for (uint32_t i = 0; i < n_live; i++)
            fill_view(live[i], &c->views[i], now);
        ds_sched_view view = {now, n_live, c->views, c->cfg.n_units, c->units_busy, c->n_running};
        ds_sched_decision d;
        policy_wake = 0;
        if (!c->cfg.policy->pick(c->policy_state, &view, &d, &policy_wake))
            break;
        /* A policy bug must not corrupt the request path: check its answer. */
        if (!decision_ok(c, &d, n_live) || !form_batch(c, live[d.model], &d, now, &out[n]))
            break;
        n++;
    }
    uint64_t wake = policy_wake > now ? policy_wake : (policy_wake ? now + 1 : UINT64_MAX);
    for (uint32_t i = 0; i < n_live; i++) {
        uint64_t e = earliest_expiry(live[i]);
        if (e != UINT64_MAX && e + 1 < wake)
            wake = e + 1;
    }
    *wake_ns = wake;
    return n;
}

/* ---- statistics ---- */

dstack_status ds_core_stats(const ds_core *c, const dstack_model *h, uint64_t now, dstack_model_stats *o)
{
    const dstack_model *m = resolve(c, h);
    if (!m)
        return not_live(NULL);
    const model_counters *k = &m->stats;
    double secs = (double)(now - m->registered_ns) / 1e9;
    uint64_t judged = k->completed_ok + k->deadline_missed + k->failed;
    o->submitted = k->submitted;
    o->rejected_queue_full = k->rejected_queue_full;
    o->completed_ok = k->completed_ok;
    o->deadline_missed = k->deadline_missed;
    o->cancelled = k->cancelled;
    o->failed = k->failed;
    o->slo_met = k->slo_met;
    o->batches = k->batches;
    o->mean_batch = k->batches ? (double)k->batched_samples / (double)k->batches : 0.0;
    o->throughput_rps = secs > 0 ? (double)k->completed_ok / secs : 0.0;
    o->slo_attainment = judged ? (double)k->slo_met / (double)judged : 1.0;
    o->latency_p50_us = ds_hist_quantile(&k->latency_us, 0.50);
    o->latency_p99_us = ds_hist_quantile(&k->latency_us, 0.99);
    o->latency_max_us = k->latency_us.max;
    o->queued = m->live;
    o->batch_size = m->cfg.batch_size;
    o->arrival_rps = ds_rate_per_s(&m->rate, now);
    double dev_ns = (double)(now - m->registered_ns) * c->cfg.n_units;
    o->gpu_share = dev_ns > 0 ? (double)k->unit_ns / dev_ns : 0.0;
    return DSTACK_OK;
}

void ds_core_totals_get(const ds_core *c, ds_core_totals *out)
{
    *out = c->totals;
    out->running = c->n_running;
    out->units_in_use = c->units_union; /* batches sharing units count them once */
    out->cycle_ns = 0;
    for (uint32_t i = 0; i < c->n_models; i++) {
        const model_counters *k = &c->models[i]->stats;
        if (k->gaps && k->gap_ns_sum / k->gaps > out->cycle_ns)
            out->cycle_ns = k->gap_ns_sum / k->gaps;
    }
}

uint32_t ds_core_model_units(const ds_core *c, const dstack_model *h)
{
    const dstack_model *m = resolve(c, h);
    return m ? m->cfg.unit_count : 0;
}

uint64_t ds_core_model_unit_ns(const ds_core *c, const dstack_model *h)
{
    const dstack_model *m = resolve(c, h);
    return m ? m->stats.unit_ns : 0;
}
