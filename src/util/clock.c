#include "util/clock.h"

#include <time.h>

uint64_t ds_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t monotonic_now(const ds_clock *clock)
{
    (void)clock;
    return ds_monotonic_ns();
}

const ds_clock ds_clock_monotonic = {monotonic_now, 0};
