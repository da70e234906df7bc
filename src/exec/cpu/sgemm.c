/* sgemm.c - single-precision GEMM in plain C, cache-blocked.
 *
 * The classic Goto/BLIS shape: C is cut into (MC x NC) tiles that the pool
 * computes in parallel; for every KC slice a tile packs its A rows into
 * MR-row panels and its B columns into NR-column panels, then an MR x NR
 * micro-kernel accumulates a register-sized block of C over the slice. The
 * micro-kernel is plain C that gcc -O2 vectorizes along NR, with the MR
 * loop unrolled so the MR x NR accumulators live in registers. On x86-64 a
 * second copy is compiled for AVX2+FMA and picked at run time, because the
 * x86-64 baseline has only 4-wide SSE2 (about 2x slower here).
 * Why not a BLAS: the library must build and be exact with no dependency,
 * and the cpu backend is the oracle, so its numerics stay in our hands. */
#include <stdlib.h>
#include <string.h>

#include "exec/cpu/cpu_ops.h"

#define MR DS_SGEMM_MR
#define NR DS_SGEMM_NR
#define KC DS_SGEMM_KC
#define MC DS_SGEMM_MC
#define NC DS_SGEMM_NC

/* The AVX2+FMA copy is picked at run time with __builtin_cpu_supports rather
 * than an ifunc (target_clones), whose resolver runs before the sanitizer
 * runtimes start and crashes ThreadSanitizer builds. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DS_SGEMM_X86_DISPATCH 1
#else
#define DS_SGEMM_X86_DISPATCH 0
#endif

typedef void (*micro_kernel_fn)(int64_t kc, const float *restrict a, const float *restrict b,
                                float *restrict acc);

typedef struct gemm_job {
    bool ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    int64_t lda, ldb;
    float *C;
    int64_t ldc;
    int64_t mb, nb; /* tile sizes */
    uint32_t mt, nt; /* tiles along M and N */
    ds_cpu_pool *pool;
    micro_kernel_fn kernel;
} gemm_job;

/* acc[MR][NR] = sum over k of a[k][0..MR) outer b[k][0..NR). One body,
 * expanded once per instruction set. Without the unroll pragma gcc -O2 keeps
 * c[][] on the stack and runs at half speed. */
#define MUL_ADD(x, y, z) ((z) + (x) * (y))
#define MICRO_KERNEL_BODY(MADD)                                                                \
    float c[MR][NR];                                                                           \
    for (int i = 0; i < MR; i++)                                                               \
        for (int j = 0; j < NR; j++)                                                           \
            c[i][j] = 0.0f;                                                                    \
    for (int64_t k = 0; k < kc; k++) {                                                         \
        const float *restrict bk = b + k * NR;                                                 \
        const float *restrict ak = a + k * MR;                                                 \
        _Pragma("GCC unroll 8")                                                                \
        for (int i = 0; i < MR; i++) {                                                         \
            float av = ak[i];                                                                  \
            for (int j = 0; j < NR; j++)                                                       \
                c[i][j] = MADD(av, bk[j], c[i][j]);                                            \
        }                                                                                      \
    }                                                                                          \
    memcpy(acc, c, sizeof c);

static void micro_kernel_generic(int64_t kc, const float *restrict a, const float *restrict b,
                                 float *restrict acc)
{
    MICRO_KERNEL_BODY(MUL_ADD)
}

#if DS_SGEMM_X86_DISPATCH
__attribute__((target("avx2,fma")))
static void micro_kernel_avx2(int64_t kc, const float *restrict a, const float *restrict b,
                              float *restrict acc)
{
    MICRO_KERNEL_BODY(__builtin_fmaf)
}
#endif

static micro_kernel_fn pick_micro_kernel(void)
{
#if DS_SGEMM_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return micro_kernel_avx2;
#endif
    return micro_kernel_generic;
}

/* op(A) rows [i0, i0+mb), columns [k0, k0+kc) into MR-row panels, zero-padded. */
static void pack_a(const gemm_job *j, int64_t i0, int64_t mb, int64_t k0, int64_t kc, float *dst)
{
    for (int64_t p = 0; p < mb; p += MR) {
        for (int r = 0; r < MR; r++) {
            int64_t i = i0 + p + r;
            float *d = dst + r;
            if (p + r >= mb) {
                for (int64_t k = 0; k < kc; k++)
                    d[k * MR] = 0.0f;
            } else if (j->ta) {
                const float *s = j->A + k0 * j->lda + i;
                for (int64_t k = 0; k < kc; k++)
                    d[k * MR] = s[k * j->lda];
            } else {
                const float *s = j->A + i * j->lda + k0;
                for (int64_t k = 0; k < kc; k++)
                    d[k * MR] = s[k];
            }
        }
        dst += kc * MR;
    }
}

/* Fixed-width row helpers: restrict parameters (gcc ignores restrict on
 * block-scope pointers) and a constant trip count let gcc -O2 vectorize. */
static void copy_nr(float *restrict d, const float *restrict s)
{
    for (int c = 0; c < NR; c++)
        d[c] = s[c];
}

static void acc_nr(float *restrict c, const float *restrict a, float alpha)
{
    for (int x = 0; x < NR; x++)
        c[x] += alpha * a[x];
}

static void set_nr(float *restrict c, const float *restrict a, float alpha)
{
    for (int x = 0; x < NR; x++)
        c[x] = alpha * a[x];
}

static void scale_nr(float *restrict c, const float *restrict a, float alpha, float beta)
{
    for (int x = 0; x < NR; x++)
        c[x] = alpha * a[x] + beta * c[x];
}

/* op(B) rows [k0, k0+kc), columns [j0, j0+nb) into NR-column panels. */
static void pack_b(const gemm_job *j, int64_t j0, int64_t nb, int64_t k0, int64_t kc, float *dst)
{
    for (int64_t q = 0; q < nb; q += NR) {
        int64_t w = nb - q < NR ? nb - q : NR;
        if (!j->tb && w == NR) { /* whole panel */
            for (int64_t k = 0; k < kc; k++)
                copy_nr(dst + k * NR, j->B + (k0 + k) * j->ldb + j0 + q);
        } else if (!j->tb) {
            for (int64_t k = 0; k < kc; k++) {
                const float *s = j->B + (k0 + k) * j->ldb + j0 + q;
                float *d = dst + k * NR;
                int64_t c = 0;
                for (; c < w; c++)
                    d[c] = s[c];
                for (; c < NR; c++)
                    d[c] = 0.0f;
            }
        } else {
            for (int64_t c = 0; c < NR; c++) {
                float *d = dst + c;
                if (c >= w) {
                    for (int64_t k = 0; k < kc; k++)
                        d[k * NR] = 0.0f;
                    continue;
                }
                const float *s = j->B + (j0 + q + c) * j->ldb + k0;
                for (int64_t k = 0; k < kc; k++)
                    d[k * NR] = s[k];
            }
        }
        dst += kc * NR;
    }
}

/* C block (rows m, cols n) from acc; the first K slice applies beta. Full
 * NR-wide rows take fixed-width loops so that gcc vectorizes them. */
static void store_block(const gemm_job *j, float *c, int64_t m, int64_t n, const float *acc,
                        bool first)
{
    float alpha = j->alpha, beta = j->beta;
    bool accumulate = !first || beta == 1.0f;
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * j->ldc;
        const float *ai = acc + i * NR;
        if (n == NR) {
            if (accumulate)
                acc_nr(ci, ai, alpha);
            else if (beta == 0.0f)
                set_nr(ci, ai, alpha);
            else
                scale_nr(ci, ai, alpha, beta);
            continue;
        }
        if (accumulate)
            for (int64_t x = 0; x < n; x++)
                ci[x] += alpha * ai[x];
        else if (beta == 0.0f)
            for (int64_t x = 0; x < n; x++)
                ci[x] = alpha * ai[x];
        else
            for (int64_t x = 0; x < n; x++)
                ci[x] = alpha * ai[x] + beta * ci[x];
    }
}

static void gemm_tile(void *ctx, uint32_t task, uint32_t worker)
{
    const gemm_job *j = ctx;
    int64_t i0 = (int64_t)(task / j->nt) * j->mb;
    int64_t j0 = (int64_t)(task % j->nt) * j->nb;
    int64_t mb = j->M - i0 < j->mb ? j->M - i0 : j->mb;
    int64_t nb = j->N - j0 < j->nb ? j->N - j0 : j->nb;
    float *pa = ds_cpu_pool_scratch(j->pool, worker);
    float *pb = pa + MC * KC;
    float acc[MR * NR];
    for (int64_t k0 = 0; k0 < j->K; k0 += KC) {
        int64_t kc = j->K - k0 < KC ? j->K - k0 : KC;
        pack_a(j, i0, mb, k0, kc, pa);
        pack_b(j, j0, nb, k0, kc, pb);
        for (int64_t q = 0; q < nb; q += NR) {
            int64_t n = nb - q < NR ? nb - q : NR;
            for (int64_t p = 0; p < mb; p += MR) {
                int64_t m = mb - p < MR ? mb - p : MR;
                j->kernel(kc, pa + p * kc, pb + q * kc, acc);
                store_block(j, j->C + (i0 + p) * j->ldc + j0 + q, m, n, acc, k0 == 0);
            }
        }
    }
}

void ds_sgemm(ds_cpu_pool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) { /* no products: C = beta * C */
        for (int64_t i = 0; i < M; i++)
            for (int64_t x = 0; x < N; x++)
                C[i * ldc + x] = beta == 0.0f ? 0.0f : beta * C[i * ldc + x];
        return;
    }
    gemm_job j = {.ta = trans_a, .tb = trans_b, .M = M, .N = N, .K = K, .alpha = alpha,
                  .beta = beta, .A = A, .B = B, .lda = lda, .ldb = ldb, .C = C, .ldc = ldc,
                  .pool = pool, .kernel = pick_micro_kernel()};
    j.mb = M < MC ? ((M + MR - 1) / MR) * MR : MC;
    j.nb = N < NC ? ((N + NR - 1) / NR) * NR : NC;
    /* Enough tiles to keep every worker busy: shrink the N tile first. */
    uint32_t want = 3 * ds_cpu_pool_threads(pool);
    for (;;) {
        j.mt = (uint32_t)((M + j.mb - 1) / j.mb);
        j.nt = (uint32_t)((N + j.nb - 1) / j.nb);
        if (j.mt * j.nt >= want || ds_cpu_pool_threads(pool) == 1)
            break;
        if (j.nb > 4 * NR)
            j.nb = ((j.nb / 2 + NR - 1) / NR) * NR;
        else if (j.mb > 4 * MR)
            j.mb = ((j.mb / 2 + MR - 1) / MR) * MR;
        else
            break;
    }
    ds_cpu_pool_run(pool, j.mt * j.nt, gemm_tile, &j);
}
