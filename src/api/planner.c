/* planner.c - re-plans each model's batch size (and share) from its
 * measured arrival rate, off the request path.
 *
 * Registration plans for a queue that is never empty (rate unknown); this
 * thread wakes every 100 ms, reads each model's arrival rate from the
 * scheduler (an exponentially decayed count, O(1)), and when it moved by
 * more than 1.5x from the rate of the current plan, computes a new plan
 * from the model's latency model (src/batch) for 1.5x that rate (the most
 * it may reach before the next re-plan, DS_PLAN_HEADROOM) and hands the
 * new batch size and share to the scheduler, which applies them to the
 * next batch it forms: service never stops. Models with fixed_batch,
 * without an SLO or without a latency model are left alone. Under the
 * dstack policy the shares are planned jointly (replan_joint): one model's
 * rate moving re-plans every model's share, so that they fit the device
 * together.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_internal.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/fault.h"

#define PLAN_PERIOD_NS 100000000ull
#define REPLAN_FACTOR 1.5

static bool plannable(const api_model *am) { return am->lat && am->slo_us && !am->fixed_batch; }

/* Hand model am's new plan (its batch on `units`) to the scheduler and
 * publish it in its info; planned at `rate`. False when the scheduler
 * refused it (the model is going away). */
static bool apply_plan(dstack_ctx *ctx, api_model *am, const ds_model_plan *plan, uint32_t units, double rate)
{
    if (ds_sched_model_update(ctx->sched, am->handle, plan->batch, units) != DSTACK_OK)
        return false;
    am->planned_rate = rate;
    am->info.batch_size = plan->batch;
    am->info.sm_count = ds_api_share_sms(ctx, plan->units);
    am->info.predicted_latency_us = (uint64_t)(plan->latency_us + 0.5);
    return true;
}

static void replan_one(dstack_ctx *ctx, api_model *am)
{
    if (!plannable(am))
        return;
    double rate = ds_sched_model_rate(ctx->sched, am->handle);
    if (!ds_replan_due(am->planned_rate, rate, REPLAN_FACTOR))
        return;
    ds_model_plan plan;
    /* Plan for the top of the band the plan must serve: no re-plan comes
     * until the rate leaves [rate / 1.5, rate x 1.5], and a plan sized for
     * `rate` itself falls behind (and misses SLOs) anywhere above it. */
    if (ds_plan_model(am->lat, am->slo_us, rate * DS_PLAN_HEADROOM, ds_api_policy_units(ctx, am), 0, &plan) !=
        DSTACK_OK)
        return;
    bool cpu = ctx->backend == DSTACK_BACKEND_CPU;
    uint32_t units = cpu ? ctx->exec->device.n_units : plan.units;
    apply_plan(ctx, am, &plan, units ? units : 1, rate);
}

/* The D-STACK policy's shares are planned together (ds_plan_joint), so
 * that they add up to the device while a split that fits exists: when any
 * model's rate left its band, every model with a latency model, an SLO
 * and no fixed share or batch is re-planned at once; the others keep
 * their plans (re-planned alone) and their units count against the
 * device. Returns false when the joint plan could not run (no memory):
 * the caller plans each model alone. */
static bool replan_joint(dstack_ctx *ctx)
{
    uint32_t n = ctx->n_live;
    /* a model that came or went changes every share */
    bool due = ctx->live_gen != ctx->planned_gen;
    for (uint32_t i = 0; i < n; i++) {
        api_model *am = ctx->live[i];
        if (plannable(am) && !am->fixed_units)
            due |= ds_replan_due(am->planned_rate, ds_sched_model_rate(ctx->sched, am->handle), REPLAN_FACTOR);
    }
    if (!due) {
        for (uint32_t i = 0; i < n; i++)
            if (ctx->live[i]->fixed_units)
                replan_one(ctx, ctx->live[i]);
        return true;
    }
    ds_plan_request *req = ds_calloc(n ? n : 1, sizeof *req);
    ds_model_plan *plan = ds_calloc(n ? n : 1, sizeof *plan);
    if (!req || !plan) {
        free(req);
        free(plan);
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        api_model *am = ctx->live[i];
        double rate = ds_sched_model_rate(ctx->sched, am->handle);
        if (plannable(am) && !am->fixed_units) {
            req[i] = (ds_plan_request){am->lat, am->slo_us, rate, 0};
        } else {
            replan_one(ctx, am);
            req[i].units = ds_sched_model_units(ctx->sched, am->handle);
        }
    }
    bool fits;
    if (ds_plan_joint(req, n, ctx->exec->device.n_units, DS_PLAN_HEADROOM, plan, &fits) != DSTACK_OK) {
        free(req); /* no memory: nothing counts as planned, the next tick tries again */
        free(plan);
        return false;
    }
    ctx->planned_gen = ctx->live_gen;
    for (uint32_t i = 0; i < n; i++) {
        api_model *am = ctx->live[i];
        if (req[i].lat && plan[i].batch > 0 && plan[i].units > 0)
            apply_plan(ctx, am, &plan[i], plan[i].units,
                       req[i].rate_per_s > 0 ? req[i].rate_per_s : am->planned_rate);
    }
    free(req);
    free(plan);
    return true;
}

/* static_spatial runs every model on its home partition: the knees, scaled
 * down to fit the device (ds_static_counts). Its batch is planned for that
 * partition, not for the knee (a new user saw vgg19 planned at batch 10
 * for 132 SMs run on 40, 44 ms against a 30 ms SLO), while the scheduler
 * keeps the knee as the share the layout scales. Re-planned when a model
 * comes or goes or a rate leaves its band. */
static void replan_static(dstack_ctx *ctx)
{
    uint32_t n = ctx->n_live;
    double *rate = ds_calloc(n ? n : 1, sizeof *rate); /* one reading per model per pass */
    uint32_t *knee = ds_calloc(n ? n : 1, sizeof *knee), *home = ds_calloc(n ? n : 1, sizeof *home);
    bool due = ctx->live_gen != ctx->planned_gen;
    for (uint32_t i = 0; rate && i < n; i++) {
        api_model *am = ctx->live[i];
        rate[i] = ds_sched_model_rate(ctx->sched, am->handle);
        if (plannable(am))
            due |= ds_replan_due(am->planned_rate, rate[i], REPLAN_FACTOR);
    }
    if (!due || !rate || !knee || !home) {
        free(rate);
        free(knee);
        free(home);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        api_model *am = ctx->live[i];
        knee[i] = ds_sched_model_units(ctx->sched, am->handle);
        ds_model_plan alone;
        if (plannable(am) &&
            ds_plan_model(am->lat, am->slo_us, rate[i] * DS_PLAN_HEADROOM, am->fixed_units, 0, &alone) == DSTACK_OK)
            knee[i] = alone.units;
    }
    /* ctx->live is in registration order, as the scheduler's views are
     * (ds_planner_remove keeps the order), so the homes are the layout's */
    ds_static_counts(knee, n, ctx->exec->device.n_units, home);
    ctx->planned_gen = ctx->live_gen;
    for (uint32_t i = 0; i < n; i++) {
        api_model *am = ctx->live[i];
        ds_model_plan at_home;
        /* the batch for the home partition; the scheduler keeps the knee,
         * the share its layout scales */
        if (plannable(am) && home[i] &&
            ds_plan_model(am->lat, am->slo_us, rate[i] * DS_PLAN_HEADROOM, home[i], 0, &at_home) == DSTACK_OK)
            apply_plan(ctx, am, &at_home, knee[i], rate[i]);
    }
    free(rate);
    free(knee);
    free(home);
}

static void *planner_main(void *arg)
{
    dstack_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->plan_lock);
    while (!ctx->planner_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        uint64_t ns = (uint64_t)until.tv_nsec + PLAN_PERIOD_NS;
        until.tv_sec += (time_t)(ns / 1000000000u);
        until.tv_nsec = (long)(ns % 1000000000u);
        while (!ctx->planner_stop && pthread_cond_timedwait(&ctx->plan_cv, &ctx->plan_lock, &until) != ETIMEDOUT)
            ;
        if (ctx->planner_stop)
            break;
        bool joint = ctx->policy->id == DSTACK_POLICY_DSTACK && ctx->backend != DSTACK_BACKEND_CPU &&
                     ctx->exec->device.n_units > 1;
        bool fixed_homes = ctx->policy->max_units && ctx->backend != DSTACK_BACKEND_CPU &&
                           ctx->exec->device.n_units > 1;
        if (fixed_homes)
            replan_static(ctx);
        else if (!joint || !replan_joint(ctx))
            for (uint32_t i = 0; i < ctx->n_live; i++)
                replan_one(ctx, ctx->live[i]);
    }
    pthread_mutex_unlock(&ctx->plan_lock);
    return NULL;
}

dstack_status ds_planner_start(dstack_ctx *ctx)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ctx->plan_lock, NULL);
    pthread_cond_init(&ctx->plan_cv, &ca);
    pthread_condattr_destroy(&ca);
    ctx->planner_stop = false;
    if (ds_thread_create(&ctx->planner, NULL, planner_main, ctx) != 0) {
        pthread_mutex_destroy(&ctx->plan_lock);
        pthread_cond_destroy(&ctx->plan_cv);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cannot start the planner thread");
    }
    ctx->planner_running = true;
    return DSTACK_OK;
}

void ds_planner_stop(dstack_ctx *ctx)
{
    if (!ctx->planner_running)
        return;
    pthread_mutex_lock(&ctx->plan_lock);
    ctx->planner_stop = true;
    pthread_cond_broadcast(&ctx->plan_cv);
    pthread_mutex_unlock(&ctx->plan_lock);
    pthread_join(ctx->planner, NULL);
    ctx->planner_running = false;
    pthread_mutex_destroy(&ctx->plan_lock);
    pthread_cond_destroy(&ctx->plan_cv);
    free(ctx->live);
    ctx->live = NULL;
    ctx->n_live = ctx->cap_live = 0;
}

dstack_status ds_planner_add(dstack_ctx *ctx, api_model *am)
{
    pthread_mutex_lock(&ctx->plan_lock);
    dstack_status st = DSTACK_OK;
    if (ctx->n_live == ctx->cap_live) {
        uint32_t cap = ctx->cap_live ? 2 * ctx->cap_live : 8;
        api_model **l = ds_realloc(ctx->live, cap * sizeof *l);
        if (l) {
            ctx->live = l;
            ctx->cap_live = cap;
        } else {
            st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for the planner's model list");
        }
    }
    if (st == DSTACK_OK) {
        ctx->live[ctx->n_live++] = am;
        ctx->live_gen++;
    }
    pthread_mutex_unlock(&ctx->plan_lock);
    return st;
}

void ds_planner_remove(dstack_ctx *ctx, api_model *am)
{
    pthread_mutex_lock(&ctx->plan_lock);
    for (uint32_t i = 0; i < ctx->n_live; i++) {
        if (ctx->live[i] == am) {
            ctx->live_gen++;
            /* keep registration order: static_spatial's homes follow it */
            memmove(&ctx->live[i], &ctx->live[i + 1], (ctx->n_live - i - 1) * sizeof *ctx->live);
            ctx->n_live--;
            break;
        }
    }
    pthread_mutex_unlock(&ctx->plan_lock);
}
