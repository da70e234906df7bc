/* register_scale.c - registration time of hostile-sized models (issue 14):
 * a Relu chain and a Dropout-with-mask chain of N nodes, and N initializer
 * names colliding under unseeded FNV-1a, on the cpu backend.
 *
 *   register_scale N...      e.g. register_scale 100000 1000000
 *
 * Prints a markdown row per model: nodes, file size, wall and CPU seconds
 * of dstack_register_model (CPU time is what a loaded machine does not
 * distort), and the outcome. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>

#include "dstack.h"
#include "hostile_models.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void measure(dstack_ctx *ctx, const char *what, uint32_t n, pbuf b)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_BYTES;
    d.bytes = b.p;
    d.n_bytes = b.n;
    d.max_batch = 1;
    dstack_model *m;
    double t0 = now_s(), c0 = cpu_s();
    dstack_status st = dstack_register_model(ctx, &d, &m);
    double t1 = now_s(), c1 = cpu_s();
    printf("| %s | %u | %.1f MB | %.2f s | %.2f s | %s |\n", what, n, b.n / 1e6, t1 - t0, c1 - c0,
           st == DSTACK_OK ? "ok" : dstack_last_error());
    if (st == DSTACK_OK)
        dstack_unregister_model(ctx, m);
    hm_free(&b);
}

int main(int argc, char **argv)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.cpu_threads = 1;
    dstack_ctx *ctx;
    if (dstack_create(&o, &ctx) != DSTACK_OK)
        return 1;
    for (int i = 1; i < argc; i++) {
        uint32_t n = (uint32_t)strtoul(argv[i], NULL, 10);
        measure(ctx, "Relu chain", n, hm_chain(n, "Relu", 0));
        measure(ctx, "Dropout chain, mask outputs", n, hm_chain(n, "Dropout", 1));
        if (n <= (1u << HM_COLLIDE_POSITIONS))
            measure(ctx, "initializer names colliding in FNV-1a", n, hm_colliding_inits(n));
    }
    dstack_destroy(ctx);
    return 0;
}
