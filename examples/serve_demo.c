/* serve_demo.c - three zoo models served at once from one context.
 *
 * Registers mobilenet_v2, squeezenet and resnet18, measures each one's
 * single-request latency, gives each an SLO of 8x that, then has two threads
 * submit Poisson arrivals at about half of what the device can serve while
 * the main thread polls. Prints per-model throughput, p50/p99 latency and
 * SLO attainment.
 *
 *   serve_demo [--backend auto|cpu|cuda|sim] [--policy dstack|temporal|streams|static_spatial|ideal]
 *              [--requests N] [--image PIXELS] [--samples N]
 *
 * Defaults: backend auto, policy dstack (the library's default), 300
 * requests, image 224 on cuda and sim and 112 on cpu (so it ends within a
 * minute on two cores without a GPU), 1 sample per request. With --samples
 * N each request carries N images (dstack_request.n_samples, buffers of N
 * samples; max_batch is raised to N when N is over 8): the calibration, the
 * SLOs and the arrival rate are then those of N-sample requests, and the
 * report counts samples as well as requests. The sim backend is a simulated H100:
 * it computes no outputs (they are zeros) but takes the time the GPU would.
 *
 * Build against an installed libdstack:
 *   cc serve_demo.c $(pkg-config --cflags --libs dstack) -lpthread -lm
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dstack.h"

#define N_MODELS 3
static const char *const model_names[N_MODELS] = {"mobilenet_v2", "squeezenet", "resnet18"};

typedef struct demo_model {
    dstack_model *handle;
    dstack_model_info info;
    float *input;        /* one input, shared read-only by every request */
    float *outputs;      /* one output per request */
    uint64_t solo_us;    /* measured single-request latency */
    uint64_t slo_us;     /* 8 x solo_us: each request's deadline */
} demo_model;

typedef struct demo {
    dstack_ctx *ctx;
    demo_model models[N_MODELS];
    int requests;        /* in all */
    uint32_t samples;    /* per request */
    double rate_rps;     /* arrivals per second, all threads together */
    int submitted, refused;
    pthread_mutex_t lock;
} demo;

static int check(dstack_status st, const char *what)
{
    if (st == DSTACK_OK)
        return 0;
    fprintf(stderr, "serve_demo: %s: %s (%s)\n", what, dstack_strerror(st), dstack_last_error());
    return -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* One request (d->samples samples) to model m, its output in slot `slot`. */
static dstack_status submit(demo *d, int m, int slot, dstack_ticket *t)
{
    demo_model *dm = &d->models[m];
    size_t out_floats = dm->info.outputs[0].bytes / sizeof(float) * d->samples;
    dstack_buffer in = {dm->input, dm->info.inputs[0].bytes * d->samples};
    dstack_buffer out = {dm->outputs + (size_t)slot * out_floats, out_floats * sizeof(float)};
    dstack_request r;
    dstack_request_init(&r);
    r.n_samples = d->samples;
    r.inputs = &in;
    r.n_inputs = 1;
    r.outputs = &out;
    r.n_outputs = 1;
    r.user_data = (void *)(intptr_t)m;
    if (dm->slo_us)
        r.deadline_ns = dstack_now_ns(d->ctx) + dm->slo_us * 1000u;
    return dstack_submit(d->ctx, dm->handle, &r, t);
}

/* Single-request latency of each model, to size the SLOs and the load. */
static int calibrate(demo *d)
{
    for (int m = 0; m < N_MODELS; m++) {
        double best = 1e9;
        for (int rep = 0; rep < 2; rep++) {
            dstack_ticket t;
            double t0 = now_s();
            if (check(submit(d, m, 0, &t), "calibration submit"))
                return -1;
            dstack_completion c;
            size_t n = 0;
            if (check(dstack_poll(d->ctx, &c, 1, 60 * 1000000LL, &n), "calibration poll") || n != 1)
                return -1;
            double dt = now_s() - t0;
            if (dt < best)
                best = dt;
        }
        d->models[m].solo_us = (uint64_t)(best * 1e6);
        d->models[m].slo_us = 8 * d->models[m].solo_us;
    }
    return 0;
}

typedef struct submitter_arg {
    demo *d;
    int first, count;
    unsigned seed;
} submitter_arg;

static void *submitter(void *p)
{
    submitter_arg *a = p;
    demo *d = a->d;
    double per_thread_rate = d->rate_rps / 2.0;
    for (int k = 0; k < a->count; k++) {
        double u = (double)(rand_r(&a->seed) % 1000000 + 1) / 1000001.0;
        sleep_s(-log(u) / per_thread_rate); /* Poisson arrivals */
        int slot = a->first + k;
        int m = slot % N_MODELS;
        dstack_ticket t;
        dstack_status st = submit(d, m, slot / N_MODELS + 1, &t);
        pthread_mutex_lock(&d->lock);
        if (st == DSTACK_OK)
            d->submitted++;
        else
            d->refused++;
        pthread_mutex_unlock(&d->lock);
    }
    return NULL;
}

static int register_models(demo *d, uint32_t image)
{
    for (int m = 0; m < N_MODELS; m++) {
        demo_model *dm = &d->models[m];
        dstack_model_desc desc;
        dstack_model_desc_init(&desc);
        desc.source = DSTACK_SOURCE_ZOO;
        desc.path = model_names[m];
        desc.zoo_image_size = image;
        desc.max_batch = d->samples > 8 ? d->samples : 8;
        desc.seed = (uint64_t)m + 1;
        double t0 = now_s();
        printf("registering %-13s %ux%u ... ", model_names[m], image, image);
        fflush(stdout);
        if (check(dstack_register_model(d->ctx, &desc, &dm->handle), model_names[m]))
            return -1;
        dstack_model_info_init(&dm->info);
        dstack_model_info_get(d->ctx, dm->handle, &dm->info);
        printf("%.2f M params, %.2f GFLOP/request, %.2f s\n", (double)dm->info.param_count / 1e6,
               (double)dm->info.flops_per_request / 1e9, now_s() - t0);
        if (dm->info.sm_count)
            printf("  %-13s knee %u SMs, batch %u, predicted %.2f ms per batch\n", model_names[m],
                   dm->info.sm_count, dm->info.batch_size, (double)dm->info.predicted_latency_us / 1e3);
        size_t in_floats = dm->info.inputs[0].bytes / sizeof(float) * d->samples;
        size_t out_floats = dm->info.outputs[0].bytes / sizeof(float) * d->samples;
        /* dstack_host_alloc: page-locked on cuda, so inputs skip a staging copy */
        size_t out_bytes = ((size_t)d->requests / N_MODELS + 2) * out_floats * sizeof(float);
        if (check(dstack_host_alloc(d->ctx, in_floats * sizeof(float), (void **)&dm->input), "host_alloc") ||
            check(dstack_host_alloc(d->ctx, out_bytes, (void **)&dm->outputs), "host_alloc"))
            return -1;
        for (size_t i = 0; i < in_floats; i++)
            dm->input[i] = (float)sin((double)i * 0.01);
    }
    return 0;
}

static void report(demo *d, double elapsed)
{
    dstack_ctx_stats cs;
    dstack_ctx_stats_init(&cs);
    if (dstack_ctx_stats_get(d->ctx, &cs) == DSTACK_OK)
        printf("\npolicy %s: %llu batches, device utilization %.1f%%, cycle %.1f ms\n", cs.policy_name,
               (unsigned long long)cs.batches, 100.0 * cs.gpu_utilization, (double)cs.cycle_us / 1e3);
    printf("%-13s %8s %6s %7s %10s %9s %9s %7s %6s %6s%s\n", "model", "requests", "ok", "missed", "req/s",
           "p50 ms", "p99 ms", "batch", "SLO %", "share", d->samples > 1 ? "  samples/s" : "");
    for (int m = 0; m < N_MODELS; m++) {
        dstack_model_stats s;
        dstack_model_stats_init(&s);
        dstack_stats(d->ctx, d->models[m].handle, &s);
        /* the two calibration requests are in the counts too */
        printf("%-13s %8llu %6llu %7llu %10.1f %9.1f %9.1f %7.2f %6.1f %5.1f%%", model_names[m],
               (unsigned long long)s.submitted, (unsigned long long)s.completed_ok,
               (unsigned long long)s.deadline_missed, (double)s.completed_ok / elapsed,
               (double)s.latency_p50_us / 1e3, (double)s.latency_p99_us / 1e3, s.mean_batch,
               100.0 * s.slo_attainment, 100.0 * s.gpu_share);
        if (d->samples > 1) /* "batch" is samples per batch */
            printf(" %10.1f", (double)s.completed_ok * d->samples / elapsed);
        printf("\n");
    }
}

static const char *const policy_names[] = {"dstack", "temporal", "streams", "static_spatial", "ideal"};

/* A whole number in lo..hi, or -1 with a message naming the option. */
static long parse_count(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < lo || n > hi) {
        fprintf(stderr, "serve_demo: %s must be a whole number in %ld..%ld, got '%s'\n", opt, lo, hi, v);
        return -1;
    }
    return n;
}

static int parse_args(int argc, char **argv, dstack_backend *backend, dstack_policy *policy, int *requests,
                      uint32_t *image, uint32_t *samples)
{
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--backend") && v) {
            static const char *const names[] = {"auto", "cpu", "cuda", "sim"};
            int found = 0;
            for (int b = 0; b < 4; b++)
                if (!strcmp(v, names[b])) {
                    *backend = (dstack_backend)b;
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "serve_demo: unknown backend '%s' (auto, cpu, cuda or sim)\n", v);
                return -1;
            }
            i++;
        } else if (!strcmp(argv[i], "--policy") && v) {
            int found = 0;
            for (int p = 0; p < 5; p++)
                if (!strcmp(v, policy_names[p])) {
                    *policy = (dstack_policy)p;
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "serve_demo: unknown policy '%s'\n", v);
                return -1;
            }
            i++;
        } else if (!strcmp(argv[i], "--requests") && v) {
            long n = parse_count("--requests", v, 1, 10000000);
            if (n < 0)
                return -1;
            *requests = (int)n;
            i++;
        } else if (!strcmp(argv[i], "--image") && v) {
            long n = parse_count("--image", v, 1, 4096); /* the library says which sizes a model takes */
            if (n < 0)
                return -1;
            *image = (uint32_t)n;
            i++;
        } else if (!strcmp(argv[i], "--samples") && v) {
            long n = parse_count("--samples", v, 1, 4096); /* the largest max_batch */
            if (n < 0)
                return -1;
            *samples = (uint32_t)n;
            i++;
        } else {
            fprintf(stderr,
                    "usage: %s [--backend auto|cpu|cuda|sim] [--policy dstack|temporal|streams|static_spatial|ideal]\n"
                    "          [--requests N] [--image PIXELS] [--samples N]\n",
                    argv[0]);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    dstack_backend backend = DSTACK_BACKEND_AUTO;
    dstack_policy policy = DSTACK_POLICY_DSTACK;
    int requests = 300;
    uint32_t image = 0, samples = 1;
    if (parse_args(argc, argv, &backend, &policy, &requests, &image, &samples))
        return 2;
    demo d = {0};
    d.requests = requests;
    d.samples = samples;
    pthread_mutex_init(&d.lock, NULL);
    dstack_options o;
    dstack_options_init(&o);
    o.backend = backend;
    o.policy = policy;
    if (check(dstack_create(&o, &d.ctx), "dstack_create"))
        return 1;
    dstack_ctx_info ci;
    dstack_ctx_info_init(&ci);
    dstack_ctx_info_get(d.ctx, &ci);
    int on_gpu = ci.backend == DSTACK_BACKEND_CUDA || ci.backend == DSTACK_BACKEND_SIM;
    if (!image)
        image = on_gpu ? 224 : 112;
    static const char *const backend_names[] = {"auto", "cpu", "cuda", "sim"};
    printf("libdstack %s: backend %s on %s: %u %s in %u partition unit%s, policy %s\n%s%s", dstack_version_string(),
           backend_names[ci.backend], ci.device_name, ci.sm_count, on_gpu ? "SMs" : "threads", ci.partition_units,
           ci.partition_units == 1 ? "" : "s", ci.policy_name, ci.note[0] ? ci.note : "", ci.note[0] ? "\n" : "");

    int rc = 1;
    if (register_models(&d, image) || calibrate(&d))
        goto out;
    double mean_service_s = 0; /* one request of a model picked at random, alone */
    for (int m = 0; m < N_MODELS; m++) {
        mean_service_s += (double)d.models[m].solo_us / 1e6 / N_MODELS;
        if (samples > 1)
            printf("  %-13s single request of %u samples %.1f ms -> deadline %.1f ms\n", model_names[m], samples,
                   (double)d.models[m].solo_us / 1e3, (double)d.models[m].slo_us / 1e3);
        else
            printf("  %-13s single request %.1f ms -> deadline %.1f ms\n", model_names[m],
                   (double)d.models[m].solo_us / 1e3, (double)d.models[m].slo_us / 1e3);
    }
    d.rate_rps = 0.5 / mean_service_s; /* half the load batch 1 could carry */
    if (samples > 1)
        printf("submitting %d requests of %u samples (%llu samples) from 2 threads, Poisson arrivals at %.1f req/s "
               "(%.1f samples/s)\n", requests, samples, (unsigned long long)requests * samples, d.rate_rps,
               d.rate_rps * samples);
    else
        printf("submitting %d requests from 2 threads, Poisson arrivals at %.1f req/s\n", requests, d.rate_rps);

    double t0 = now_s();
    submitter_arg a[2] = {{&d, 0, requests / 2, 1}, {&d, requests / 2, requests - requests / 2, 2}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, submitter, &a[i]);
    int done = 0, ok = 0;
    double last_print = t0;
    while (done < requests) {
        dstack_completion c[32];
        size_t n = 0;
        pthread_mutex_lock(&d.lock);
        int expected = requests - d.refused;
        pthread_mutex_unlock(&d.lock);
        if (done >= expected)
            break;
        if (check(dstack_poll(d.ctx, c, 32, 200000, &n), "poll"))
            break;
        for (size_t k = 0; k < n; k++)
            ok += c[k].status == DSTACK_OK;
        done += (int)n;
        if (now_s() - last_print >= 1.0) {
            last_print = now_s();
            printf("  [%5.1f s] %d/%d answered\n", last_print - t0, done, requests);
        }
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    double elapsed = now_s() - t0;
    printf("  [%5.1f s] %d/%d answered (%d ok), %d refused (queue full)\n", elapsed, done, requests, ok, d.refused);
    if (samples > 1)
        printf("  samples: %llu answered ok of %llu submitted, %.1f samples/s\n", (unsigned long long)ok * samples,
               (unsigned long long)(requests - d.refused) * samples, (double)ok * samples / elapsed);
    report(&d, elapsed);
    rc = done == requests - d.refused ? 0 : 1;
out:
    dstack_shutdown(d.ctx); /* nothing runs after this: the buffers can go */
    for (int m = 0; m < N_MODELS; m++) {
        dstack_host_free(d.ctx, d.models[m].input);
        dstack_host_free(d.ctx, d.models[m].outputs);
    }
    dstack_destroy(d.ctx);
    pthread_mutex_destroy(&d.lock);
    return rc;
}
