/* sim_speed - how fast the discrete-event driver replays a workload.
 *
 *   build/bench/sim_speed [--policy dstack|temporal|static_spatial|streams|ideal] [--seconds S]
 *
 * Replays S (default 60) virtual seconds of four zoo models (resnet50,
 * mobilenet_v2, vgg19, alexnet; 25 ms SLO) at 1000 requests/s in total
 * (Poisson, equal rates) through the discrete-event driver, the real policy
 * code and the simulated H100, twice, and checks that both runs give the
 * same completions (a checksum over every completion's fields). Wall time
 * is for one replay on one core, models' planning excluded (the line
 * before the last gives its CPU time too, the figure to read on a shared
 * machine). Last line:
 * `virtual_s=S wall_s=X requests=N`.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch/latency.h"
#include "sched/des.h"
#include "sim/sim.h"
#include "util/clock.h"

typedef struct sums {
    uint64_t n, ok, hash;
} sums;

static void on_completion(void *arg, uint32_t model, const dstack_completion *c, uint32_t samples)
{
    sums *s = arg;
    s->n++;
    s->ok += c->status == DSTACK_OK;
    uint64_t v[6] = {model, (uint64_t)c->status, c->batch_size, c->start_ns, c->end_ns, samples};
    for (int i = 0; i < 6; i++)
        s->hash = (s->hash ^ v[i]) * 1099511628211ull;
}

static double cpu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int replay(dstack_policy pol, double seconds, double *wall_s, double *cpu_s, sums *out, size_t *n_req)
{
    const char *names[4] = {"resnet50", "mobilenet_v2", "vgg19", "alexnet"};
    ds_executor_config ec = {0, DSTACK_PARTITION_GREEN_CTX, 0, 0};
    ds_executor *ex;
    if (ds_exec_sim_create(&ec, &ex) != DSTACK_OK)
        return -1;
    if (pol == DSTACK_POLICY_IDEAL)
        ds_sim_exec_set_ideal(ex, true);
    ds_des_config dc = {ds_policy_find(pol), ex, NULL, 4096};
    ds_des *d;
    if (ds_des_create(&dc, &d) != DSTACK_OK)
        return -1;
    ds_graph *g[4];
    ds_exec_plan *plan[4];
    ds_latency_model *lat[4];
    bool knee = pol == DSTACK_POLICY_DSTACK || pol == DSTACK_POLICY_STATIC_SPATIAL;
    for (int i = 0; i < 4; i++) {
        ds_zoo_params zp = {224, 1000, 1};
        ds_plan_options po = {32, DSTACK_PRECISION_FP32};
        ds_model_plan mp;
        if (ds_zoo_build(names[i], &zp, &g[i]) != DSTACK_OK || ds_graph_fold(g[i]) != DSTACK_OK ||
            ex->ops->plan_create(ex, g[i], &po, &plan[i]) != DSTACK_OK ||
            ds_latency_model_build(ex, plan[i], g[i], false, 32, &lat[i]) != DSTACK_OK ||
            ds_plan_model(lat[i], 25000, 250.0, knee ? 0 : ex->device.n_units, 0, &mp) != DSTACK_OK)
            return -1;
        ds_sched_model_config mc;
        memset(&mc, 0, sizeof mc);
        mc.plan = plan[i];
        ds_des_io_from_graph(g[i], &mc);
        mc.batch_size = mp.batch;
        mc.max_batch = 32;
        mc.unit_count = knee ? mp.units : ex->device.n_units;
        mc.slo_ns = 25000000;
        mc.latency = ds_latency_sched_ns;
        mc.latency_arg = lat[i];
        if (ds_des_add_model(d, &mc) != DSTACK_OK)
            return -1;
    }
    /* Poisson arrivals, 1000/s in total, merged by drawing the model */
    size_t n = (size_t)(seconds * 1000 * 1.2) + 64, k = 0;
    ds_des_arrival *tr = malloc(n * sizeof *tr);
    uint64_t st = 12345;
    double t = 0;
    for (;;) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        double u = ((st >> 11) + 0.5) / 9007199254740992.0;
        t += -log(u) / 1000.0;
        if (t >= seconds || k == n)
            break;
        tr[k++] = (ds_des_arrival){(uint64_t)(t * 1e9), (uint32_t)(st >> 60) % 4, 1};
    }
    memset(out, 0, sizeof *out);
    out->hash = 1469598103934665603ull;
    uint64_t t0 = ds_monotonic_ns();
    double c0 = cpu_now_s();
    dstack_status rs = ds_des_run(d, tr, k, 0, on_completion, out);
    *wall_s = (double)(ds_monotonic_ns() - t0) / 1e9;
    *cpu_s = cpu_now_s() - c0;
    *n_req = k;
    free(tr);
    ds_des_destroy(d);
    for (int i = 0; i < 4; i++) {
        ex->ops->plan_destroy(ex, plan[i]);
        free(lat[i]);
        ds_graph_free(g[i]);
    }
    ex->ops->destroy(ex);
    return rs == DSTACK_OK ? 0 : -1;
}

int main(int argc, char **argv)
{
    dstack_policy pol = DSTACK_POLICY_DSTACK;
    double seconds = 60;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--policy") && i + 1 < argc) {
            const char *p = argv[++i];
            pol = !strcmp(p, "temporal")         ? DSTACK_POLICY_TEMPORAL
                  : !strcmp(p, "streams")        ? DSTACK_POLICY_STREAMS
                  : !strcmp(p, "static_spatial") ? DSTACK_POLICY_STATIC_SPATIAL
                  : !strcmp(p, "ideal")          ? DSTACK_POLICY_IDEAL
                                                 : DSTACK_POLICY_DSTACK;
        } else {
            fprintf(stderr, "usage: %s [--policy NAME] [--seconds S]\n", argv[0]);
            return 2;
        }
    }
    sums a, b;
    double wa, wb, ca, cb;
    size_t n;
    if (replay(pol, seconds, &wa, &ca, &a, &n) != 0 || replay(pol, seconds, &wb, &cb, &b, &n) != 0) {
        fprintf(stderr, "sim_speed: %s\n", dstack_last_error());
        return 1;
    }
    printf("policy=%s completions=%llu ok=%llu checksum=%016llx second_run=%016llx %s\n",
           ds_policy_find(pol)->name, (unsigned long long)a.n, (unsigned long long)a.ok,
           (unsigned long long)a.hash, (unsigned long long)b.hash, a.hash == b.hash && a.n == b.n ? "identical" : "DIFFERENT");
    /* cpu_s: the replay's CPU time, what wall time is on a core of its own
     * (on a shared machine wall time includes waiting for the core) */
    printf("cpu_s=%.3f\n", ca < cb ? ca : cb);
    printf("virtual_s=%.0f wall_s=%.3f requests=%zu\n", seconds, wa < wb ? wa : wb, n);
    return a.hash == b.hash && a.n == b.n && a.n == n ? 0 : 1;
}
