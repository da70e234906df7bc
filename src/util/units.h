/* units.h - the SMs a run of partition units holds.
 *
 * Green contexts split a Hopper GPU into units of 8 SMs inside its GPCs:
 * 15 units and 12 SMs that no unit holds on a 132-SM H100 or H200
 * (../shared/GPU-NOTES.md, docs/DESIGN-NOTES.md). A range of fewer than all units is a green context of
 * units x unit_sms SMs. Under green contexts the range of every unit is
 * the whole device: while a batch holds every unit nothing else runs, so it
 * runs on an ordinary stream with all sm_count SMs, the 12 left over
 * included (the cuda executor's primary-context stream, the simulator's
 * leftover unit). Without green contexts (NONE, MPS, cpu) there is one
 * unit and it is what the process has: unit_sms (an MPS client's share is
 * less than the device's sm_count).
 * The SMs left over also join the last unit where the device allows it
 * (`tail`: the split's remainder and the last units make one green-context
 * descriptor, cuDevResourceGenerateDesc): a range that ends at the last unit holds them, so
 * they work whenever the last unit does, not only while one batch holds
 * every unit. The latency tables and knee curves measure the ranges that
 * start at unit 0 (ds_units_range_sms), so a share placed at the end runs
 * a little faster than planned, never slower.
 * One rule for the executors, the latency model, the knee curves and the
 * utilization figures, so that they agree on what a share is.
 */
#ifndef DS_UTIL_UNITS_H
#define DS_UTIL_UNITS_H

#include <stdbool.h>
#include <stdint.h>

#include "dstack.h"

/* SMs of the range of every unit: sm_count under green contexts when the
 * units leave SMs over, n_units x unit_sms otherwise. */
static inline uint32_t ds_units_whole_sms(dstack_partitioning partitioning, uint32_t sm_count, uint32_t unit_sms,
                                          uint32_t n_units)
{
    uint64_t held = (uint64_t)unit_sms * n_units;
    if (partitioning == DSTACK_PARTITION_GREEN_CTX && sm_count > held)
        return sm_count;
    return held > UINT32_MAX ? UINT32_MAX : (uint32_t)held;
}

/* SMs of a range of `units` units (1..n_units) when every unit holds
 * whole_sms (ds_units_whole_sms): whole_sms for every unit (more units
 * count as every unit), units x unit_sms for fewer. */
static inline uint32_t ds_units_sms(uint32_t whole_sms, uint32_t unit_sms, uint32_t n_units, uint32_t units)
{
    if (units >= n_units)
        return whole_sms;
    return units * unit_sms;
}

/* SMs of a range of `units` units on a device: the two above in one. */
static inline uint32_t ds_units_range_sms(dstack_partitioning partitioning, uint32_t sm_count, uint32_t unit_sms,
                                          uint32_t n_units, uint32_t units)
{
    return ds_units_sms(ds_units_whole_sms(partitioning, sm_count, unit_sms, n_units), unit_sms, n_units, units);
}

/* SMs no unit holds (0 without green contexts): the range of every unit
 * reaches them, and so does every range that ends at the last unit when
 * the device lets them join it (ds_units_span_sms). */
static inline uint32_t ds_units_leftover(dstack_partitioning partitioning, uint32_t sm_count, uint32_t unit_sms,
                                         uint32_t n_units)
{
    return ds_units_whole_sms(partitioning, sm_count, unit_sms, n_units) - unit_sms * n_units;
}

/* SMs of the range (first, count) where it lies on the device: the range
 * of every unit is the whole device; a range of fewer units holds its
 * units, and the SMs left over too when it ends at the last unit and
 * `tail` says they join it there. */
static inline uint32_t ds_units_span_sms(dstack_partitioning partitioning, uint32_t sm_count, uint32_t unit_sms,
                                         uint32_t n_units, bool tail, uint32_t first, uint32_t count)
{
    uint32_t sms = ds_units_range_sms(partitioning, sm_count, unit_sms, n_units, count);
    if (tail && count < n_units && (uint64_t)first + count >= n_units)
        sms += ds_units_leftover(partitioning, sm_count, unit_sms, n_units);
    return sms;
}

#endif
