/* analytic.c - see analytic.h. */
#include "knee/analytic.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim/kernels.h"
#include "util/error.h"
#include "util/units.h"

dstack_status ds_knee_analytic(const ds_graph *g, uint32_t batch, const ds_sim_device *dev,
                               const ds_knee_params *params, ds_knee_curve *out)
{
    if (!g || !dev || !out || batch == 0)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "analytic knee: NULL argument or batch 0");
    if (dev->n_units == 0 || dev->n_units > 64)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "analytic knee: %u units (1..64)", dev->n_units);
    ds_sim_kernel *k = NULL;
    uint32_t n = 0;
    dstack_status st = ds_sim_kernels(g, batch, dev, &k, &n);
    if (st != DSTACK_OK)
        return st;
    ds_knee_curve c;
    memset(&c, 0, sizeof c);
    c.batch = batch;
    c.n_units = dev->n_units;
    c.unit_sms = dev->n_units == 1 ? dev->sm_count : dev->unit_sms;
    double host = ds_sim_host_bytes(g, batch);
    for (uint32_t u = 1; u <= c.n_units && st == DSTACK_OK; u++) {
        uint64_t ns = 0;
        c.sms[u - 1] = ds_units_range_sms(dev->partitioning, dev->sm_count, c.unit_sms, c.n_units, u);
        st = ds_sim_alone_ns(dev, k, n, u, host, &ns);
        c.us[u - 1] = (double)ns / 1e3;
    }
    free(k);
    if (st != DSTACK_OK)
        return st;
    st = ds_knee_from_sweep(c.sms, c.us, c.n_units, params, &c.knee);
    if (st != DSTACK_OK)
        return st;
    c.knee_units = ds_knee_units(c.knee.knee_sms, c.unit_sms, c.n_units);
    *out = c;
    return DSTACK_OK;
}

/* ---- from a kernel trace ---- */

void ds_sm_limits_hopper(ds_sm_limits *out)
{
    *out = (ds_sm_limits){.max_threads = 2048,
                          .max_blocks = 32,
                          .warp_size = 32,
                          .regs = 65536,
                          .reg_unit = 256,
                          .max_regs_per_thread = 255,
                          .sub_partitions = 4,
                          .smem = 233472,
                          .smem_unit = 128,
                          .smem_reserved_per_block = 1024,
                          .smem_max_per_block = 232448};
}

static uint64_t round_up(uint64_t x, uint64_t unit)
{
    return unit ? (x + unit - 1) / unit * unit : x;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

uint32_t ds_occupancy_blocks_per_sm(const ds_sm_limits *lim, uint32_t threads, uint32_t regs, uint32_t smem_bytes,
                                    uint32_t smem_config)
{
    if (!lim || threads == 0 || lim->warp_size == 0 || threads > lim->max_threads)
        return 0;
    uint32_t warps = (threads + lim->warp_size - 1) / lim->warp_size;
    uint32_t blocks = min_u32(lim->max_blocks, lim->max_threads / lim->warp_size / warps);
    if (regs > 0) {
        /* registers go to warps in units, each sub-partition on its own */
        uint64_t per_warp = round_up((uint64_t)regs * lim->warp_size, lim->reg_unit);
        uint64_t per_block_hw = per_warp * round_up(warps, lim->sub_partitions);
        if (regs > lim->max_regs_per_thread || per_block_hw > lim->regs || per_warp * warps > lim->regs)
            return 0;
        uint64_t warps_per_sub = (lim->regs / lim->sub_partitions) / per_warp;
        blocks = min_u32(blocks, (uint32_t)(warps_per_sub * lim->sub_partitions / warps));
    }
    uint64_t smem = round_up((uint64_t)smem_bytes + lim->smem_reserved_per_block, lim->smem_unit);
    if (smem > (uint64_t)lim->smem_max_per_block + lim->smem_reserved_per_block)
        return 0;
    uint64_t per_sm = smem_config >= smem && smem_config <= lim->smem ? smem_config : lim->smem;
    if (smem > 0)
        blocks = (uint32_t)(per_sm / smem < blocks ? per_sm / smem : blocks);
    return blocks;
}

static double waves(uint64_t blocks, uint32_t per_sm, uint32_t sms)
{
    uint64_t fit = (uint64_t)per_sm * sms;
    return (double)((blocks + fit - 1) / fit);
}

dstack_status ds_knee_analytic_trace(const ds_kernel_record *k, size_t n, uint32_t traced_sms, double total_us,
                                     uint32_t batch, uint32_t unit_sms, uint32_t n_units,
                                     const ds_sm_limits *lim, const ds_knee_params *params, ds_trace_curve *out)
{
    if (!k || !lim || !out || n == 0 || traced_sms == 0 || unit_sms == 0 || n_units == 0 || n_units > 64 ||
        !isfinite(total_us))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "analytic knee from a trace: %zu kernels, %u traced SMs, %u units of %u SMs", n, traced_sms,
                       n_units, unit_sms);
    ds_trace_curve t;
    memset(&t, 0, sizeof t);
    t.curve.batch = batch;
    t.curve.n_units = n_units;
    t.curve.unit_sms = unit_sms;
    for (size_t i = 0; i < n; i++)
        if (k[i].end_ns < k[i].start_ns)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "analytic knee from a trace: kernel %zu ends before it starts",
                           i);
    /* the trace is taken on every unit, the whole device (util/units.h) */
    uint32_t whole = traced_sms > n_units * unit_sms ? traced_sms : n_units * unit_sms;
    for (size_t i = 0; i < n; i++) { /* each kernel's occupancy and waves at S0 once, its time at every share */
        uint32_t p = ds_occupancy_blocks_per_sm(lim, k[i].block_threads, k[i].regs_per_thread, k[i].smem_bytes,
                                                k[i].smem_config);
        if (p == 0) {
            p = 1;
            t.unknown_occupancy++;
        }
        uint64_t blocks = k[i].grid_blocks ? k[i].grid_blocks : 1;
        double d = (double)(k[i].end_ns - k[i].start_ns) / 1e3, w0 = waves(blocks, p, traced_sms);
        t.kernel_us += d;
        for (uint32_t u = 1; u <= n_units; u++)
            t.curve.us[u - 1] += d * waves(blocks, p, ds_units_sms(whole, unit_sms, n_units, u)) / w0;
    }
    t.outside_us = total_us > t.kernel_us ? total_us - t.kernel_us : 0;
    for (uint32_t u = 1; u <= n_units; u++) {
        t.curve.sms[u - 1] = ds_units_sms(whole, unit_sms, n_units, u);
        t.curve.us[u - 1] += t.outside_us;
    }
    dstack_status st = ds_knee_from_sweep(t.curve.sms, t.curve.us, n_units, params, &t.curve.knee);
    if (st != DSTACK_OK)
        return st;
    t.curve.knee_units = ds_knee_units(t.curve.knee.knee_sms, unit_sms, n_units);
    *out = t;
    return DSTACK_OK;
}
