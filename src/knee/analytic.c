/* analytic.c - see analytic.h. */
#include "knee/analytic.h"

#include <stdlib.h>
#include <string.h>

#include "sim/kernels.h"
#include "util/error.h"

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
        c.sms[u - 1] = u * c.unit_sms;
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
