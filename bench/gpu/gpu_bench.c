/* gpu_bench.c - correctness and timing of the cuda executor on a GPU machine.
 *
 * Uses the internal headers and the static library (the executor interface
 * directly, no scheduler), so what is measured is the backend alone.
 *
 *   gpu_bench correct  <model|all> [batches=1,8,32] [fp32|tf32|fp16]  cuda vs cpu reference
 *   gpu_bench latency  <model> <batch> [iters] [none|green] [fp32|tf32]  whole-device latency
 *   gpu_bench sweep    <model> <batch> [iters]        latency on green contexts of 1..n units
 *   gpu_bench concurrent <modelA> <bA> <modelB> <bB> <unitsA> [iters] [timeline.csv]
 *   gpu_bench dump     <model> <batch> <dir>          folded ONNX + input + cuda output
 *   gpu_bench info
 *
 * Error metric: max_i |cuda_i - cpu_i| / max_i |cpu_i| (max error relative to
 * the output's scale; per-element relative error is meaningless for logits
 * near 0), plus the L2 relative error. The cpu reference runs once at the
 * largest batch; smaller batches are checked against its first rows (each
 * request's output depends on that request alone). Models are folded
 * (ds_graph_fold) for both backends. Latency: median of `iters` runs after
 * 10 warm-ups, host time from run() to done (inputs staged, H2D, compute,
 * D2H included).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "exec/exec.h"
#include "graph/graph.h"
#include "util/clock.h"
#include "util/error.h"

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    dstack_status status;
    uint64_t end_ns;
} waiter;

static void on_done(void *arg, dstack_status st) {
    waiter *w = arg;
    uint64_t t = ds_monotonic_ns();
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    w->status = st;
    w->end_ns = t;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void die(const char *what, dstack_status st) {
    fprintf(stderr, "FAIL %s: %s: %s\n", what, dstack_strerror(st), ds_error_message());
    exit(1);
}

typedef struct model_run {
    ds_graph *g;
    ds_exec_plan *plan;
    uint32_t max_batch;
    uint64_t in_floats, out_floats; /* per request (one input, one output) */
    float *in, *out;                /* max_batch requests */
    const void **in_ptrs;
    void **out_ptrs;
} model_run;

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void model_load(model_run *m, const char *name, uint32_t max_batch, uint64_t seed) {
    memset(m, 0, sizeof *m);
    ds_zoo_params zp = {.image_size = 224, .classes = 1000, .seed = 42};
    dstack_status st = ds_zoo_build(name, &zp, &m->g);
    if (st) die("zoo build", st);
    if ((st = ds_graph_fold(m->g))) die("fold", st);
    m->max_batch = max_batch;
    m->in_floats = (uint64_t)ds_tensor_numel(&m->g->tensors[m->g->inputs[0]]);
    m->out_floats = (uint64_t)ds_tensor_numel(&m->g->tensors[m->g->outputs[0]]);
    /* DSTACK_BENCH_PINNED=1: inputs in page-locked memory, as dstack_host_alloc gives */
    if (getenv("DSTACK_BENCH_PINNED")) {
        if (cudaHostAlloc((void **)&m->in, m->in_floats * max_batch * sizeof(float), cudaHostAllocPortable))
            die("cudaHostAlloc", DSTACK_ERR_DEVICE);
    } else {
        m->in = malloc(m->in_floats * max_batch * sizeof(float));
    }
    m->out = malloc(m->out_floats * max_batch * sizeof(float));
    m->in_ptrs = malloc(max_batch * sizeof(void *));
    m->out_ptrs = malloc(max_batch * sizeof(void *));
    for (uint64_t i = 0; i < m->in_floats * max_batch; i++)
        m->in[i] = (float)((double)lcg(&seed) / (double)(1ull << 31)) * 2.0f - 1.0f;
    for (uint32_t r = 0; r < max_batch; r++) {
        m->in_ptrs[r] = m->in + r * m->in_floats;
        m->out_ptrs[r] = m->out + r * m->out_floats;
    }
}

static dstack_precision g_precision = DSTACK_PRECISION_FP32; /* bench-wide, from argv */

static dstack_precision parse_precision(const char *s) {
    if (s && !strcmp(s, "tf32")) return DSTACK_PRECISION_TF32;
    if (s && !strcmp(s, "fp16")) return DSTACK_PRECISION_FP16;
    return DSTACK_PRECISION_FP32;
}

static const char *precision_name(dstack_precision p) {
    return p == DSTACK_PRECISION_TF32 ? "tf32" : p == DSTACK_PRECISION_FP16 ? "fp16" : "fp32";
}

static void model_plan(model_run *m, ds_executor *ex) {
    ds_plan_options o = {.max_batch = m->max_batch, .precision = g_precision};
    if (strcmp(ex->ops->name, "cuda")) o.precision = DSTACK_PRECISION_FP32; /* the reference */
    dstack_status st = ex->ops->plan_create(ex, m->g, &o, &m->plan);
    if (st) die("plan_create", st);
}

static void model_free(model_run *m, ds_executor *ex) {
    if (m->plan) ex->ops->plan_destroy(ex, m->plan);
    ds_graph_free(m->g);
    if (getenv("DSTACK_BENCH_PINNED"))
        cudaFreeHost(m->in);
    else
        free(m->in);
    free(m->out);
    free(m->in_ptrs);
    free(m->out_ptrs);
}

/* One batch, waited for. Returns host ns from run() to done. */
static uint64_t run_once(ds_executor *ex, model_run *m, uint32_t batch, const ds_partition *part,
                         uint64_t *start_out, uint64_t *end_out) {
    waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    for (uint64_t i = 0; i < m->out_floats * batch; i++) m->out[i] = NAN; /* poison */
    ds_exec_batch b = {.batch = batch, .inputs = m->in_ptrs, .outputs = m->out_ptrs};
    uint64_t t0 = ds_monotonic_ns();
    dstack_status st = ex->ops->run(ex, m->plan, &b, part, on_done, &w);
    if (st) die("run", st);
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (w.status) die("run completion", w.status);
    if (start_out) *start_out = t0;
    if (end_out) *end_out = w.end_ns;
    return w.end_ns - t0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double median_ms(ds_executor *ex, model_run *m, uint32_t batch, const ds_partition *part,
                        int iters, double *p10, double *p90) {
    for (int i = 0; i < 10; i++) run_once(ex, m, batch, part, NULL, NULL);
    uint64_t *t = malloc((size_t)iters * sizeof *t);
    for (int i = 0; i < iters; i++) t[i] = run_once(ex, m, batch, part, NULL, NULL);
    qsort(t, (size_t)iters, sizeof *t, cmp_u64);
    double med = (double)t[iters / 2] / 1e6;
    if (p10) *p10 = (double)t[iters / 10] / 1e6;
    if (p90) *p90 = (double)t[(iters * 9) / 10] / 1e6;
    free(t);
    return med;
}

static ds_executor *open_cuda(dstack_partitioning mode) {
    ds_executor_config cfg = {.device = 0, .partitioning = mode};
    ds_executor *ex = NULL;
    dstack_status st = ds_exec_cuda_create(&cfg, &ex);
    if (st) die("cuda create", st);
    return ex;
}

/* ------------------------------------------------------------------ correct */

static int parse_batches(const char *s, uint32_t *b, int max) {
    int n = 0;
    while (s && *s && n < max) {
        b[n++] = (uint32_t)strtoul(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
    return n;
}

static int correct_one(const char *name, const uint32_t *batches, int nb, ds_executor *cpu,
                       ds_executor *cuda) {
    uint32_t maxb = 0;
    for (int i = 0; i < nb; i++) maxb = batches[i] > maxb ? batches[i] : maxb;
    model_run m;
    model_load(&m, name, maxb, 1234);
    model_plan(&m, cpu);
    uint64_t t0 = ds_monotonic_ns();
    run_once(cpu, &m, maxb, NULL, NULL, NULL);
    double cpu_s = (double)(ds_monotonic_ns() - t0) / 1e9;
    uint64_t nout = m.out_floats * maxb;
    float *ref = malloc(nout * sizeof(float));
    memcpy(ref, m.out, nout * sizeof(float));
    cpu->ops->plan_destroy(cpu, m.plan);
    m.plan = NULL;
    model_plan(&m, cuda);
    int fails = 0;
    for (int i = 0; i < nb; i++) {
        uint32_t b = batches[i];
        run_once(cuda, &m, b, NULL, NULL, NULL);
        run_once(cuda, &m, b, NULL, NULL, NULL); /* a second run: a replay when graphs are on */
        double maxdiff = 0, maxref = 0, num = 0, den = 0;
        int nan = 0;
        for (uint64_t k = 0; k < m.out_floats * b; k++) {
            double d = fabs((double)m.out[k] - ref[k]);
            if (isnan(m.out[k])) nan = 1;
            if (d > maxdiff) maxdiff = d;
            if (fabs(ref[k]) > maxref) maxref = fabs(ref[k]);
            num += d * d;
            den += (double)ref[k] * ref[k];
        }
        double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
        double l2 = den > 0 ? sqrt(num / den) : sqrt(num);
        double tol = g_precision == DSTACK_PRECISION_FP32 ? 1e-4 : 1e-2;
        int ok = !nan && rel < tol;
        fails += !ok;
        printf("correct,%s,%s,%u,%.3e,%.3e,%.4g,%.2f,%s\n", name, precision_name(g_precision), b,
               rel, l2, maxref, cpu_s, ok ? "PASS" : "FAIL");
        fflush(stdout);
    }
    free(ref);
    model_free(&m, cuda);
    return fails;
}

static int cmd_correct(int argc, char **argv) {
    uint32_t batches[8] = {1, 8, 32};
    int nb = 3;
    if (argc > 3) nb = parse_batches(argv[3], batches, 8);
    if (argc > 4) g_precision = parse_precision(argv[4]);
    ds_executor_config cc = {.cpu_threads = 0};
    ds_executor *cpu = NULL;
    dstack_status st = ds_exec_cpu_create(&cc, &cpu);
    if (st) die("cpu create", st);
    ds_executor *cuda = open_cuda(DSTACK_PARTITION_AUTO);
    printf("correct,model,precision,batch,max_rel_err,l2_rel_err,max_abs_ref,cpu_ref_s,verdict\n");
    int fails = 0;
    if (!strcmp(argv[2], "all")) {
        const char *const *names = ds_zoo_names();
        for (int i = 0; names[i]; i++) {
            if (!strcmp(names[i], "squeezenet") || !strcmp(names[i], "inception")) continue; /* aliases */
            fails += correct_one(names[i], batches, nb, cpu, cuda);
        }
    } else {
        fails += correct_one(argv[2], batches, nb, cpu, cuda);
    }
    cuda->ops->destroy(cuda);
    cpu->ops->destroy(cpu);
    printf("correct_summary,failures,%d\n", fails);
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------------ latency */

static int cmd_latency(int argc, char **argv) {
    uint32_t b = (uint32_t)atoi(argv[3]);
    int iters = argc > 4 ? atoi(argv[4]) : 50;
    dstack_partitioning mode =
        argc > 5 && !strcmp(argv[5], "green") ? DSTACK_PARTITION_GREEN_CTX : DSTACK_PARTITION_NONE;
    if (argc > 6) g_precision = parse_precision(argv[6]);
    ds_executor *ex = open_cuda(mode);
    model_run m;
    model_load(&m, argv[2], b, 7);
    uint64_t t0 = ds_monotonic_ns();
    model_plan(&m, ex);
    double plan_s = (double)(ds_monotonic_ns() - t0) / 1e9;
    double p10, p90;
    double med = median_ms(ex, &m, b, NULL, iters, &p10, &p90);
    /* host staging alone: the input memcpy into pinned memory that run() does */
    size_t in_bytes = m.in_floats * b * sizeof(float);
    volatile float *tmp = malloc(in_bytes);
    memcpy((void *)tmp, m.in, in_bytes); /* fault the pages in */
    t0 = ds_monotonic_ns();
    memcpy((void *)tmp, m.in, in_bytes);
    double stage_ms = (double)(ds_monotonic_ns() - t0) / 1e6;
    if (tmp[in_bytes / sizeof(float) - 1] != m.in[in_bytes / sizeof(float) - 1]) stage_ms = -1;
    free((void *)tmp);
    printf("latency,%s,%u,%s,%s,%u,%.3f,%.3f,%.3f,params=%llu,plan_s=%.2f,host_copy_ms=%.2f\n",
           argv[2], b, mode == DSTACK_PARTITION_NONE ? "none" : "green", precision_name(g_precision),
           ex->device.sm_count, med, p10, p90, (unsigned long long)ds_graph_param_count(m.g), plan_s,
           stage_ms);
    model_free(&m, ex);
    ex->ops->destroy(ex);
    return 0;
}

/* -------------------------------------------------------------------- sweep */

static int cmd_sweep(int argc, char **argv) {
    uint32_t b = (uint32_t)atoi(argv[3]);
    int iters = argc > 4 ? atoi(argv[4]) : 30;
    ds_executor *ex = open_cuda(DSTACK_PARTITION_GREEN_CTX);
    model_run m;
    model_load(&m, argv[2], b, 7);
    model_plan(&m, ex);
    printf("sweep,model,batch,units,sms,median_ms,p10_ms,p90_ms\n");
    for (uint32_t u = 1; u <= ex->device.n_units; u++) {
        ds_partition part;
        dstack_status st = ex->ops->partition_get(ex, 0, u, &part);
        if (st) die("partition_get", st);
        double p10, p90;
        double med = median_ms(ex, &m, b, &part, iters, &p10, &p90);
        printf("sweep,%s,%u,%u,%u,%.3f,%.3f,%.3f\n", argv[2], b, u, part.sm_count, med, p10, p90);
        fflush(stdout);
    }
    model_free(&m, ex);
    ex->ops->destroy(ex);
    /* the whole device without green contexts (all SMs, incl. the leftover) */
    ex = open_cuda(DSTACK_PARTITION_NONE);
    model_load(&m, argv[2], b, 7);
    model_plan(&m, ex);
    double p10, p90;
    double med = median_ms(ex, &m, b, NULL, iters, &p10, &p90);
    printf("sweep,%s,%u,none,%u,%.3f,%.3f,%.3f\n", argv[2], b, ex->device.sm_count, med, p10, p90);
    model_free(&m, ex);
    ex->ops->destroy(ex);
    return 0;
}

/* --------------------------------------------------------------- concurrent */

typedef struct conc_arg {
    ds_executor *ex;
    model_run *m;
    uint32_t batch;
    ds_partition part;
    int iters;
    uint64_t *start, *end;
    pthread_barrier_t *bar;
} conc_arg;

static void *conc_thread(void *p) {
    conc_arg *a = p;
    pthread_barrier_wait(a->bar);
    for (int i = 0; i < a->iters; i++) run_once(a->ex, a->m, a->batch, &a->part, &a->start[i], &a->end[i]);
    return NULL;
}

static int cmd_concurrent(int argc, char **argv) {
    uint32_t ba = (uint32_t)atoi(argv[3]), bb = (uint32_t)atoi(argv[5]);
    uint32_t ua = (uint32_t)atoi(argv[6]);
    int iters = argc > 7 ? atoi(argv[7]) : 40;
    const char *csv = argc > 8 ? argv[8] : NULL;
    ds_executor *ex = open_cuda(DSTACK_PARTITION_GREEN_CTX);
    model_run ma, mb;
    model_load(&ma, argv[2], ba, 1);
    model_load(&mb, argv[4], bb, 2);
    model_plan(&ma, ex);
    model_plan(&mb, ex);
    conc_arg A = {.ex = ex, .m = &ma, .batch = ba, .iters = iters};
    conc_arg B = {.ex = ex, .m = &mb, .batch = bb, .iters = iters};
    dstack_status st = ex->ops->partition_get(ex, 0, ua, &A.part);
    if (!st) st = ex->ops->partition_get(ex, ua, ex->device.n_units - ua, &B.part);
    if (st) die("partition_get", st);
    A.start = calloc((size_t)iters, 8); A.end = calloc((size_t)iters, 8);
    B.start = calloc((size_t)iters, 8); B.end = calloc((size_t)iters, 8);
    /* alone, each on its own partition */
    double alone_a = median_ms(ex, &ma, ba, &A.part, iters, NULL, NULL);
    double alone_b = median_ms(ex, &mb, bb, &B.part, iters, NULL, NULL);
    uint64_t t0 = ds_monotonic_ns();
    for (int i = 0; i < iters; i++) run_once(ex, &ma, ba, &A.part, NULL, NULL);
    for (int i = 0; i < iters; i++) run_once(ex, &mb, bb, &B.part, NULL, NULL);
    double seq_ms = (double)(ds_monotonic_ns() - t0) / 1e6;
    /* together */
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    A.bar = B.bar = &bar;
    pthread_t tha, thb;
    uint64_t c0 = ds_monotonic_ns();
    pthread_create(&tha, NULL, conc_thread, &A);
    pthread_create(&thb, NULL, conc_thread, &B);
    pthread_join(tha, NULL);
    pthread_join(thb, NULL);
    double conc_ms = (double)(ds_monotonic_ns() - c0) / 1e6;
    /* overlap: total time during which a batch of A and a batch of B were both in flight */
    uint64_t overlap = 0;
    for (int i = 0; i < iters; i++)
        for (int j = 0; j < iters; j++) {
            uint64_t s = A.start[i] > B.start[j] ? A.start[i] : B.start[j];
            uint64_t e = A.end[i] < B.end[j] ? A.end[i] : B.end[j];
            if (e > s) overlap += e - s;
        }
    uint64_t first = A.start[0] < B.start[0] ? A.start[0] : B.start[0];
    printf("concurrent,modelA,%s,b,%u,units,%u,sms,%u,alone_ms,%.3f\n", argv[2], ba, ua,
           A.part.sm_count, alone_a);
    printf("concurrent,modelB,%s,b,%u,units,%u,sms,%u,alone_ms,%.3f\n", argv[4], bb,
           ex->device.n_units - ua, B.part.sm_count, alone_b);
    printf("concurrent,iters,%d,sequential_ms,%.2f,concurrent_ms,%.2f,speedup,%.2f,overlap_ms,%.2f\n",
           iters, seq_ms, conc_ms, seq_ms / conc_ms, (double)overlap / 1e6);
    if (csv) {
        FILE *f = fopen(csv, "w");
        if (f) {
            fprintf(f, "model,partition_units,sms,batch_index,start_us,end_us\n");
            for (int i = 0; i < iters; i++)
                fprintf(f, "%s,%u+%u,%u,%d,%.1f,%.1f\n", argv[2], 0, ua, A.part.sm_count, i,
                        (double)(A.start[i] - first) / 1e3, (double)(A.end[i] - first) / 1e3);
            for (int i = 0; i < iters; i++)
                fprintf(f, "%s,%u+%u,%u,%d,%.1f,%.1f\n", argv[4], ua, ex->device.n_units - ua,
                        B.part.sm_count, i, (double)(B.start[i] - first) / 1e3,
                        (double)(B.end[i] - first) / 1e3);
            fclose(f);
        }
    }
    free(A.start); free(A.end); free(B.start); free(B.end);
    model_free(&ma, ex);
    model_free(&mb, ex);
    ex->ops->destroy(ex);
    return 0;
}

/* Write <dir>/<model>.onnx (the folded graph), .in.bin and .out.bin (cuda
 * output at `batch`), for bench/gpu/ort_check.py to compare with ONNX Runtime. */
static int cmd_dump(int argc, char **argv) {
    (void)argc;
    uint32_t b = (uint32_t)atoi(argv[3]);
    const char *dir = argv[4];
    ds_executor *ex = open_cuda(DSTACK_PARTITION_AUTO);
    model_run m;
    model_load(&m, argv[2], b, 99);
    model_plan(&m, ex);
    run_once(ex, &m, b, NULL, NULL, NULL);
    void *bytes = NULL;
    size_t n = 0;
    dstack_status st = ds_onnx_export(m.g, &bytes, &n);
    if (st) die("onnx export", st);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.onnx", dir, argv[2]);
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(bytes, 1, n, f); fclose(f); }
    free(bytes);
    snprintf(path, sizeof path, "%s/%s.in.bin", dir, argv[2]);
    if ((f = fopen(path, "wb"))) { fwrite(m.in, sizeof(float), m.in_floats * b, f); fclose(f); }
    snprintf(path, sizeof path, "%s/%s.out.bin", dir, argv[2]);
    if ((f = fopen(path, "wb"))) { fwrite(m.out, sizeof(float), m.out_floats * b, f); fclose(f); }
    printf("dump,%s,%u,%llu,%llu\n", argv[2], b, (unsigned long long)m.in_floats, (unsigned long long)m.out_floats);
    model_free(&m, ex);
    ex->ops->destroy(ex);
    return 0;
}

static int cmd_info(void) {
    const dstack_partitioning modes[] = {DSTACK_PARTITION_AUTO, DSTACK_PARTITION_GREEN_CTX,
                                         DSTACK_PARTITION_NONE, DSTACK_PARTITION_MPS};
    for (int i = 0; i < 4; i++) {
        ds_executor_config cfg = {.device = 0, .partitioning = modes[i]};
        ds_executor *ex = NULL;
        dstack_status st = ds_exec_cuda_create(&cfg, &ex);
        if (st) {
            printf("info,mode,%d,error,%s,%s\n", (int)modes[i], dstack_strerror(st), ds_error_message());
            continue;
        }
        printf("info,mode,%d,in_use,%d,name,%s,sm_count,%u,unit_sms,%u,n_units,%u\n", (int)modes[i],
               (int)ex->device.partitioning, ex->device.name, ex->device.sm_count,
               ex->device.unit_sms, ex->device.n_units);
        for (uint32_t u = 1; u <= ex->device.n_units; u *= 2) {
            ds_partition p;
            st = ex->ops->partition_get(ex, 0, u, &p);
            printf("info,partition,0+%u,%s,sms,%u\n", u, st ? ds_error_message() : "ok", st ? 0 : p.sm_count);
        }
        ds_partition bad;
        st = ex->ops->partition_get(ex, ex->device.n_units, 1, &bad);
        printf("info,partition_out_of_range,%s,%s\n", dstack_strerror(st), ds_error_message());
        ex->ops->destroy(ex);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "info")) return cmd_info();
    if (argc >= 5 && !strcmp(argv[1], "dump")) return cmd_dump(argc, argv);
    if (argc >= 3 && !strcmp(argv[1], "correct")) return cmd_correct(argc, argv);
    if (argc >= 4 && !strcmp(argv[1], "latency")) return cmd_latency(argc, argv);
    if (argc >= 4 && !strcmp(argv[1], "sweep")) return cmd_sweep(argc, argv);
    if (argc >= 7 && !strcmp(argv[1], "concurrent")) return cmd_concurrent(argc, argv);
    fprintf(stderr, "usage: see the header of bench/gpu/gpu_bench.c\n");
    return 2;
}
