/* partition_math.h - the pure arithmetic of SM partitions (no CUDA here).
 *
 * Everything the gpu module decides without asking the device lives here,
 * so it is unit-tested on machines without a GPU (tests/test_gpu_partition.c):
 * rounding an SM request to the green-context granularity, checking a unit
 * range against the device, the MPS active-thread percentage, and the cache
 * of per-range partition objects keyed by (first_unit, unit_count).
 *
 * Granularity (read on an H100 SXM, driver 580, CUDA 13.0): the SM resource
 * reports minSmPartitionSize = 8 and smCoscheduledAlignment = 8; splitting
 * 132 SMs into groups of 8 gives 15 groups and a remainder of 12 SMs (the
 * driver keeps groups inside GPCs, so 132 / 8 = 16 is NOT what you get).
 * Hence the unit count always comes from the driver's split, never from
 * sm_count / unit_sms; ds_gpu_units_upper_bound is only an upper bound.
 */
#ifndef DS_GPU_PARTITION_MATH_H
#define DS_GPU_PARTITION_MATH_H

#include <stddef.h>
#include <stdint.h>

#include "dstack.h"

/* The smallest partition size >= want_sms that the hardware can grant:
 * at least min_sms, then multiples of step_sms above it, capped at
 * total_sms. 0 when any argument is 0. */
uint32_t ds_gpu_round_sms(uint32_t want_sms, uint32_t min_sms, uint32_t step_sms,
                          uint32_t total_sms);

/* Units of unit_sms needed to hold want_sms SMs (ceil), at least 1. */
uint32_t ds_gpu_units_for_sms(uint32_t want_sms, uint32_t unit_sms);

/* sm_count / unit_sms: the most units a split can give (the driver may give fewer). */
uint32_t ds_gpu_units_upper_bound(uint32_t sm_count, uint32_t unit_sms);

/* OK when [first_unit, first_unit + unit_count) lies inside [0, n_units) and
 * unit_count > 0; INVALID_ARGUMENT with a message otherwise (no overflow). */
dstack_status ds_gpu_range_check(uint32_t n_units, uint32_t first_unit, uint32_t unit_count);

/* MPS: SMs available to this process for CUDA_MPS_ACTIVE_THREAD_PERCENTAGE
 * `pct_text` (NULL or unparsable or out of (0,100] = no limit: total_sms).
 * MPS rounds the share down; at least 1 SM. */
uint32_t ds_gpu_mps_sms(uint32_t total_sms, const char *pct_text);

/* A cache of one object per unit range, n_units * n_units slots indexed by
 * (first_unit, unit_count - 1). Not thread-safe: the owner locks. */
typedef struct ds_range_cache {
    uint32_t n_units;
    void **slots;
} ds_range_cache;

dstack_status ds_range_cache_init(ds_range_cache *c, uint32_t n_units);
/* The slot index of a valid range (caller checked it). */
size_t ds_range_cache_index(uint32_t n_units, uint32_t first_unit, uint32_t unit_count);
/* The cached object, NULL if none or the range is invalid. */
void *ds_range_cache_get(const ds_range_cache *c, uint32_t first_unit, uint32_t unit_count);
/* Store obj (range must be valid; INVALID_ARGUMENT otherwise). */
dstack_status ds_range_cache_put(ds_range_cache *c, uint32_t first_unit, uint32_t unit_count,
                                 void *obj);
/* Number of cached objects. */
uint32_t ds_range_cache_count(const ds_range_cache *c);
/* Call free_fn(ud, obj) on every cached object, then free the slots. */
void ds_range_cache_destroy(ds_range_cache *c, void (*free_fn)(void *ud, void *obj), void *ud);

#endif
