/* fuzz_onnx.c - libFuzzer: ONNX bytes -> register -> one request ->
 * unregister, through the public API on the cpu backend.
 *
 * Any input must end in a status, never a crash, a hang or a huge
 * allocation: the budgets are lowered so that an input the library accepts
 * runs in milliseconds, and libFuzzer's -timeout and -rss_limit_mb catch
 * the rest. Seeds: the ONNX conformance models (make fuzz copies them). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dstack.h"

static dstack_ctx *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.cpu_threads = 1;
    /* Small enough that an accepted model runs well under the 10 s per-input
     * timeout in an ASan build on a loaded 2-core machine. */
    o.max_model_memory_bytes = 64u << 20;
    o.max_request_ops = 5000000;
    if (dstack_create(&o, &ctx) != DSTACK_OK)
        abort();
    return 0;
}

static void run_one_request(dstack_model *m)
{
    dstack_model_info info;
    dstack_model_info_init(&info);
    if (dstack_model_info_get(ctx, m, &info) != DSTACK_OK)
        abort();
    dstack_buffer in[DSTACK_MAX_IO], out[DSTACK_MAX_IO];
    for (uint32_t i = 0; i < info.n_inputs; i++) {
        in[i].bytes = info.inputs[i].bytes;
        in[i].data = calloc(1, in[i].bytes);
    }
    for (uint32_t i = 0; i < info.n_outputs; i++) {
        out[i].bytes = info.outputs[i].bytes;
        out[i].data = malloc(out[i].bytes);
    }
    dstack_request r;
    dstack_request_init(&r);
    r.inputs = in;
    r.n_inputs = info.n_inputs;
    r.outputs = out;
    r.n_outputs = info.n_outputs;
    dstack_ticket t;
    if (dstack_submit(ctx, m, &r, &t) == DSTACK_OK) {
        dstack_completion c;
        size_t n = 0;
        while (n == 0)
            if (dstack_poll(ctx, &c, 1, -1, &n) != DSTACK_OK || (n == 1 && c.ticket != t))
                abort(); /* one request in flight: its completion comes next */
    }
    for (uint32_t i = 0; i < info.n_inputs; i++)
        free(in[i].data);
    for (uint32_t i = 0; i < info.n_outputs; i++)
        free(out[i].data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_BYTES;
    d.bytes = data;
    d.n_bytes = size;
    d.max_batch = 2;
    dstack_model *m = NULL;
    dstack_status st = dstack_register_model(ctx, &d, &m);
    if (st == DSTACK_ERR_INTERNAL)
        abort(); /* a bug by definition */
    if (st != DSTACK_OK)
        return 0;
    run_one_request(m);
    if (dstack_unregister_model(ctx, m) != DSTACK_OK)
        abort();
    return 0;
}
