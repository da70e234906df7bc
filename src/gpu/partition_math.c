/* partition_math.c - see partition_math.h. */
#include "gpu/partition_math.h"

#include <stdlib.h>

#include "util/error.h"

uint32_t ds_gpu_round_sms(uint32_t want_sms, uint32_t min_sms, uint32_t step_sms,
                          uint32_t total_sms) {
    if (min_sms == 0 || step_sms == 0 || total_sms == 0) return 0;
    if (want_sms <= min_sms) return min_sms < total_sms ? min_sms : total_sms;
    uint64_t steps = ((uint64_t)want_sms - min_sms + step_sms - 1) / step_sms;
    uint64_t sms = (uint64_t)min_sms + steps * step_sms;
    return sms < total_sms ? (uint32_t)sms : total_sms;
}

uint32_t ds_gpu_units_for_sms(uint32_t want_sms, uint32_t unit_sms) {
    if (unit_sms == 0) return 0;
    uint32_t u = (uint32_t)(((uint64_t)want_sms + unit_sms - 1) / unit_sms);
    return u ? u : 1;
}

uint32_t ds_gpu_units_upper_bound(uint32_t sm_count, uint32_t unit_sms) {
    return unit_sms ? sm_count / unit_sms : 0;
}

dstack_status ds_gpu_range_check(uint32_t n_units, uint32_t first_unit, uint32_t unit_count) {
    if (unit_count == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "partition of 0 units (device has %u)",
                       n_units);
    if (first_unit >= n_units || unit_count > n_units - first_unit)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "partition units [%u, %u+%u) do not fit the device's %u units",
                       first_unit, first_unit, unit_count, n_units);
    return DSTACK_OK;
}

uint32_t ds_gpu_mps_sms(uint32_t total_sms, const char *pct_text) {
    if (!pct_text || !*pct_text) return total_sms;
    char *end = NULL;
    double pct = strtod(pct_text, &end);
    while (end && (*end == ' ' || *end == '\t' || *end == '\n')) end++;
    if (!end || *end != '\0' || !(pct > 0.0) || pct > 100.0) return total_sms;
    uint32_t sms = (uint32_t)((double)total_sms * pct / 100.0);
    return sms ? sms : 1;
}

dstack_status ds_range_cache_init(ds_range_cache *c, uint32_t n_units) {
    c->n_units = 0;
    c->slots = NULL;
    if (n_units == 0 || n_units > 4096)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "range cache for %u units", n_units);
    c->slots = calloc((size_t)n_units * n_units, sizeof *c->slots);
    if (!c->slots) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "range cache of %u units", n_units);
    c->n_units = n_units;
    return DSTACK_OK;
}

size_t ds_range_cache_index(uint32_t n_units, uint32_t first_unit, uint32_t unit_count) {
    return (size_t)first_unit * n_units + (unit_count - 1);
}

static int range_ok(const ds_range_cache *c, uint32_t first, uint32_t count) {
    return c->slots && count > 0 && first < c->n_units && count <= c->n_units - first;
}

void *ds_range_cache_get(const ds_range_cache *c, uint32_t first_unit, uint32_t unit_count) {
    if (!range_ok(c, first_unit, unit_count)) return NULL;
    return c->slots[ds_range_cache_index(c->n_units, first_unit, unit_count)];
}

dstack_status ds_range_cache_put(ds_range_cache *c, uint32_t first_unit, uint32_t unit_count,
                                 void *obj) {
    if (!range_ok(c, first_unit, unit_count))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "range cache: units [%u, +%u) of %u",
                       first_unit, unit_count, c->n_units);
    c->slots[ds_range_cache_index(c->n_units, first_unit, unit_count)] = obj;
    return DSTACK_OK;
}

uint32_t ds_range_cache_count(const ds_range_cache *c) {
    uint32_t n = 0;
    if (!c->slots) return 0;
    for (size_t i = 0; i < (size_t)c->n_units * c->n_units; i++) n += c->slots[i] != NULL;
    return n;
}

void ds_range_cache_destroy(ds_range_cache *c, void (*free_fn)(void *ud, void *obj), void *ud) {
    if (c->slots && free_fn)
        for (size_t i = 0; i < (size_t)c->n_units * c->n_units; i++)
            if (c->slots[i]) free_fn(ud, c->slots[i]);
    free(c->slots);
    c->slots = NULL;
    c->n_units = 0;
}
