/* api_common.h - helpers shared by the integration tests (public API only). */
#ifndef API_COMMON_H
#define API_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack.h"

#define TINY_IN_FLOATS (3 * 8 * 8)
#define TINY_OUT_FLOATS 5
#define TINY_SAMPLES 4

static const char *test_data_dir(void)
{
    const char *d = getenv("DSTACK_TEST_DATA");
    return d ? d : "tests/data";
}

static void test_data_path(char *buf, size_t n, const char *file)
{
    snprintf(buf, n, "%s/%s", test_data_dir(), file);
}

/* Loads the tiny model's 4 inputs and ONNX Runtime's 4 outputs. */
static int load_tiny_reference(float in[TINY_SAMPLES][TINY_IN_FLOATS], float out[TINY_SAMPLES][TINY_OUT_FLOATS])
{
    char p[512];
    test_data_path(p, sizeof p, "tiny_cnn.input.bin");
    FILE *f = fopen(p, "rb");
    if (!f)
        return -1;
    size_t a = fread(in, sizeof(float), TINY_SAMPLES * TINY_IN_FLOATS, f);
    fclose(f);
    test_data_path(p, sizeof p, "tiny_cnn.output.bin");
    f = fopen(p, "rb");
    if (!f)
        return -1;
    size_t b = fread(out, sizeof(float), TINY_SAMPLES * TINY_OUT_FLOATS, f);
    fclose(f);
    return a == TINY_SAMPLES * TINY_IN_FLOATS && b == TINY_SAMPLES * TINY_OUT_FLOATS ? 0 : -1;
}

static dstack_status open_cpu(dstack_ctx **ctx, uint32_t queue_capacity)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.cpu_threads = 1;
    if (queue_capacity)
        o.queue_capacity = queue_capacity;
    return dstack_create(&o, ctx);
}

static dstack_status register_tiny(dstack_ctx *ctx, uint32_t max_batch, uint64_t slo_us, dstack_model **m)
{
    char p[512];
    test_data_path(p, sizeof p, "tiny_cnn.onnx");
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_FILE;
    d.path = p;
    d.max_batch = max_batch;
    d.slo_us = slo_us;
    return dstack_register_model(ctx, &d, m);
}

/* A request of one input and one output, the rest as dstack_request_init
 * leaves it. */
static inline dstack_request io_request(const dstack_buffer *in, dstack_buffer *out)
{
    dstack_request r;
    dstack_request_init(&r);
    r.inputs = in;
    r.n_inputs = 1;
    r.outputs = out;
    r.n_outputs = 1;
    return r;
}

static double max_rel_err(const float *a, const float *ref, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)ref[i]) / (fabs((double)ref[i]) + 1e-6);
        if (!(e <= worst))
            worst = e; /* NaN propagates as the worst */
    }
    return worst;
}

#endif
