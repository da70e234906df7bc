/* hist.h - a log-linear histogram of latencies.
 *
 * 32 linear sub-buckets per power of two: any recorded value is known to
 * within 1/32 of itself, in 15 KiB per histogram, with O(1) recording and no
 * allocation on the request path. Chosen over keeping every sample (unbounded
 * memory in a server that runs for weeks) and over a fixed-width histogram
 * (either too coarse at 100 us or too short at 10 s). */
#ifndef DS_UTIL_HIST_H
#define DS_UTIL_HIST_H

#include <stdint.h>

#define DS_HIST_SUB_BITS 5
#define DS_HIST_SUB (1u << DS_HIST_SUB_BITS)
#define DS_HIST_BUCKETS (DS_HIST_SUB + (64 - DS_HIST_SUB_BITS) * DS_HIST_SUB)

typedef struct ds_hist {
    uint64_t count;
    uint64_t max;
    uint64_t buckets[DS_HIST_BUCKETS];
} ds_hist;

void ds_hist_record(ds_hist *h, uint64_t value);
/* The value at quantile q in [0, 1] (the lower bound of its bucket), 0 if empty. */
uint64_t ds_hist_quantile(const ds_hist *h, double q);
/* Bucket index and its lower bound (exposed for tests). */
uint32_t ds_hist_bucket(uint64_t value);
uint64_t ds_hist_bucket_floor(uint32_t bucket);

#endif
