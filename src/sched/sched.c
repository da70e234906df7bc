/* sched.c - the request path: queues, the worker, completions, stats.
 * The contract is in sched.h; the choice of what runs next is policy.c's. */
#include "sched/sched.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/error.h"
#include "util/hist.h"

#define MAX_UNITS 64 /* units_busy is one 64-bit mask */

typedef enum model_state { MODEL_LIVE, MODEL_REMOVING, MODEL_REMOVED } model_state;

typedef struct ds_req {
    dstack_ticket ticket;
    void *user_data;
    uint64_t submit_ns;
    uint64_t deadline_ns;
} ds_req;

typedef struct model_counters {
    uint64_t submitted, rejected_queue_full;
    uint64_t completed_ok, deadline_missed, cancelled, failed, slo_met;
    uint64_t batches, batched_requests;
    ds_hist latency_us;
} model_counters;

struct dstack_model {
    ds_sched *sched;
    model_state state;
    ds_sched_model_config cfg;
    uint32_t n_io; /* pointers per request: inputs then outputs */
    /* queue: a ring of requests and, per slot, its n_io buffer pointers */
    ds_req *ring;
    void **ring_ptrs;
    uint32_t head, count, cap;
    uint32_t outstanding; /* queued + running + completed, not yet polled */
    /* the one batch of this model that may be running */
    bool running;
    uint32_t batch_n;
    uint64_t batch_start_ns;
    uint32_t batch_first_unit, batch_units;
    ds_req *batch_reqs;
    const void **batch_in;
    void **batch_out;
    uint64_t registered_ns;
    model_counters stats;
};

struct ds_sched {
    ds_sched_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t work_cv; /* worker: a submit, a finished batch, shutdown */
    pthread_cond_t done_cv; /* pollers: a completion, shutdown */
    pthread_cond_t idle_cv; /* remove/shutdown: a batch finished, worker joined */
    pthread_t worker;
    bool stopping, joining, joined;
    dstack_model **models; /* every model ever added; removed ones stay as shells */
    uint32_t n_models, cap_models;
    ds_sched_model_view *views;
    dstack_completion *cq; /* ring */
    size_t cq_head, cq_count, cq_cap;
    uint64_t next_ticket;
    uint32_t n_units;
    uint64_t units_busy;
    uint32_t n_running;
};

uint64_t ds_sched_now_ns(const ds_sched *s) { return ds_clock_now_ns(s->cfg.clock); }

/* ---- completions (called with the lock held) ---- */

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

/* Room is reserved at add_model (see reserve_completions), so this never
 * allocates and never fails: a request cannot be lost here. */
static void complete(ds_sched *s, dstack_model *m, const ds_req *r, dstack_status status,
                     uint32_t batch, uint64_t start_ns, uint64_t end_ns)
{
    dstack_completion *c = &s->cq[(s->cq_head + s->cq_count) % s->cq_cap];
    c->ticket = r->ticket;
    c->user_data = r->user_data;
    c->model = m;
    c->status = status;
    c->batch_size = batch;
    c->submit_ns = r->submit_ns;
    c->start_ns = start_ns;
    c->end_ns = end_ns;
    c->deadline_ns = r->deadline_ns;
    s->cq_count++;
    count_completion(m, c);
    pthread_cond_signal(&s->done_cv);
}

/* Completions can never outnumber the outstanding requests, which are
 * bounded by each model's capacity: reserve that much up front. */
static dstack_status reserve_completions(ds_sched *s, uint32_t extra)
{
    size_t need = extra;
    for (uint32_t i = 0; i < s->n_models; i++) {
        dstack_model *m = s->models[i];
        need += m->state == MODEL_REMOVED ? m->outstanding : m->cap;
    }
    if (need <= s->cq_cap)
        return DSTACK_OK;
    dstack_completion *cq = malloc(need * sizeof *cq);
    if (!cq)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for %zu completion slots", need);
    for (size_t i = 0; i < s->cq_count; i++)
        cq[i] = s->cq[(s->cq_head + i) % s->cq_cap];
    free(s->cq);
    s->cq = cq;
    s->cq_head = 0;
    s->cq_cap = need;
    return DSTACK_OK;
}

/* ---- queues (lock held) ---- */

static ds_req *queue_slot(dstack_model *m, uint32_t i, void ***ptrs)
{
    uint32_t slot = (m->head + i) % m->cap;
    *ptrs = &m->ring_ptrs[(size_t)slot * m->n_io];
    return &m->ring[slot];
}

static void queue_pop(dstack_model *m)
{
    m->head = (m->head + 1) % m->cap;
    m->count--;
}

static void cancel_queue(ds_sched *s, dstack_model *m)
{
    uint64_t now = ds_sched_now_ns(s);
    while (m->count > 0) {
        void **ptrs;
        ds_req r = *queue_slot(m, 0, &ptrs);
        queue_pop(m);
        complete(s, m, &r, DSTACK_ERR_CANCELLED, 0, 0, now);
    }
}

/* Requests at the head whose deadline has passed will not be run. */
static void expire_heads(ds_sched *s, dstack_model *m, uint64_t now)
{
    while (m->count > 0) {
        void **ptrs;
        ds_req *r = queue_slot(m, 0, &ptrs);
        if (r->deadline_ns == 0 || now <= r->deadline_ns)
            return;
        ds_req copy = *r;
        queue_pop(m);
        complete(s, m, &copy, DSTACK_ERR_DEADLINE_MISSED, 0, 0, now);
    }
}

/* ---- the worker ---- */

static uint64_t unit_mask(uint32_t first, uint32_t count)
{
    uint64_t ones = count >= 64 ? ~0ull : ((1ull << count) - 1);
    return ones << first;
}

static void finish_batch(ds_sched *s, dstack_model *m, dstack_status status)
{
    uint64_t now = ds_sched_now_ns(s);
    for (uint32_t i = 0; i < m->batch_n; i++)
        complete(s, m, &m->batch_reqs[i], status, m->batch_n, m->batch_start_ns, now);
    m->stats.batches++;
    m->stats.batched_requests += m->batch_n;
    m->running = false;
    m->batch_n = 0;
    s->units_busy &= ~unit_mask(m->batch_first_unit, m->batch_units);
    s->n_running--;
    pthread_cond_signal(&s->work_cv);
    pthread_cond_broadcast(&s->idle_cv);
}

static void batch_done(void *arg, dstack_status status)
{
    dstack_model *m = arg;
    ds_sched *s = m->sched;
    pthread_mutex_lock(&s->lock);
    finish_batch(s, m, status);
    pthread_mutex_unlock(&s->lock);
}

static bool pick(ds_sched *s, ds_sched_decision *d)
{
    uint64_t now = ds_sched_now_ns(s);
    for (uint32_t i = 0; i < s->n_models; i++) {
        dstack_model *m = s->models[i];
        ds_sched_model_view *v = &s->views[i];
        memset(v, 0, sizeof *v);
        if (m->state != MODEL_LIVE)
            continue;
        expire_heads(s, m, now);
        v->queued = m->count;
        v->batch_size = m->cfg.batch_size;
        v->unit_count = m->cfg.unit_count;
        v->running = m->running;
        for (uint32_t q = 0; q < m->count; q++) {
            void **ptrs;
            const ds_req *r = queue_slot(m, q, &ptrs);
            if (q == 0)
                v->oldest_submit_ns = r->submit_ns;
            if (r->deadline_ns && (!v->oldest_deadline_ns || r->deadline_ns < v->oldest_deadline_ns))
                v->oldest_deadline_ns = r->deadline_ns;
        }
    }
    ds_sched_view view = {now, s->n_models, s->views, s->n_units, s->units_busy, s->n_running};
    if (!s->cfg.policy->pick(NULL, &view, d))
        return false;
    /* A policy bug must not corrupt the request path: check its answer. */
    if (d->model >= s->n_models || s->views[d->model].queued == 0 || s->views[d->model].running ||
        d->batch == 0 || d->unit_count == 0 || d->first_unit + d->unit_count > s->n_units ||
        (s->units_busy & unit_mask(d->first_unit, d->unit_count)))
        return false;
    return true;
}

/* Lock held on entry and on return; released around the executor call. */
static void start_batch(ds_sched *s, const ds_sched_decision *d)
{
    dstack_model *m = s->models[d->model];
    uint64_t now = ds_sched_now_ns(s);
    uint32_t n = 0, nin = m->cfg.n_inputs, nout = m->cfg.n_outputs;
    uint32_t want = d->batch < m->cfg.max_batch ? d->batch : m->cfg.max_batch;
    while (n < want && m->count > 0) {
        void **ptrs;
        ds_req r = *queue_slot(m, 0, &ptrs);
        queue_pop(m);
        if (r.deadline_ns && now > r.deadline_ns) {
            complete(s, m, &r, DSTACK_ERR_DEADLINE_MISSED, 0, 0, now);
            continue;
        }
        m->batch_reqs[n] = r;
        for (uint32_t j = 0; j < nin; j++)
            m->batch_in[n * nin + j] = ptrs[j];
        for (uint32_t j = 0; j < nout; j++)
            m->batch_out[n * nout + j] = ptrs[nin + j];
        n++;
    }
    if (n == 0)
        return;
    m->running = true;
    m->batch_n = n;
    m->batch_start_ns = now;
    m->batch_first_unit = d->first_unit;
    m->batch_units = d->unit_count;
    s->units_busy |= unit_mask(d->first_unit, d->unit_count);
    s->n_running++;

    ds_executor *ex = s->cfg.exec;
    ds_exec_batch batch = {n, (const void *const *)m->batch_in, (void *const *)m->batch_out};
    ds_exec_plan *plan = m->cfg.plan;
    pthread_mutex_unlock(&s->lock);
    ds_partition part;
    dstack_status st = ex->ops->partition_get(ex, d->first_unit, d->unit_count, &part);
    if (st == DSTACK_OK)
        st = ex->ops->run(ex, plan, &batch, &part, batch_done, m);
    pthread_mutex_lock(&s->lock);
    if (st != DSTACK_OK)
        finish_batch(s, m, st); /* run refused: done will not come */
}

static void *worker_main(void *arg)
{
    ds_sched *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        ds_sched_decision d;
        if (pick(s, &d))
            start_batch(s, &d);
        else
            pthread_cond_wait(&s->work_cv, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- life cycle ---- */

dstack_status ds_sched_create(const ds_sched_config *cfg, ds_sched **out)
{
    ds_sched *s = calloc(1, sizeof *s);
    if (!s)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the scheduler");
    s->cfg = *cfg;
    s->n_units = cfg->exec->device.n_units;
    if (s->n_units > MAX_UNITS)
        s->n_units = MAX_UNITS;
    if (s->n_units == 0)
        s->n_units = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work_cv, &ca);
    pthread_cond_init(&s->done_cv, &ca);
    pthread_cond_init(&s->idle_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->worker, NULL, worker_main, s) != 0) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->work_cv);
        pthread_cond_destroy(&s->done_cv);
        pthread_cond_destroy(&s->idle_cv);
        free(s);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cannot start the scheduler thread");
    }
    *out = s;
    return DSTACK_OK;
}

void ds_sched_shutdown(ds_sched *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->stopping) {
        s->stopping = true;
        for (uint32_t i = 0; i < s->n_models; i++)
            cancel_queue(s, s->models[i]);
        pthread_cond_broadcast(&s->work_cv);
        pthread_cond_broadcast(&s->done_cv);
    }
    while (s->n_running > 0)
        pthread_cond_wait(&s->idle_cv, &s->lock);
    if (!s->joining) {
        s->joining = true;
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->worker, NULL);
        pthread_mutex_lock(&s->lock);
        s->joined = true;
        pthread_cond_broadcast(&s->idle_cv);
        pthread_cond_broadcast(&s->done_cv);
    }
    while (!s->joined)
        pthread_cond_wait(&s->idle_cv, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

bool ds_sched_is_shut_down(ds_sched *s)
{
    pthread_mutex_lock(&s->lock);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return stopping;
}

static void model_free_queues(dstack_model *m)
{
    free(m->ring);
    free(m->ring_ptrs);
    free(m->batch_reqs);
    free(m->batch_in);
    free(m->batch_out);
    m->ring = NULL;
    m->ring_ptrs = NULL;
    m->batch_reqs = NULL;
    m->batch_in = NULL;
    m->batch_out = NULL;
}

void ds_sched_destroy(ds_sched *s)
{
    if (!s)
        return;
    ds_sched_shutdown(s);
    for (uint32_t i = 0; i < s->n_models; i++) {
        model_free_queues(s->models[i]);
        free(s->models[i]);
    }
    free(s->models);
    free(s->views);
    free(s->cq);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
}

/* ---- models ---- */

static dstack_model *model_alloc(ds_sched *s, const ds_sched_model_config *cfg)
{
    dstack_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->sched = s;
    m->cfg = *cfg;
    m->n_io = cfg->n_inputs + cfg->n_outputs;
    m->cap = s->cfg.queue_capacity;
    m->ring = calloc(m->cap, sizeof *m->ring);
    m->ring_ptrs = calloc((size_t)m->cap * m->n_io, sizeof *m->ring_ptrs);
    m->batch_reqs = calloc(cfg->max_batch, sizeof *m->batch_reqs);
    m->batch_in = calloc((size_t)cfg->max_batch * cfg->n_inputs, sizeof *m->batch_in);
    m->batch_out = calloc((size_t)cfg->max_batch * cfg->n_outputs, sizeof *m->batch_out);
    if (!m->ring || !m->ring_ptrs || !m->batch_reqs || !m->batch_in || !m->batch_out) {
        model_free_queues(m);
        free(m);
        return NULL;
    }
    return m;
}

dstack_status ds_sched_add_model(ds_sched *s, const ds_sched_model_config *cfg, dstack_model **out)
{
    if (cfg->max_batch == 0 || cfg->batch_size == 0 || cfg->batch_size > cfg->max_batch ||
        cfg->n_inputs == 0 || cfg->n_outputs == 0 || cfg->n_inputs > DSTACK_MAX_IO ||
        cfg->n_outputs > DSTACK_MAX_IO)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "scheduler: bad model configuration");
    dstack_model *m = model_alloc(s, cfg);
    if (!m)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for a queue of %u requests",
                       s->cfg.queue_capacity);
    pthread_mutex_lock(&s->lock);
    dstack_status st = DSTACK_OK;
    if (s->stopping)
        st = ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shutting down");
    if (st == DSTACK_OK && s->n_models == s->cap_models) {
        uint32_t cap = s->cap_models ? 2 * s->cap_models : 8;
        dstack_model **models = realloc(s->models, cap * sizeof *models);
        ds_sched_model_view *views = models ? realloc(s->views, cap * sizeof *views) : NULL;
        if (models)
            s->models = models;
        if (views) {
            s->views = views;
            s->cap_models = cap;
        } else {
            st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the model table");
        }
    }
    if (st == DSTACK_OK)
        st = reserve_completions(s, m->cap);
    if (st == DSTACK_OK) {
        m->registered_ns = ds_sched_now_ns(s);
        s->models[s->n_models++] = m;
        *out = m;
    }
    pthread_mutex_unlock(&s->lock);
    if (st != DSTACK_OK) {
        model_free_queues(m);
        free(m);
    }
    return st;
}

/* Lock held. A pointer that is not one of ours is never dereferenced. */
static dstack_model *find_model(ds_sched *s, const dstack_model *m)
{
    for (uint32_t i = 0; i < s->n_models; i++)
        if (s->models[i] == m)
            return s->models[i];
    return NULL;
}

static dstack_status not_live(const dstack_model *m)
{
    if (m && m->state == MODEL_REMOVING)
        return ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the model is being unregistered");
    return ds_fail(DSTACK_ERR_NOT_FOUND, "not a registered model of this context");
}

dstack_status ds_sched_remove_model(ds_sched *s, dstack_model *model, void **owner)
{
    pthread_mutex_lock(&s->lock);
    dstack_model *m = find_model(s, model);
    if (!m || m->state != MODEL_LIVE) {
        dstack_status st = not_live(m);
        pthread_mutex_unlock(&s->lock);
        return st;
    }
    m->state = MODEL_REMOVING;
    cancel_queue(s, m);
    while (m->running)
        pthread_cond_wait(&s->idle_cv, &s->lock);
    m->state = MODEL_REMOVED;
    *owner = m->cfg.owner;
    m->cfg.owner = NULL;
    m->cfg.plan = NULL;
    model_free_queues(m);
    pthread_mutex_unlock(&s->lock);
    return DSTACK_OK;
}

dstack_status ds_sched_take_any_owner(ds_sched *s, void **owner)
{
    dstack_model *live = NULL;
    pthread_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->n_models && !live; i++)
        if (s->models[i]->state == MODEL_LIVE)
            live = s->models[i];
    pthread_mutex_unlock(&s->lock);
    if (!live)
        return DSTACK_ERR_NOT_FOUND;
    return ds_sched_remove_model(s, live, owner);
}

dstack_status ds_sched_model_owner(ds_sched *s, const dstack_model *model, void **owner)
{
    pthread_mutex_lock(&s->lock);
    dstack_model *m = find_model(s, model);
    dstack_status st = DSTACK_OK;
    if (!m || m->state != MODEL_LIVE)
        st = not_live(m);
    else
        *owner = m->cfg.owner;
    pthread_mutex_unlock(&s->lock);
    return st;
}

uint32_t ds_sched_model_count(ds_sched *s)
{
    pthread_mutex_lock(&s->lock);
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_models; i++)
        n += s->models[i]->state == MODEL_LIVE;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* ---- requests ---- */

static dstack_status check_request(const dstack_model *m, const dstack_request *req)
{
    const ds_sched_model_config *c = &m->cfg;
    if (req->n_inputs != c->n_inputs || req->n_outputs != c->n_outputs)
        return ds_fail(DSTACK_ERR_SIZE_MISMATCH, "the model takes %u inputs and %u outputs, got %u and %u",
                       c->n_inputs, c->n_outputs, req->n_inputs, req->n_outputs);
    if (!req->inputs || !req->outputs)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "request inputs or outputs array is NULL");
    for (uint32_t j = 0; j < c->n_inputs; j++) {
        if (!req->inputs[j].data)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "input %u data is NULL", j);
        if (req->inputs[j].bytes != c->input_bytes[j])
            return ds_fail(DSTACK_ERR_SIZE_MISMATCH, "input %u expects %zu bytes, got %zu", j,
                           c->input_bytes[j], req->inputs[j].bytes);
    }
    for (uint32_t j = 0; j < c->n_outputs; j++) {
        if (!req->outputs[j].data)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "output %u data is NULL", j);
        if (req->outputs[j].bytes != c->output_bytes[j])
            return ds_fail(DSTACK_ERR_SIZE_MISMATCH, "output %u expects %zu bytes, got %zu", j,
                           c->output_bytes[j], req->outputs[j].bytes);
    }
    return DSTACK_OK;
}

dstack_status ds_sched_submit(ds_sched *s, dstack_model *model, const dstack_request *req,
                              dstack_ticket *ticket)
{
    pthread_mutex_lock(&s->lock);
    dstack_status st = DSTACK_OK;
    dstack_model *m = NULL;
    if (s->stopping)
        st = ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shutting down");
    else if (!(m = find_model(s, model)) || m->state != MODEL_LIVE)
        st = not_live(m);
    else if ((st = check_request(m, req)) != DSTACK_OK)
        ;
    else if (m->outstanding >= m->cap) {
        m->stats.rejected_queue_full++;
        st = ds_fail(DSTACK_ERR_QUEUE_FULL, "%u requests outstanding (queued, running or not yet polled)",
                     m->outstanding);
    }
    if (st != DSTACK_OK) {
        pthread_mutex_unlock(&s->lock);
        return st;
    }
    uint64_t now = ds_sched_now_ns(s);
    void **ptrs;
    m->count++;
    ds_req *r = queue_slot(m, m->count - 1, &ptrs);
    r->ticket = ++s->next_ticket;
    r->user_data = req->user_data;
    r->submit_ns = now;
    r->deadline_ns = req->deadline_ns ? req->deadline_ns : (m->cfg.slo_ns ? now + m->cfg.slo_ns : 0);
    for (uint32_t j = 0; j < m->cfg.n_inputs; j++)
        ptrs[j] = req->inputs[j].data;
    for (uint32_t j = 0; j < m->cfg.n_outputs; j++)
        ptrs[m->cfg.n_inputs + j] = req->outputs[j].data;
    m->outstanding++;
    m->stats.submitted++;
    *ticket = r->ticket;
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->lock);
    return DSTACK_OK;
}

static bool all_answered(const ds_sched *s)
{
    return s->stopping && s->joined && s->n_running == 0 && s->cq_count == 0;
}

dstack_status ds_sched_poll(ds_sched *s, dstack_completion *out, size_t max, int64_t timeout_us,
                            size_t *n_out)
{
    struct timespec until;
    if (timeout_us > 0) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        uint64_t ns = (uint64_t)until.tv_nsec + (uint64_t)timeout_us * 1000u;
        until.tv_sec += (time_t)(ns / 1000000000u);
        until.tv_nsec = (long)(ns % 1000000000u);
    }
    pthread_mutex_lock(&s->lock);
    while (s->cq_count == 0 && !all_answered(s) && timeout_us != 0) {
        if (timeout_us < 0)
            pthread_cond_wait(&s->done_cv, &s->lock);
        else if (pthread_cond_timedwait(&s->done_cv, &s->lock, &until) == ETIMEDOUT)
            break;
    }
    if (s->cq_count == 0 && all_answered(s)) {
        pthread_mutex_unlock(&s->lock);
        return ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shut down and every completion was taken");
    }
    size_t n = s->cq_count < max ? s->cq_count : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = s->cq[s->cq_head];
        s->cq_head = (s->cq_head + 1) % s->cq_cap;
        s->cq_count--;
        out[i].model->outstanding--;
    }
    if (s->cq_count > 0)
        pthread_cond_signal(&s->done_cv); /* let another poller take the rest */
    pthread_mutex_unlock(&s->lock);
    *n_out = n;
    return DSTACK_OK;
}

dstack_status ds_sched_stats(ds_sched *s, const dstack_model *model, dstack_model_stats *o)
{
    pthread_mutex_lock(&s->lock);
    dstack_model *m = find_model(s, model);
    if (!m || m->state == MODEL_REMOVED) {
        dstack_status st = not_live(NULL);
        pthread_mutex_unlock(&s->lock);
        return st;
    }
    const model_counters *c = &m->stats;
    double secs = (double)(ds_sched_now_ns(s) - m->registered_ns) / 1e9;
    uint64_t judged = c->completed_ok + c->deadline_missed + c->failed;
    o->submitted = c->submitted;
    o->rejected_queue_full = c->rejected_queue_full;
    o->completed_ok = c->completed_ok;
    o->deadline_missed = c->deadline_missed;
    o->cancelled = c->cancelled;
    o->failed = c->failed;
    o->slo_met = c->slo_met;
    o->batches = c->batches;
    o->mean_batch = c->batches ? (double)c->batched_requests / (double)c->batches : 0.0;
    o->throughput_rps = secs > 0 ? (double)c->completed_ok / secs : 0.0;
    o->slo_attainment = judged ? (double)c->slo_met / (double)judged : 1.0;
    o->latency_p50_us = ds_hist_quantile(&c->latency_us, 0.50);
    o->latency_p99_us = ds_hist_quantile(&c->latency_us, 0.99);
    o->latency_max_us = c->latency_us.max;
    o->queued = m->count;
    pthread_mutex_unlock(&s->lock);
    return DSTACK_OK;
}
