/* sched.c - the real-time driver: lock, worker thread, executor calls and
 * the completion ring around the scheduler core. The contract is in
 * sched.h; every decision is core.c's. */
#include "sched/sched.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/error.h"
#include "util/fault.h"

#define STARTS_PER_STEP 16

typedef struct cq_entry {
    dstack_completion c;
    uint32_t samples;
} cq_entry;

struct ds_sched {
    ds_sched_config cfg;
    ds_core *core;
    pthread_mutex_t lock;
    pthread_cond_t work_cv; /* worker: an event, shutdown */
    pthread_cond_t done_cv; /* pollers: a completion, shutdown */
    pthread_cond_t idle_cv; /* remove/shutdown: a batch finished, worker joined */
    pthread_t worker;
    bool stopping, joining, joined, kicked;
    uint32_t n_running;     /* batches handed to the executor, not yet done */
    cq_entry *cq;           /* ring */
    size_t cq_head, cq_count, cq_cap;
    size_t reserved;        /* sum of live models' capacities */
    uint64_t created_ns;
};

uint64_t ds_sched_now_ns(const ds_sched *s) { return ds_clock_now_ns(s->cfg.clock); }

/* ---- completions (lock held) ---- */

static void emit(void *arg, const dstack_completion *c, uint32_t samples)
{
    ds_sched *s = arg;
    cq_entry *e = &s->cq[(s->cq_head + s->cq_count) % s->cq_cap];
    e->c = *c;
    e->samples = samples;
    s->cq_count++;
    pthread_cond_signal(&s->done_cv);
}

/* Completions never outnumber live models' capacities plus what is already
 * in the ring (removed models' leftovers only shrink): reserve that. */
static dstack_status reserve_completions(ds_sched *s, size_t extra)
{
    size_t need = s->reserved + extra + s->cq_count;
    if (need <= s->cq_cap)
        return DSTACK_OK;
    cq_entry *cq = ds_malloc(need * sizeof *cq);
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

static void kick(ds_sched *s)
{
    s->kicked = true;
    pthread_cond_signal(&s->work_cv);
}

/* ---- the worker ---- */

static void finish(ds_sched *s, dstack_model *m, dstack_status status)
{
    ds_core_batch_done(s->core, m, status, ds_sched_now_ns(s));
    s->n_running--;
    kick(s);
    pthread_cond_broadcast(&s->idle_cv);
}

/* The executor's done: arg is the model's run tag, which lives as long as
 * the model, and a model is never freed while a batch of it runs. */
static void batch_done(void *arg, dstack_status status)
{
    ds_core_run_tag *tag = arg;
    ds_sched *s = tag->driver;
    pthread_mutex_lock(&s->lock);
    finish(s, tag->model, status);
    pthread_mutex_unlock(&s->lock);
}

/* Lock held on entry and on return; released around the executor calls. */
static void start_batches(ds_sched *s, ds_core_start *starts, size_t n)
{
    ds_core_run_tag *tags[STARTS_PER_STEP];
    for (size_t i = 0; i < n; i++) {
        tags[i] = ds_core_run_tag_of(s->core, starts[i].model);
        tags[i]->driver = s;
        s->n_running++;
    }
    pthread_mutex_unlock(&s->lock);
    ds_executor *ex = s->cfg.exec;
    dstack_status st[STARTS_PER_STEP];
    for (size_t i = 0; i < n; i++) {
        ds_partition part;
        st[i] = ex->ops->partition_get(ex, starts[i].first_unit, starts[i].unit_count, &part);
        if (st[i] == DSTACK_OK)
            st[i] = ex->ops->run(ex, starts[i].plan, &starts[i].batch, &part, batch_done, tags[i]);
    }
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++)
        if (st[i] != DSTACK_OK)
            finish(s, starts[i].model, st[i]); /* run refused: done will not come */
}

static void deadline_to_timespec(uint64_t wake_ns, uint64_t now_ns, struct timespec *ts)
{
    uint64_t mono = ds_monotonic_ns();
    uint64_t delta = wake_ns > now_ns ? wake_ns - now_ns : 0;
    uint64_t at = mono + delta;
    ts->tv_sec = (time_t)(at / 1000000000u);
    ts->tv_nsec = (long)(at % 1000000000u);
}

static void *worker_main(void *arg)
{
    ds_sched *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        s->kicked = false;
        ds_core_start starts[STARTS_PER_STEP];
        uint64_t now = ds_sched_now_ns(s), wake;
        size_t n = ds_core_step(s->core, now, starts, STARTS_PER_STEP, &wake);
        if (n > 0) {
            start_batches(s, starts, n);
            continue;
        }
        if (s->kicked || s->stopping)
            continue;
        if (wake == UINT64_MAX) {
            pthread_cond_wait(&s->work_cv, &s->lock);
        } else {
            struct timespec ts;
            deadline_to_timespec(wake, now, &ts);
            while (!s->kicked && !s->stopping &&
                   pthread_cond_timedwait(&s->work_cv, &s->lock, &ts) != ETIMEDOUT)
                ;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- life cycle ---- */

dstack_status ds_sched_create(const ds_sched_config *cfg, ds_sched **out)
{
    ds_sched *s = ds_calloc(1, sizeof *s);
    if (!s)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the scheduler");
    s->cfg = *cfg;
    ds_core_config cc = {cfg->policy, ds_core_units_of(&cfg->exec->device), emit, s};
    dstack_status st = ds_core_create(&cc, &s->core);
    if (st != DSTACK_OK) {
        free(s);
        return st;
    }
    s->created_ns = ds_sched_now_ns(s);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work_cv, &ca);
    pthread_cond_init(&s->done_cv, &ca);
    pthread_cond_init(&s->idle_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (ds_thread_create(&s->worker, NULL, worker_main, s) != 0) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->work_cv);
        pthread_cond_destroy(&s->done_cv);
        pthread_cond_destroy(&s->idle_cv);
        ds_core_destroy(s->core);
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
        ds_core_shutdown(s->core, ds_sched_now_ns(s));
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

void ds_sched_destroy(ds_sched *s)
{
    if (!s)
        return;
    ds_sched_shutdown(s);
    ds_core_destroy(s->core);
    free(s->cq);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
}

/* ---- models ---- */

dstack_status ds_sched_add_model(ds_sched *s, const ds_sched_model_config *cfg, dstack_model **out)
{
    pthread_mutex_lock(&s->lock);
    dstack_status st = DSTACK_OK;
    if (s->stopping)
        st = ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shutting down");
    if (st == DSTACK_OK)
        st = reserve_completions(s, s->cfg.queue_capacity);
    if (st == DSTACK_OK)
        st = ds_core_add_model(s->core, cfg, s->cfg.queue_capacity, ds_sched_now_ns(s), out);
    if (st == DSTACK_OK) {
        s->reserved += s->cfg.queue_capacity;
        kick(s);
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

dstack_status ds_sched_remove_model(ds_sched *s, dstack_model *m, void **owner)
{
    pthread_mutex_lock(&s->lock);
    bool running = false;
    dstack_status st = ds_core_remove_model(s->core, m, ds_sched_now_ns(s), &running);
    if (st == DSTACK_OK) {
        while (ds_core_model_running(s->core, m))
            pthread_cond_wait(&s->idle_cv, &s->lock);
        *owner = ds_core_free_model(s->core, m);
        s->reserved -= s->cfg.queue_capacity;
        kick(s);
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

dstack_status ds_sched_take_any_owner(ds_sched *s, void **owner)
{
    pthread_mutex_lock(&s->lock);
    dstack_model *m = ds_core_any_model(s->core);
    pthread_mutex_unlock(&s->lock);
    if (!m)
        return DSTACK_ERR_NOT_FOUND;
    return ds_sched_remove_model(s, m, owner);
}

dstack_status ds_sched_model_owner(ds_sched *s, const dstack_model *m, void **owner)
{
    pthread_mutex_lock(&s->lock);
    dstack_status st = ds_core_model_owner(s->core, m, owner);
    pthread_mutex_unlock(&s->lock);
    return st;
}

uint32_t ds_sched_model_count(ds_sched *s)
{
    pthread_mutex_lock(&s->lock);
    uint32_t n = ds_core_model_count(s->core);
    pthread_mutex_unlock(&s->lock);
    return n;
}

dstack_status ds_sched_model_update(ds_sched *s, dstack_model *m, uint32_t batch_size, uint32_t unit_count)
{
    pthread_mutex_lock(&s->lock);
    dstack_status st = ds_core_model_update(s->core, m, batch_size, unit_count);
    if (st == DSTACK_OK)
        kick(s);
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* ---- requests ---- */

dstack_status ds_sched_submit(ds_sched *s, dstack_model *m, const dstack_request *req, dstack_ticket *ticket)
{
    pthread_mutex_lock(&s->lock);
    dstack_status st = s->stopping ? ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shutting down")
                                   : ds_core_submit(s->core, m, req, ds_sched_now_ns(s), ticket);
    if (st == DSTACK_OK)
        kick(s);
    pthread_mutex_unlock(&s->lock);
    return st;
}

static bool all_answered(const ds_sched *s)
{
    return s->stopping && s->joined && s->n_running == 0 && s->cq_count == 0;
}

/* Absolute CLOCK_MONOTONIC time `timeout_us` from now, saturated: a huge
 * timeout (INT64_MAX included) means "as good as forever", not an overflow
 * that returns at once. */
static void timeout_to_timespec(int64_t timeout_us, struct timespec *until)
{
    clock_gettime(CLOCK_MONOTONIC, until);
    const int64_t max_s = (int64_t)1 << 40; /* ~35,000 years */
    int64_t secs = timeout_us / 1000000;
    int64_t ns = (timeout_us % 1000000) * 1000 + until->tv_nsec;
    if (secs > max_s)
        secs = max_s;
    until->tv_sec += (time_t)(secs + ns / 1000000000);
    until->tv_nsec = (long)(ns % 1000000000);
}

dstack_status ds_sched_poll(ds_sched *s, dstack_completion *out, size_t max, int64_t timeout_us,
                            size_t *n_out)
{
    struct timespec until;
    if (timeout_us > 0)
        timeout_to_timespec(timeout_us, &until);
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
        cq_entry *e = &s->cq[s->cq_head];
        out[i] = e->c;
        ds_core_polled(s->core, e->c.model, e->samples);
        s->cq_head = (s->cq_head + 1) % s->cq_cap;
        s->cq_count--;
    }
    if (s->cq_count > 0)
        pthread_cond_signal(&s->done_cv); /* let another poller take the rest */
    pthread_mutex_unlock(&s->lock);
    *n_out = n;
    return DSTACK_OK;
}

dstack_status ds_sched_stats(ds_sched *s, const dstack_model *m, dstack_model_stats *o)
{
    pthread_mutex_lock(&s->lock);
    dstack_status st = ds_core_stats(s->core, m, ds_sched_now_ns(s), o);
    pthread_mutex_unlock(&s->lock);
    return st;
}

void ds_sched_totals(ds_sched *s, ds_core_totals *out, uint64_t *elapsed_ns)
{
    pthread_mutex_lock(&s->lock);
    ds_core_totals_get(s->core, out);
    *elapsed_ns = ds_sched_now_ns(s) - s->created_ns;
    pthread_mutex_unlock(&s->lock);
}

uint32_t ds_sched_model_units(ds_sched *s, const dstack_model *m)
{
    pthread_mutex_lock(&s->lock);
    uint32_t v = ds_core_model_units(s->core, m);
    pthread_mutex_unlock(&s->lock);
    return v;
}

double ds_sched_model_rate(ds_sched *s, const dstack_model *m)
{
    pthread_mutex_lock(&s->lock);
    double v = ds_core_model_rate(s->core, m, ds_sched_now_ns(s));
    pthread_mutex_unlock(&s->lock);
    return v;
}
