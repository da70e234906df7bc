/* units.h - the SMs a run of partition units holds.
 *
 * Green contexts split a Hopper GPU into units of 8 SMs inside its GPCs:
 * 15 units and 12 SMs that no unit holds on a 132-SM H100 or H200
 * (GPU-NOTES.md). A range of fewer than all units is a green context of
 * units x unit_sms SMs. The range of every unit is the whole device: while
 * a batch holds every unit nothing else runs, so it runs on an ordinary
 * stream with all sm_count SMs, the 12 left over included (the cuda
 * executor's primary-context stream, the simulator's leftover unit).
 * One rule for the executors, the latency model, the knee curves and the
 * utilization figures, so that they agree on what a share is.
 */
#ifndef DS_UTIL_UNITS_H
#define DS_UTIL_UNITS_H

#include <stdint.h>

/* SMs of a range of `units` units on a device of `n_units` units of
 * `unit_sms` SMs and `sm_count` SMs in all: sm_count for the range of
 * every unit (and on a device of one unit), units x unit_sms otherwise. */
static inline uint32_t ds_units_sms(uint32_t sm_count, uint32_t unit_sms, uint32_t n_units, uint32_t units)
{
    if (n_units <= 1 || units >= n_units)
        return sm_count;
    return units * unit_sms;
}

/* SMs no unit holds: those only the range of every unit reaches. */
static inline uint32_t ds_units_leftover(uint32_t sm_count, uint32_t unit_sms, uint32_t n_units)
{
    uint64_t held = (uint64_t)unit_sms * n_units;
    return n_units > 1 && sm_count > held ? (uint32_t)(sm_count - held) : 0;
}

#endif
