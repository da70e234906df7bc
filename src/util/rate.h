/* rate.h - the arrival rate lambda of one model, measured online (the
 * scheduler core keeps one per model; ds_replan_due in src/batch/latency.h
 * decides from it when to plan again).
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
 * Until min_events arrivals (calls of ds_rate_arrival, whatever count each
 * carries) have been seen the rate is unknown
 * (0): a handful of arrivals says little (at 200 req/s, 20 arrivals put
 * the estimate within about +-22%), and a plan made from it stays until
 * the rate moves by 1.5x.
 *
 * Time is a value passed in (ns, from the caller's ds_clock), never read
 * here, so the simulator's virtual time drives it deterministically.
 * Not thread-safe: one owner (the scheduler core, under its lock) updates it.
 */
#ifndef DS_UTIL_RATE_H
#define DS_UTIL_RATE_H

#include <stdbool.h>
#include <stdint.h>

#define DS_RATE_DEFAULT_TAU_NS 1000000000ull /* 1 s */
#define DS_RATE_DEFAULT_MIN_EVENTS 32u
/* nor before 5% of the window has passed (51 ms with tau = 1 s): the
 * start-up correction divides by that fraction */
#define DS_RATE_MIN_SEEN 0.05

typedef struct ds_rate_tracker {
    double tau_ns;       /* time constant */
    uint32_t min_events; /* arrivals before the rate counts as known */
    uint64_t start_ns;   /* when tracking started */
    uint64_t last_ns;    /* time of the last update of count */
    double count;        /* decayed arrival count at last_ns */
    uint64_t n_events;   /* arrivals (calls) seen, undecayed */
} ds_rate_tracker;

/* Start tracking at now_ns. tau_ns 0 and min_events 0 take the defaults
 * above. */
void ds_rate_init(ds_rate_tracker *t, uint64_t now_ns, uint64_t tau_ns, uint32_t min_events);

/* One arrival of `count` units (the core counts samples: the rate is in
 * samples/s, the guard in arrivals) at now_ns. A now_ns earlier than the last update
 * counts as the same instant (the rate never goes negative). */
void ds_rate_arrival(ds_rate_tracker *t, uint64_t now_ns, uint32_t count);

/* Units (samples) per second at now_ns; 0 while fewer than min_events have arrived
 * or less than DS_RATE_MIN_SEEN of the window has passed (unknown:
 * ds_batch_query treats 0 as unknown). */
double ds_rate_per_s(const ds_rate_tracker *t, uint64_t now_ns);

#endif /* DS_UTIL_RATE_H */
