/* rate.h - the arrival rate lambda of one model, measured online, and when
 * it has moved far enough from the rate of the last plan to plan again.
 *
 * Estimator: an exponentially decayed count of arrivals with time constant
 * tau, c(t) = sum over arrivals t_i <= t of exp(-(t - t_i) / tau), kept in
 * O(1): each update decays c by exp(-dt / tau) and adds the new arrivals. A
 * steady rate lambda since start gives E[c(t)] = lambda tau (1 - e^{-(t -
 * t0)/tau}), so the estimate is c(t) / (tau (1 - e^{-(t - t0)/tau})): the
 * division removes the start-up bias (as Adam does for its moments), and a
 * reading between arrivals decays too, so a model whose traffic stops is
 * seen to slow down without waiting for the next arrival.
 * Why not a windowed count: it needs a ring of buckets and steps when an
 * old bucket falls out; the decayed count weighs the recent past smoothly
 * with one double, and tau plays the role of the window length.
 *
 * Re-plan rule: once at least min_events arrivals have been seen, a plan is
 * due when there is none yet, or when the rate moved by more than `factor`
 * either way since the rate the last plan used (max(r/p, p/r) > factor).
 * Recording the new plan's rate resets the reference, so a rate that holds
 * still triggers one re-plan, not one per arrival.
 *
 * Time is a value passed in (ns, from the caller's ds_clock), never read
 * here, so the simulator's virtual time drives it deterministically.
 * Not thread-safe: one owner (the scheduler core, under its lock) updates it.
 */
#ifndef DS_BATCH_RATE_H
#define DS_BATCH_RATE_H

#include <stdbool.h>
#include <stdint.h>

#define DS_RATE_DEFAULT_TAU_NS 1000000000ull /* 1 s */
#define DS_RATE_DEFAULT_FACTOR 1.5
#define DS_RATE_DEFAULT_MIN_EVENTS 8u

typedef struct ds_rate_tracker {
    double tau_ns;       /* time constant */
    double factor;       /* re-plan when the rate moves more than this, > 1 */
    uint32_t min_events; /* arrivals before the rate counts as known */
    uint64_t start_ns;   /* when tracking started */
    uint64_t last_ns;    /* time of the last update of count */
    double count;        /* decayed arrival count at last_ns */
    uint64_t n_events;   /* arrivals seen, undecayed */
    double planned_rate; /* rate (1/s) of the last plan; < 0: no plan yet */
} ds_rate_tracker;

/* Start tracking at now_ns. tau_ns 0, factor <= 1 (or NaN) and min_events 0
 * take the defaults above. */
void ds_rate_init(ds_rate_tracker *t, uint64_t now_ns, uint64_t tau_ns, double factor,
                  uint32_t min_events);

/* `count` requests arrived at now_ns. A now_ns earlier than the last update
 * counts as the same instant (the rate never goes negative). */
void ds_rate_arrival(ds_rate_tracker *t, uint64_t now_ns, uint32_t count);

/* Requests per second at now_ns; 0 while fewer than min_events have arrived
 * (unknown: ds_batch_query treats 0 as unknown). */
double ds_rate_per_s(const ds_rate_tracker *t, uint64_t now_ns);

/* True when a (re-)plan is due at now_ns by the rule above. */
bool ds_rate_replan_due(const ds_rate_tracker *t, uint64_t now_ns);

/* Record that a plan was made for rate_per_s (the value given to the batch
 * optimizer, usually ds_rate_per_s at that time). */
void ds_rate_planned(ds_rate_tracker *t, double rate_per_s);

#endif
