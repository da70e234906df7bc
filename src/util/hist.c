#include "util/hist.h"

static uint32_t floor_log2(uint64_t v) { return 63u - (uint32_t)__builtin_clzll(v); }

uint32_t ds_hist_bucket(uint64_t value)
{
    if (value < DS_HIST_SUB)
        return (uint32_t)value;
    uint32_t e = floor_log2(value);
    uint32_t sub = (uint32_t)(value >> (e - DS_HIST_SUB_BITS)) & (DS_HIST_SUB - 1);
    return DS_HIST_SUB + (e - DS_HIST_SUB_BITS) * DS_HIST_SUB + sub;
}

uint64_t ds_hist_bucket_floor(uint32_t bucket)
{
    if (bucket < DS_HIST_SUB)
        return bucket;
    uint32_t e = (bucket - DS_HIST_SUB) / DS_HIST_SUB + DS_HIST_SUB_BITS;
    uint64_t sub = (bucket - DS_HIST_SUB) % DS_HIST_SUB;
    return (1ull << e) + (sub << (e - DS_HIST_SUB_BITS));
}

void ds_hist_record(ds_hist *h, uint64_t value)
{
    h->buckets[ds_hist_bucket(value)]++;
    h->count++;
    if (value > h->max)
        h->max = value;
}

uint64_t ds_hist_quantile(const ds_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    /* rank of the sample at quantile q, 1-based, nearest-rank method */
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t b = 0; b < DS_HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank)
            return ds_hist_bucket_floor(b);
    }
    return h->max;
}
