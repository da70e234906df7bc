/* register_time - how long dstack_register_model takes the first time (it
 * profiles) and again with the profile cache (it does not).
 *
 *   build/bench/register_time [MODEL] [--backend sim|cpu|cuda] [--slo-ms N] [--reps N]
 *
 * A fresh cache directory under /tmp; for each rep, a new context registers
 * the model: the first rep misses and profiles, the others hit. Prints each
 * registration's wall time and the log lines that say which it was (cache
 * hit/miss, profiled N points), then one summary line:
 *   model=… backend=… first_ms=… cached_ms=… (median of the cached reps)
 * On cpu the model is registered with an SLO (default 25 ms): without one
 * the cpu backend profiles nothing at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dstack.h"
#include "util/clock.h"

static void on_log(void *user, dstack_log_level level, const char *msg)
{
    (void)user;
    if (level >= DSTACK_LOG_INFO && (strstr(msg, "cache") || strstr(msg, "profiled") || strstr(msg, "share") ||
                                     strstr(msg, "batch")))
        printf("    log: %s\n", msg);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *model = "resnet50", *backend = "sim";
    double slo_ms = 25;
    int reps = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--slo-ms") && i + 1 < argc)
            slo_ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (argv[i][0] != '-')
            model = argv[i];
        else {
            fprintf(stderr, "usage: %s [MODEL] [--backend sim|cpu|cuda] [--slo-ms N] [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 2)
        reps = 2;
    char dir[] = "/tmp/dstack-register-time-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    double *ms = calloc((size_t)reps, sizeof *ms);
    for (int r = 0; r < reps; r++) {
        dstack_options o;
        dstack_options_init(&o);
        o.backend = !strcmp(backend, "cpu") ? DSTACK_BACKEND_CPU
                    : !strcmp(backend, "cuda") ? DSTACK_BACKEND_CUDA : DSTACK_BACKEND_SIM;
        o.profile_cache_dir = dir;
        o.log_fn = on_log;
        o.log_level = DSTACK_LOG_INFO;
        dstack_ctx *ctx = NULL;
        if (dstack_create(&o, &ctx) != DSTACK_OK) {
            fprintf(stderr, "register_time: %s\n", dstack_last_error());
            return 1;
        }
        dstack_model_desc d;
        dstack_model_desc_init(&d);
        d.source = DSTACK_SOURCE_ZOO;
        d.path = model;
        d.seed = 1;
        d.slo_us = (uint64_t)(slo_ms * 1e3);
        dstack_model *m = NULL;
        uint64_t t0 = ds_monotonic_ns();
        dstack_status st = dstack_register_model(ctx, &d, &m);
        ms[r] = (double)(ds_monotonic_ns() - t0) / 1e6;
        if (st != DSTACK_OK) {
            fprintf(stderr, "register_time: %s\n", dstack_last_error());
            return 1;
        }
        printf("rep %d (%s): %.1f ms\n", r, r == 0 ? "first, empty cache" : "cached", ms[r]);
        dstack_destroy(ctx);
    }
    double first = ms[0];
    qsort(ms + 1, (size_t)reps - 1, sizeof *ms, cmp_double);
    printf("model=%s backend=%s first_ms=%.1f cached_ms=%.1f\n", model, backend, first, ms[1 + (reps - 1) / 2]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "register_time: could not remove %s\n", dir);
    free(ms);
    return 0;
}
