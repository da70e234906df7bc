/* knee_curve - a model's latency versus its SM share, with the knee marked.
 *
 *   build/bench/knee_curve MODEL|file.onnx [--backend sim|cuda] [--batch 1,8,32]
 *                          [--noise F] [--out DIR]
 *
 * For each batch size: the latency on 1..n_units partition units measured
 * through the executor (src/profile: on sim the simulator's own answer, on
 * cuda timed runs on green-context partitions), the analytic prediction from
 * the model's kernels (src/knee/analytic.h: on cuda rescaled by the 3x3 fit
 * below), and both knees (knee.h's definition). Then the latency model of
 * src/batch/latency.h fitted from 3 batch sizes x 3 shares (L = a x A + c)
 * and its error on every other measured point (held out). --noise F
 * multiplies each sim measurement by (1 + U(-F, F)), a stand-in for a real
 * device's timing noise, so the fit is exercised on sim too.
 *
 * Writes DIR/knee_curve-MODEL-BACKEND[-noiseP].csv (default DIR bench/results)
 * and, when gnuplot is on PATH, the same name in .png. The last line
 * is for the largest batch:
 *   model=… batch=… knee_sweep_sm=… knee_analytic_sm=… sm_total=…
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/latency.h"
#include "knee/analytic.h"
#include "knee/knee.h"
#include "profile/profile.h"
#include "sim/sim.h"
#include "util/clock.h"
#include "util/units.h"

#define MAX_BATCHES 16

static uint64_t rng = 42;
static double uniform(double amp)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return amp * (2.0 * ((double)(rng >> 11) / 9007199254740992.0) - 1.0);
}

static int load(const char *what, ds_graph **g)
{
    const char *dot = strrchr(what, '.');
    dstack_status st;
    if (dot && !strcmp(dot, ".onnx")) {
        FILE *f = fopen(what, "rb");
        if (!f) {
            fprintf(stderr, "knee_curve: cannot open %s\n", what);
            return -1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        void *bytes = malloc(n > 0 ? (size_t)n : 1);
        size_t got = fread(bytes, 1, (size_t)n, f);
        fclose(f);
        st = got == (size_t)n ? ds_onnx_import(bytes, (size_t)n, g) : DSTACK_ERR_IO;
        free(bytes);
    } else {
        ds_zoo_params zp = {224, 1000, 1};
        st = ds_zoo_build(what, &zp, g);
    }
    if (st == DSTACK_OK)
        st = ds_graph_fold(*g);
    if (st != DSTACK_OK) {
        fprintf(stderr, "knee_curve: %s: %s: %s\n", what, dstack_strerror(st), dstack_last_error());
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* L = a x model + c fitted on the points marked in used (ds_latency_fit)
 * and the relative errors on every other point, sorted. */
typedef struct model_fit {
    double a, c;
    double err[MAX_BATCHES * 64];
    size_t n_err;
} model_fit;

static void fit_heldout(double (*model)[64], double (*meas)[64], bool (*used)[64], uint32_t n_batches, uint32_t nu,
                        model_fit *f)
{
    double x[9] = {0}, y[9] = {0};
    size_t n = 0;
    for (uint32_t i = 0; i < n_batches; i++)
        for (uint32_t u = 0; u < nu; u++)
            if (used[i][u] && n < 9) {
                x[n] = model[i][u];
                y[n++] = meas[i][u];
            }
    f->a = 1;
    f->c = 0;
    ds_latency_fit(x, y, n, &f->a, &f->c);
    f->n_err = 0;
    for (uint32_t i = 0; i < n_batches; i++)
        for (uint32_t u = 0; u < nu; u++)
            if (!used[i][u])
                f->err[f->n_err++] = fabs(f->a * model[i][u] + f->c - meas[i][u]) / meas[i][u];
    qsort(f->err, f->n_err, sizeof *f->err, cmp_double);
}

static void print_fit(const model_fit *f)
{
    size_t n = f->n_err;
    printf("a = %.4f, c = %.1f us; held-out error on %zu points: median %.2f%%, p90 %.2f%%, max %.2f%%\n", f->a, f->c,
           n, n ? 100 * f->err[n / 2] : 0, n ? 100 * f->err[n * 9 / 10] : 0, n ? 100 * f->err[n - 1] : 0);
}

int main(int argc, char **argv)
{
    const char *model = NULL, *backend = "sim", *out_dir = "bench/results";
    uint32_t batches[MAX_BATCHES] = {1, 8, 32}, n_batches = 3;
    double noise = 0;
    uint32_t reps = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            backend = argv[++i];
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            n_batches = 0;
            for (char *p = argv[++i]; *p && n_batches < MAX_BATCHES;) {
                unsigned long b = strtoul(p, &p, 10);
                if (b == 0 || b > 64) {
                    fprintf(stderr, "knee_curve: batch sizes are 1..64\n");
                    return 2;
                }
                batches[n_batches++] = (uint32_t)b;
                if (*p == ',')
                    p++;
            }
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = (uint32_t)strtoul(argv[++i], NULL, 10);
            if (reps == 0 || reps > 1000) {
                fprintf(stderr, "knee_curve: --reps is 1..1000\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--noise") && i + 1 < argc) {
            noise = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out_dir = argv[++i];
        } else if (argv[i][0] != '-' && !model) {
            model = argv[i];
        } else {
            model = NULL;
            break;
        }
    }
    if (!model || (strcmp(backend, "sim") && strcmp(backend, "cuda")) || n_batches == 0) {
        fprintf(stderr, "usage: %s MODEL|file.onnx [--backend sim|cuda] [--batch 1,8,32] [--reps N] [--noise F] [--out DIR]\n",
                argv[0]);
        return 2;
    }
    ds_graph *g = NULL;
    if (load(model, &g) != 0)
        return 1;
    char name[64];
    const char *base = strrchr(model, '/');
    snprintf(name, sizeof name, "%s", base ? base + 1 : model);
    char *dot = strrchr(name, '.');
    if (dot && !strcmp(dot, ".onnx"))
        *dot = 0;

    ds_executor_config ec = {0, DSTACK_PARTITION_GREEN_CTX, 0, 0, false};
    ds_executor *ex = NULL;
    dstack_status st = !strcmp(backend, "sim") ? ds_exec_sim_create(&ec, &ex) : ds_exec_cuda_create(&ec, &ex);
    if (st != DSTACK_OK) {
        fprintf(stderr, "knee_curve: backend %s: %s: %s\n", backend, dstack_strerror(st), dstack_last_error());
        return 1;
    }
    uint32_t max_b = 0;
    for (uint32_t i = 0; i < n_batches; i++)
        max_b = batches[i] > max_b ? batches[i] : max_b;
    ds_exec_plan *plan = NULL;
    ds_plan_options po = {max_b, DSTACK_PRECISION_FP32, 0};
    if ((st = ex->ops->plan_create(ex, g, &po, &plan)) != DSTACK_OK) {
        fprintf(stderr, "knee_curve: plan: %s\n", dstack_last_error());
        return 1;
    }
    const ds_device_info *dev = &ex->device;
    uint32_t nu = dev->n_units, usms = dev->unit_sms;
    uint32_t whole = ds_units_whole_sms(dev->partitioning, dev->sm_count, usms, nu);
    if (nu < 2 || nu > 64) {
        fprintf(stderr, "knee_curve: the device has %u partition units: no curve\n", nu);
        return 1;
    }
    ds_sim_device sdev;
    ds_sim_device_default(&sdev, DSTACK_PARTITION_GREEN_CTX, dev->sm_count);
    bool timed = !ex->ops->model_time_ns;

    /* measure and predict */
    static double meas[MAX_BATCHES][64], ana[MAX_BATCHES][64], trc[MAX_BATCHES][64];
    uint32_t knee_sweep[MAX_BATCHES], knee_ana[MAX_BATCHES], knee_trc[MAX_BATCHES] = {0};
    bool traced = ex->ops->trace_begin != NULL;
    char trace_why[256] = "the backend has no kernel tracer";
    ds_sm_limits lim;
    ds_sm_limits_hopper(&lim);
    uint64_t t0 = ds_monotonic_ns();
    for (uint32_t i = 0; i < n_batches; i++) {
        uint32_t sms[64];
        for (uint32_t u = 1; u <= nu; u++) {
            ds_profile_point pt;
            st = ds_profile_measure(ex, plan, g, batches[i], u, timed ? 2 : 0, timed ? reps : 1, &pt);
            if (st != DSTACK_OK) {
                fprintf(stderr, "knee_curve: batch %u on %u units: %s\n", batches[i], u, dstack_last_error());
                return 1;
            }
            meas[i][u - 1] = pt.median_us * (noise > 0 ? 1.0 + uniform(noise) : 1.0);
            sms[u - 1] = ds_units_sms(whole, usms, nu, u);
        }
        ds_knee_result kr;
        ds_knee_from_sweep(sms, meas[i], nu, NULL, &kr);
        knee_sweep[i] = kr.knee_sms;
        ds_knee_curve c;
        if ((st = ds_knee_analytic(g, batches[i], &sdev, NULL, &c)) != DSTACK_OK) {
            fprintf(stderr, "knee_curve: analytic: %s\n", dstack_last_error());
            return 1;
        }
        memcpy(ana[i], c.us, sizeof c.us);
        knee_ana[i] = c.knee.knee_sms;
        /* the same knee from the kernels the device really launched (cuda: CUPTI) */
        ds_profile_trace tr;
        if (traced && ds_profile_kernels(ex, plan, g, batches[i], &tr) == DSTACK_OK) {
            ds_trace_curve tc;
            if (ds_knee_analytic_trace(tr.kernels, tr.n_kernels, tr.sm_count, tr.total_us, batches[i], usms, nu, &lim,
                                       NULL, &tc) == DSTACK_OK) {
                memcpy(trc[i], tc.curve.us, sizeof tc.curve.us);
                knee_trc[i] = tc.curve.knee.knee_sms;
                printf("trace b=%u: %zu kernels on %u SMs, %.1f us in kernels of %.1f us, %u of unknown occupancy\n",
                       batches[i], tr.n_kernels, tr.sm_count, tc.kernel_us, tr.total_us, tc.unknown_occupancy);
            } else {
                traced = false;
                snprintf(trace_why, sizeof trace_why, "%s", dstack_last_error());
            }
            free(tr.kernels);
        } else if (traced) {
            traced = false;
            snprintf(trace_why, sizeof trace_why, "%s", dstack_last_error());
        }
    }
    double sweep_s = (double)(ds_monotonic_ns() - t0) / 1e9;

    /* the latency model: fit on 3 batches x 3 shares, test on the rest */
    uint32_t fb[3] = {0, n_batches / 2, n_batches - 1}, fu[3] = {1, (nu + 1) / 2, nu};
    size_t nf = 0;
    static bool used[MAX_BATCHES][64];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            if (!used[fb[a]][fu[b] - 1]) {
                used[fb[a]][fu[b] - 1] = true;
                nf++;
            }
    static model_fit fit, tfit;
    fit_heldout(ana, meas, used, n_batches, nu, &fit);
    if (traced) /* the same fit on the trace's curve */
        fit_heldout(trc, meas, used, n_batches, nu, &tfit);

    /* table, CSV */
    char csv[512], png[512];
    char tag[32] = "";
    if (noise > 0)
        snprintf(tag, sizeof tag, "-noise%g", 100 * noise);
    snprintf(csv, sizeof csv, "%s/knee_curve-%s-%s%s.csv", out_dir, name, backend, tag);
    snprintf(png, sizeof png, "%s/knee_curve-%s-%s%s.png", out_dir, name, backend, tag);
    FILE *f = fopen(csv, "w");
    if (!f) {
        fprintf(stderr, "knee_curve: cannot write %s\n", csv);
        return 1;
    }
    fprintf(f, "model,backend,batch,units,sms,latency_us,analytic_us,fitted_us,knee_sweep,knee_analytic,trace_us,"
               "trace_fitted_us,knee_trace\n");
    printf("%s on %s ('%s', %u SMs, %u units of %u SMs)%s; sweep took %.3f s\n", name, backend, dev->name,
           dev->sm_count, nu, usms, noise > 0 ? " with injected noise" : "", sweep_s);
    printf("latency in ms; S = swept knee, A = analytic knee (sim's kernel model), T = from the kernel trace\n%6s",
           "SMs");
    for (uint32_t i = 0; i < n_batches; i++)
        printf("   b=%-2u sweep analytic%s", batches[i], traced ? "    trace" : "");
    printf("\n");
    for (uint32_t u = 1; u <= nu; u++) {
        uint32_t s = ds_units_sms(whole, usms, nu, u); /* every unit: the whole device */
        printf("%6u", s);
        for (uint32_t i = 0; i < n_batches; i++) {
            bool ks = knee_sweep[i] == s, ka = knee_ana[i] == s, kt = traced && knee_trc[i] == s;
            printf("  %9.3f%c %8.3f%c", meas[i][u - 1] / 1e3, ks ? 'S' : ' ', ana[i][u - 1] / 1e3, ka ? 'A' : ' ');
            if (traced)
                printf(" %8.3f%c", trc[i][u - 1] / 1e3, kt ? 'T' : ' ');
            fprintf(f, "%s,%s,%u,%u,%u,%.3f,%.3f,%.3f,%d,%d,%.3f,%.3f,%d\n", name, backend, batches[i], u, s,
                    meas[i][u - 1], ana[i][u - 1], fit.a * ana[i][u - 1] + fit.c, ks, ka, traced ? trc[i][u - 1] : 0.0,
                    traced ? tfit.a * trc[i][u - 1] + tfit.c : 0.0, kt);
        }
        printf("\n");
    }
    fclose(f);
    for (uint32_t i = 0; i < n_batches; i++) {
        printf("batch %2u: knee sweep %3u SMs, analytic %3u SMs, difference %d SMs", batches[i], knee_sweep[i],
               knee_ana[i], (int)knee_sweep[i] - (int)knee_ana[i]);
        if (traced)
            printf("; trace %3u SMs, difference %d SMs", knee_trc[i], (int)knee_sweep[i] - (int)knee_trc[i]);
        printf("\n");
    }
    if (traced) {
        printf("latency model on the trace L = a x trace + c: ");
        print_fit(&tfit);
    } else {
        printf("kernel trace: not used (%s)\n", trace_why);
    }
    printf("latency model L = a x analytic + c fitted on %zu points (3 batches x 3 shares): ", nf);
    print_fit(&fit);
    printf("csv: %s\n", csv);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        FILE *gp = popen("gnuplot", "w");
        if (gp) {
            fprintf(gp, "set terminal pngcairo size 900,600\nset output '%s'\nset datafile separator ','\n"
                        "set xlabel 'SMs'\nset ylabel 'latency (ms)'\nset title '%s on %s'\nset key top right\n",
                    png, name, backend);
            fprintf(gp, "plot ");
            for (uint32_t i = 0; i < n_batches; i++)
                fprintf(gp, "%s'%s' using ($3==%u?$5:1/0):($6/1000) with linespoints title 'b=%u sweep', "
                            "'%s' using ($3==%u?$5:1/0):($7/1000) with lines dt 2 title 'b=%u analytic'",
                        i ? ", " : "", csv, batches[i], batches[i], csv, batches[i], batches[i]);
            fprintf(gp, "\n");
            if (pclose(gp) == 0)
                printf("png: %s\n", png);
        }
    } else {
        printf("png: skipped (gnuplot not installed)\n");
    }
    uint32_t last = 0;
    for (uint32_t i = 1; i < n_batches; i++)
        if (batches[i] > batches[last])
            last = i;
    printf("model=%s batch=%u knee_sweep_sm=%u knee_analytic_sm=%u sm_total=%u", name, batches[last],
           knee_sweep[last], knee_ana[last], dev->sm_count);
    if (traced)
        printf(" knee_trace_sm=%u", knee_trc[last]);
    printf("\n");
    ex->ops->plan_destroy(ex, plan);
    ex->ops->destroy(ex);
    ds_graph_free(g);
    return 0;
}
