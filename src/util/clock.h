/* clock.h - time as an interface.
 *
 * The scheduler reads time only through a ds_clock, never clock_gettime,
 * so the simulator can drive the same scheduler code with a virtual clock
 * and get the same decisions on every run. */
#ifndef DS_UTIL_CLOCK_H
#define DS_UTIL_CLOCK_H

#include <stdint.h>

typedef struct ds_clock ds_clock;
struct ds_clock {
    uint64_t (*now_ns)(const ds_clock *clock);
    void *state; /* the implementation's; NULL for the monotonic clock */
};

/* CLOCK_MONOTONIC, ns. */
extern const ds_clock ds_clock_monotonic;

static inline uint64_t ds_clock_now_ns(const ds_clock *clock) { return clock->now_ns(clock); }

/* Host wall time in ns (CLOCK_MONOTONIC), for code outside the scheduler
 * that only measures (profiling, benchmarks). */
uint64_t ds_monotonic_ns(void);

#endif
