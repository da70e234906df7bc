/* retrace_knees - recompute the trace knees of recorded knee_curve runs
 * with the batch time taken untraced.
 *
 * The H200 run of 2026-11-29 took the trace curve's T0 from the traced run
 * itself, which tracing slowed by milliseconds (fixed since in
 * ds_profile_kernels). The curve was A(s) = (T0 - K) + sum_k T_k(s), K the
 * kernels' time; with the untraced T0' (the sweep's own point at the traced
 * share, the last unit count) it is A'(s) = A(s) - max(T0 - K, 0)
 * + max(T0' - K, 0). This reads knee_curve's CSV and its printed "trace b=..."
 * lines (for K and T0) and prints, per batch, the swept knee, the old and the
 * corrected trace knee, by knee.h's definition.
 *
 *   cc -std=c11 -O2 -D_GNU_SOURCE -Iinclude -Isrc -o /tmp/retrace_knees \
 *      bench/gpu/retrace_knees.c build/libdstack-internal.a -lprotobuf-c -lm -lpthread -ldl \
 *      -L/usr/local/cuda/lib64 -lcudnn -lcublas -lcudart -lstdc++
 *   /tmp/retrace_knees bench/results/gpu-h200/knee_curve-resnet50-cuda.csv \
 *                      bench/results/gpu-h200/knee_resnet50.txt
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knee/knee.h"

#define MAXB 8

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s knee_curve-MODEL-cuda.csv knee_MODEL.txt\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[2], "r");
    if (!f)
        return 1;
    unsigned tb[MAXB];
    double kern[MAXB], t0[MAXB];
    int nt = 0;
    char line[1024];
    while (fgets(line, sizeof line, f) && nt < MAXB) {
        unsigned b, n, sms;
        double k, t;
        if (sscanf(line, "trace b=%u: %u kernels on %u SMs, %lf us in kernels of %lf us", &b, &n, &sms, &k, &t) == 5) {
            tb[nt] = b;
            kern[nt] = k;
            t0[nt++] = t;
        }
    }
    fclose(f);
    if (!(f = fopen(argv[1], "r")))
        return 1;
    char model[64] = "";
    unsigned bs[MAXB], sms[MAXB][64], knee_sweep[MAXB];
    double meas[MAXB][64], trc[MAXB][64];
    int nb = 0, nu[MAXB] = {0};
    fgets(line, sizeof line, f); /* header */
    while (fgets(line, sizeof line, f)) {
        char m[64], be[16];
        unsigned b, u, s;
        double lat, ana, fit, tus, tfit;
        int ks, ka, kt;
        if (sscanf(line, "%63[^,],%15[^,],%u,%u,%u,%lf,%lf,%lf,%d,%d,%lf,%lf,%d", m, be, &b, &u, &s, &lat, &ana, &fit,
                   &ks, &ka, &tus, &tfit, &kt) != 13)
            continue;
        snprintf(model, sizeof model, "%s", m);
        int i = 0;
        while (i < nb && bs[i] != b)
            i++;
        if (i == nb) {
            if (nb == MAXB)
                continue;
            bs[nb++] = b;
        }
        sms[i][nu[i]] = s;
        meas[i][nu[i]] = lat;
        trc[i][nu[i]++] = tus;
        if (ks)
            knee_sweep[i] = s;
    }
    fclose(f);
    for (int i = 0; i < nb; i++) {
        int j = 0;
        while (j < nt && tb[j] != bs[i])
            j++;
        if (j == nt || nu[i] == 0)
            continue;
        double old_out = t0[j] - kern[j] > 0 ? t0[j] - kern[j] : 0;
        double t0u = meas[i][nu[i] - 1];
        double new_out = t0u - kern[j] > 0 ? t0u - kern[j] : 0;
        double fixed[64];
        for (int u = 0; u < nu[i]; u++)
            fixed[u] = trc[i][u] - old_out + new_out;
        ds_knee_result ko, kn;
        if (ds_knee_from_sweep(sms[i], trc[i], (size_t)nu[i], NULL, &ko) != DSTACK_OK ||
            ds_knee_from_sweep(sms[i], fixed, (size_t)nu[i], NULL, &kn) != DSTACK_OK)
            return 1;
        printf("%s b=%u sweep %u trace_traced_t0 %u trace_untraced_t0 %u (t0 %.0f -> %.0f us, kernels %.0f us)\n",
               model, bs[i], knee_sweep[i], ko.knee_sms, kn.knee_sms, t0[j], t0u, kern[j]);
    }
    return 0;
}
