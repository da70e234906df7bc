/* ops.c - every IR op in float32 with exact ONNX semantics.
 *
 * Shapes come in at run time (the batch already substituted) and were
 * validated by ds_graph_finalize, so kernels trust them. Conv goes through
 * im2col + SGEMM (im2col skipped for 1x1 stride-1 unpadded kernels, where
 * the input already is the column matrix); depthwise conv has its own
 * direct loop because as a GEMM it would be K = 9 and all overhead. */
#include <math.h>
#include <string.h>

#include "exec/cpu/cpu_ops.h"

int64_t ds_cpu_numel(const ds_cpu_tensor *t)
{
    int64_t n = 1;
    for (uint32_t i = 0; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

static int64_t prod(const int64_t *d, uint32_t from, uint32_t to)
{
    int64_t n = 1;
    for (uint32_t i = from; i < to; i++)
        n *= d[i];
    return n;
}

/* for (idx = lo; idx < hi; idx++) stmt; in fixed chunks of 8 that gcc -O2
 * vectorizes (its default "very cheap" cost model only vectorizes loops
 * whose trip count is a known multiple of the vector width), then a scalar
 * tail. The pointers stmt touches must be restrict-qualified function
 * parameters: gcc ignores restrict on block-scope pointers and would then
 * need a run-time alias check, which that cost model refuses. */
#define VLOOP(idx, lo, hi, stmt)                                                               \
    do {                                                                                       \
        int64_t vl_i_ = (lo), vl_e_ = (hi);                                                    \
        for (; vl_i_ + 8 <= vl_e_; vl_i_ += 8)                                                 \
            for (int64_t vl_k_ = 0; vl_k_ < 8; vl_k_++) {                                      \
                int64_t idx = vl_i_ + vl_k_;                                                   \
                stmt;                                                                          \
            }                                                                                  \
        for (; vl_i_ < vl_e_; vl_i_++) {                                                       \
            int64_t idx = vl_i_;                                                               \
            stmt;                                                                              \
        }                                                                                      \
    } while (0)

static inline float clampf(float v, float lo, float hi)
{
    /* NaN passes through, as in numpy.clip */
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Row kernels: restrict parameters so that gcc vectorizes their VLOOPs. */
static void row_fill(float *restrict y, float v, int64_t n) { VLOOP(i, 0, n, y[i] = v); }

static void row_axpy(float *restrict y, const float *restrict x, float w, int64_t n)
{
    VLOOP(i, 0, n, y[i] += w * x[i]);
}

/* y[q] += w0 x0[s q] + w1 x1[s q] + w2 x2[s q] for q in [lo, hi), s = 1 or 2 */
static void row_taps3(float *restrict y, const float *restrict x0, const float *restrict x1,
                      const float *restrict x2, float w0, float w1, float w2, int64_t lo,
                      int64_t hi, int64_t s)
{
    if (s == 1)
        VLOOP(q, lo, hi, y[q] += w0 * x0[q] + w1 * x1[q] + w2 * x2[q]);
    else
        VLOOP(q, lo, hi, y[q] += w0 * x0[2 * q] + w1 * x1[2 * q] + w2 * x2[2 * q]);
}

static void row_affine(float *restrict y, const float *restrict x, float sub, float mul,
                       float add, int64_t n)
{
    VLOOP(i, 0, n, y[i] = (x[i] - sub) * mul + add);
}

static void apply_activation(const ds_op_attrs *a, float *restrict y, int64_t n)
{
    /* Bounds in locals: read through `a` they could alias y and would block
     * vectorization. The compare-selects keep NaN, as numpy does. */
    float lo = a->clip_min, hi = a->clip_max;
    switch (a->activation) {
    case DS_ACT_NONE:
        break;
    case DS_ACT_RELU:
        VLOOP(i, 0, n, y[i] = y[i] < 0.0f ? 0.0f : y[i]);
        break;
    case DS_ACT_CLIP:
        VLOOP(i, 0, n, {
            float v = y[i] < lo ? lo : y[i];
            y[i] = v > hi ? hi : v;
        });
        break;
    }
}

/* ---- convolution ---- */

typedef struct conv_geom {
    int64_t N, C, H, W, M, OH, OW, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, group, Cg, Mg;
} conv_geom;

static conv_geom conv_geometry(const ds_cpu_op_ctx *c)
{
    const ds_cpu_tensor *x = c->in[0], *w = c->in[1];
    const ds_op_attrs *a = &c->node->attrs;
    conv_geom g = {
        .N = x->dims[0], .C = x->dims[1], .H = x->dims[2], .W = x->dims[3],
        .M = w->dims[0], .OH = c->out->dims[2], .OW = c->out->dims[3],
        .kh = w->dims[2], .kw = w->dims[3], .sh = a->stride[0], .sw = a->stride[1],
        .dh = a->dilation[0], .dw = a->dilation[1], .pt = a->pads[0], .pl = a->pads[1],
        .pb = a->pads[2], .pr = a->pads[3],
        .group = a->group,
    };
    g.Cg = g.C / g.group;
    g.Mg = g.M / g.group;
    return g;
}

static bool conv_is_pointwise(const conv_geom *g, const ds_op_attrs *a)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && a->pads[0] == 0 &&
           a->pads[1] == 0 && a->pads[2] == 0 && a->pads[3] == 0;
}

static bool conv_is_depthwise(const conv_geom *g)
{
    return g->group > 1 && g->group == g->C && g->M == g->C;
}

/* Output columns [lo, hi) whose tap at input column ow*sw + off is inside [0, W). */
static void tap_range(const conv_geom *g, int64_t off, int64_t *lo, int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + g->sw - 1) / g->sw;
    int64_t h = g->W - 1 - off >= 0 ? (g->W - 1 - off) / g->sw + 1 : 0;
    if (h > g->OW)
        h = g->OW;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

typedef struct im2col_job {
    const conv_geom *g;
    const float *x; /* the group's first input channel */
    float *col;     /* [Cg*kh*kw, OH*OW] */
} im2col_job;

static void im2col_channel(void *ctx, uint32_t task, uint32_t worker)
{
    (void)worker;
    const im2col_job *j = ctx;
    const conv_geom *g = j->g;
    int64_t P = g->OH * g->OW;
    const float *xc = j->x + (int64_t)task * g->H * g->W;
    float *row = j->col + (int64_t)task * g->kh * g->kw * P;
    for (int64_t ki = 0; ki < g->kh; ki++) {
        for (int64_t kj = 0; kj < g->kw; kj++, row += P) {
            int64_t off = kj * g->dw - g->pl, lo, hi;
            tap_range(g, off, &lo, &hi);
            for (int64_t oh = 0; oh < g->OH; oh++) {
                float *r = row + oh * g->OW;
                int64_t ih = oh * g->sh - g->pt + ki * g->dh;
                if (ih < 0 || ih >= g->H) {
                    row_fill(r, 0.0f, g->OW);
                    continue;
                }
                const float *xr = xc + ih * g->W + off;
                row_fill(r, 0.0f, lo);
                if (g->sw == 1)
                    memcpy(r + lo, xr + lo, (size_t)(hi - lo) * sizeof *r);
                else
                    for (int64_t ow = lo; ow < hi; ow++)
                        r[ow] = xr[ow * g->sw];
                row_fill(r + hi, 0.0f, g->OW - hi);
            }
        }
    }
}

typedef struct dw_job {
    const conv_geom *g;
    const float *x, *w, *b;
    float *y;
    const ds_op_attrs *a;
    ds_cpu_pool *pool; /* for its per-worker scratch */
} dw_job;

/* A depthwise plane through a zero-padded copy of its input (`pad`, the
 * worker's scratch): every tap of every output is then inside, so each
 * output row is a few full-width vectorized passes with no edge cases. */
static void depthwise_padded(const dw_job *j, const float *x, const float *w, float bias,
                             float *y, float *pad)
{
    const conv_geom *g = j->g;
    int64_t WP = g->W + g->pl + g->pr, HP = g->H + g->pt + g->pb;
    row_fill(pad, 0.0f, g->pt * WP);
    for (int64_t h = 0; h < g->H; h++) {
        float *r = pad + (g->pt + h) * WP;
        row_fill(r, 0.0f, g->pl);
        memcpy(r + g->pl, x + h * g->W, (size_t)g->W * sizeof *r);
        row_fill(r + g->pl + g->W, 0.0f, g->pr);
    }
    row_fill(pad + (g->pt + g->H) * WP, 0.0f, (HP - g->pt - g->H) * WP);
    int64_t sw = g->sw, dw = g->dw;
    for (int64_t oh = 0; oh < g->OH; oh++) {
        float *yr = y + oh * g->OW;
        row_fill(yr, bias, g->OW);
        for (int64_t ki = 0; ki < g->kh; ki++) {
            const float *xr = pad + (oh * g->sh + ki * g->dh) * WP;
            const float *wr = w + ki * g->kw;
            if (g->kw == 3 && (sw == 1 || sw == 2)) {
                row_taps3(yr, xr, xr + dw, xr + 2 * dw, wr[0], wr[1], wr[2], 0, g->OW, sw);
                continue;
            }
            for (int64_t kj = 0; kj < g->kw; kj++) {
                if (sw == 1)
                    row_axpy(yr, xr + kj * dw, wr[kj], g->OW);
                else
                    for (int64_t ow = 0; ow < g->OW; ow++)
                        yr[ow] += wr[kj] * xr[ow * sw + kj * dw];
            }
        }
    }
    apply_activation(j->a, y, g->OH * g->OW);
}

/* One (n, c) plane of a depthwise convolution. Planes too big for the
 * padded copy are done in place: per output row and kernel row, the
 * interior columns (where every tap is inside the input) sum all kw taps
 * in one pass, and the few edge columns check each tap. */
static void depthwise_plane(void *ctx, uint32_t task, uint32_t worker)
{
    const dw_job *j = ctx;
    const conv_geom *g = j->g;
    int64_t ch = (int64_t)task % g->C;
    const float *x = j->x + (int64_t)task * g->H * g->W;
    const float *w = j->w + ch * g->kh * g->kw;
    float *y = j->y + (int64_t)task * g->OH * g->OW;
    float bias = j->b ? j->b[ch] : 0.0f;
    int64_t HP = g->H + g->pt + g->pb, WP = g->W + g->pl + g->pr;
    if (HP * WP <= DS_SGEMM_SCRATCH_FLOATS) {
        depthwise_padded(j, x, w, bias, y, ds_cpu_pool_scratch(j->pool, worker));
        return;
    }
    int64_t in_lo = 0, in_hi = g->OW; /* interior: all taps inside */
    for (int64_t kj = 0; kj < g->kw; kj++) {
        int64_t lo, hi;
        tap_range(g, kj * g->dw - g->pl, &lo, &hi);
        in_lo = lo > in_lo ? lo : in_lo;
        in_hi = hi < in_hi ? hi : in_hi;
    }
    if (in_hi < in_lo)
        in_hi = in_lo;
    int64_t sw = g->sw, dw = g->dw;
    for (int64_t oh = 0; oh < g->OH; oh++) {
        float *yr = y + oh * g->OW;
        row_fill(yr, bias, g->OW);
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t ih = oh * g->sh - g->pt + ki * g->dh;
            if (ih < 0 || ih >= g->H)
                continue;
            const float *xr = x + ih * g->W - g->pl;
            const float *wr = w + ki * g->kw;
            if (g->kw == 3 && (sw == 1 || sw == 2)) {
                row_taps3(yr, xr, xr + dw, xr + 2 * dw, wr[0], wr[1], wr[2], in_lo, in_hi, sw);
            } else {
                for (int64_t kj = 0; kj < g->kw; kj++) {
                    const float *xk = xr + kj * dw;
                    if (sw == 1)
                        row_axpy(yr + in_lo, xk + in_lo, wr[kj], in_hi - in_lo);
                    else
                        for (int64_t ow = in_lo; ow < in_hi; ow++)
                            yr[ow] += wr[kj] * xk[ow * sw];
                }
            }
            /* the edge columns, tap by tap */
            for (int64_t kj = 0; kj < g->kw; kj++) {
                int64_t lo, hi;
                tap_range(g, kj * dw - g->pl, &lo, &hi);
                float wv = wr[kj];
                for (int64_t ow = lo; ow < hi && ow < in_lo; ow++)
                    yr[ow] += wv * xr[ow * sw + kj * dw];
                for (int64_t ow = in_hi > lo ? in_hi : lo; ow < hi; ow++)
                    yr[ow] += wv * xr[ow * sw + kj * dw];
            }
        }
    }
    apply_activation(j->a, y, g->OH * g->OW);
}

size_t ds_cpu_op_scratch_floats(const ds_node *n, const ds_cpu_tensor *const *in,
                                const ds_cpu_tensor *out)
{
    if (n->op != DS_OP_CONV)
        return 0;
    ds_cpu_op_ctx c = {.node = n, .out = (ds_cpu_tensor *)out};
    c.in[0] = in[0];
    c.in[1] = in[1];
    conv_geom g = conv_geometry(&c);
    if (conv_is_depthwise(&g) || conv_is_pointwise(&g, &n->attrs))
        return 0;
    return (size_t)(g.Cg * g.kh * g.kw * g.OH * g.OW);
}

static void op_conv(const ds_cpu_op_ctx *c)
{
    conv_geom g = conv_geometry(c);
    const ds_op_attrs *a = &c->node->attrs;
    const float *x = c->in[0]->data, *w = c->in[1]->data;
    const float *b = c->n_in > 2 && c->in[2] ? c->in[2]->data : NULL;
    float *y = c->out->data;
    if (conv_is_depthwise(&g)) {
        dw_job j = {.g = &g, .x = x, .w = w, .b = b, .y = y, .a = a, .pool = c->pool};
        ds_cpu_pool_run(c->pool, (uint32_t)(g.N * g.C), depthwise_plane, &j);
        return;
    }
    int64_t P = g.OH * g.OW, K = g.Cg * g.kh * g.kw;
    bool pointwise = conv_is_pointwise(&g, a);
    for (int64_t n = 0; n < g.N; n++) {
        for (int64_t gr = 0; gr < g.group; gr++) {
            const float *xg = x + (n * g.C + gr * g.Cg) * g.H * g.W;
            float *yg = y + (n * g.M + gr * g.Mg) * P;
            const float *col = xg;
            if (!pointwise) {
                im2col_job j = {.g = &g, .x = xg, .col = c->scratch};
                ds_cpu_pool_run(c->pool, (uint32_t)g.Cg, im2col_channel, &j);
                col = c->scratch;
            }
            if (b) {
                for (int64_t m = 0; m < g.Mg; m++)
                    row_fill(yg + m * P, b[gr * g.Mg + m], P);
            }
            ds_sgemm(c->pool, false, false, g.Mg, P, K, 1.0f, w + gr * g.Mg * K, K, col, P,
                     b ? 1.0f : 0.0f, yg, P);
        }
    }
    apply_activation(a, y, ds_cpu_numel(c->out));
}

/* ---- pooling ---- */

typedef struct pool_job {
    const ds_cpu_op_ctx *c;
    int64_t H, W, OH, OW;
} pool_job;

/* Why the window loops are clipped up front (ds_window_taps) rather than
 * bound-checked per tap: pads and kernels go up to 65535, and a MaxPool of
 * that window over a 1x1 input cost 65535 checks per output (9.6 s per
 * request at 256x256) for one real tap. Now the cost is the taps visited,
 * which is what ds_graph_flops counts and the work budget bounds. */
static void pool_plane(void *ctx, uint32_t task, uint32_t worker)
{
    (void)worker;
    const pool_job *j = ctx;
    const ds_op_attrs *a = &j->c->node->attrs;
    bool is_max = j->c->node->op == DS_OP_MAXPOOL;
    const float *x = j->c->in[0]->data + (int64_t)task * j->H * j->W;
    float *y = j->c->out->data + (int64_t)task * j->OH * j->OW;
    int64_t kh = a->kernel[0], kw = a->kernel[1], dh = a->dilation[0], dw = a->dilation[1];
    int64_t pt = a->pads[0], pl = a->pads[1], pb = a->pads[2], pr = a->pads[3];
    for (int64_t oh = 0; oh < j->OH; oh++) {
        int64_t hs = oh * a->stride[0] - pt, h0;
        int64_t nh = ds_window_taps(hs, kh, dh, 0, j->H, &h0);
        for (int64_t ow = 0; ow < j->OW; ow++) {
            int64_t ws = ow * a->stride[1] - pl, w0;
            int64_t nw = ds_window_taps(ws, kw, dw, 0, j->W, &w0);
            float m = -INFINITY, s = 0.0f;
            for (int64_t ki = h0; ki < h0 + nh; ki++) {
                int64_t row = (hs + ki * dh) * j->W + ws;
                for (int64_t kj = w0; kj < w0 + nw; kj++) {
                    float v = x[row + kj * dw];
                    if (is_max) {
                        if (v > m || isnan(v))
                            m = v;
                    } else {
                        s += v;
                    }
                }
            }
            if (is_max) {
                y[oh * j->OW + ow] = m;
                continue;
            }
            int64_t cnt, unused;
            if (a->count_include_pad) /* taps inside the padded input */
                cnt = ds_window_taps(hs, kh, dh, -pt, j->H + pb, &unused) *
                      ds_window_taps(ws, kw, dw, -pl, j->W + pr, &unused);
            else
                cnt = nh * nw;
            y[oh * j->OW + ow] = cnt > 0 ? s / (float)cnt : 0.0f;
        }
    }
}

static void op_pool(const ds_cpu_op_ctx *c)
{
    const ds_cpu_tensor *x = c->in[0];
    pool_job j = {.c = c, .H = x->dims[2], .W = x->dims[3], .OH = c->out->dims[2],
                  .OW = c->out->dims[3]};
    ds_cpu_pool_run(c->pool, (uint32_t)(x->dims[0] * x->dims[1]), pool_plane, &j);
}

static void op_global_pool(const ds_cpu_op_ctx *c)
{
    const ds_cpu_tensor *x = c->in[0];
    int64_t planes = x->dims[0] * x->dims[1], sp = prod(x->dims, 2, x->rank);
    bool is_max = c->node->op == DS_OP_GLOBAL_MAXPOOL;
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x->data + p * sp;
        if (is_max) {
            float m = -INFINITY;
            for (int64_t i = 0; i < sp; i++)
                if (xp[i] > m || isnan(xp[i]))
                    m = xp[i];
            c->out->data[p] = m;
        } else {
            double s = 0.0;
            for (int64_t i = 0; i < sp; i++)
                s += xp[i];
            c->out->data[p] = (float)(s / (double)sp);
        }
    }
}

/* ---- normalization ---- */

static void op_batchnorm(const ds_cpu_op_ctx *c)
{
    const ds_cpu_tensor *x = c->in[0];
    const float *scale = c->in[1]->data, *bias = c->in[2]->data;
    const float *mean = c->in[3]->data, *var = c->in[4]->data;
    float eps = c->node->attrs.epsilon;
    int64_t N = x->dims[0], C = x->dims[1], sp = prod(x->dims, 2, x->rank);
    for (int64_t n = 0; n < N; n++) {
        for (int64_t ch = 0; ch < C; ch++) {
            float f = scale[ch] / sqrtf(var[ch] + eps);
            float m = mean[ch], bb = bias[ch];
            row_affine(c->out->data + (n * C + ch) * sp, x->data + (n * C + ch) * sp, m, f, bb,
                       sp);
        }
    }
}

static void op_lrn(const ds_cpu_op_ctx *c)
{
    /* ONNX: sq = sum of x^2 over channels [c - floor((size-1)/2),
     * c + ceil((size-1)/2)], y = x / (bias + alpha / size * sq)^beta */
    const ds_cpu_tensor *x = c->in[0];
    const ds_op_attrs *a = &c->node->attrs;
    int64_t N = x->dims[0], C = x->dims[1], sp = prod(x->dims, 2, x->rank);
    int64_t before = (a->size - 1) / 2, after = a->size - 1 - before;
    float k = a->alpha / (float)a->size;
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x->data + n * C * sp;
        float *yn = c->out->data + n * C * sp;
        for (int64_t ch = 0; ch < C; ch++) {
            int64_t lo = ch - before < 0 ? 0 : ch - before;
            int64_t hi = ch + after > C - 1 ? C - 1 : ch + after;
            for (int64_t i = 0; i < sp; i++) {
                float sq = 0.0f;
                for (int64_t cc = lo; cc <= hi; cc++) {
                    float v = xn[cc * sp + i];
                    sq += v * v;
                }
                yn[ch * sp + i] = xn[ch * sp + i] / powf(a->bias + k * sq, a->beta);
            }
        }
    }
}

/* ---- elementwise ---- */

static void unary_rows(ds_op_kind op, const ds_op_attrs *a, float lo, float hi,
                       float *restrict y, const float *restrict x, int64_t n)
{
    float alpha = a->alpha, beta = a->beta;
    switch (op) {
    case DS_OP_RELU:
        VLOOP(i, 0, n, y[i] = x[i] < 0.0f ? 0.0f : x[i]);
        break;
    case DS_OP_CLIP:
        VLOOP(i, 0, n, {
            float v = x[i] < lo ? lo : x[i];
            y[i] = v > hi ? hi : v;
        });
        break;
    case DS_OP_LEAKY_RELU:
        VLOOP(i, 0, n, y[i] = x[i] < 0.0f ? alpha * x[i] : x[i]);
        break;
    case DS_OP_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case DS_OP_TANH:
        for (int64_t i = 0; i < n; i++)
            y[i] = tanhf(x[i]);
        break;
    case DS_OP_HARD_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            y[i] = clampf(alpha * x[i] + beta, 0.0f, 1.0f);
        break;
    case DS_OP_HARD_SWISH:
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * clampf(x[i] / 6.0f + 0.5f, 0.0f, 1.0f);
        break;
    default: /* Identity, Flatten, Reshape: the same floats in the same order */
        memcpy(y, x, (size_t)n * sizeof *y);
        break;
    }
}

static void op_unary(const ds_cpu_op_ctx *c)
{
    const ds_op_attrs *a = &c->node->attrs;
    float lo = a->clip_min, hi = a->clip_max;
    if (c->node->op == DS_OP_CLIP) { /* bounds given as (scalar) inputs win */
        if (c->n_in > 1 && c->in[1])
            lo = c->in[1]->data[0];
        if (c->n_in > 2 && c->in[2])
            hi = c->in[2]->data[0];
    }
    unary_rows(c->node->op, a, lo, hi, c->out->data, c->in[0]->data, ds_cpu_numel(c->out));
}

typedef enum bcast_op { BC_COPY, BC_ADD, BC_MUL, BC_PRELU } bcast_op;

/* y[i] (op)= b[i * st] for i < n; st is 1 or 0 (b repeats one value). */
static void broadcast_row(bcast_op op, float *restrict y, const float *restrict b, int64_t n,
                          int64_t st)
{
    if (st == 0) {
        float v = b[0];
        switch (op) {
        case BC_COPY: VLOOP(i, 0, n, y[i] = v); break;
        case BC_ADD: VLOOP(i, 0, n, y[i] += v); break;
        case BC_MUL: VLOOP(i, 0, n, y[i] *= v); break;
        case BC_PRELU: VLOOP(i, 0, n, y[i] = y[i] < 0.0f ? y[i] * v : y[i]); break;
        }
        return;
    }
    switch (op) {
    case BC_COPY: VLOOP(i, 0, n, y[i] = b[i]); break;
    case BC_ADD: VLOOP(i, 0, n, y[i] += b[i]); break;
    case BC_MUL: VLOOP(i, 0, n, y[i] *= b[i]); break;
    case BC_PRELU: VLOOP(i, 0, n, y[i] = y[i] < 0.0f ? y[i] * b[i] : y[i]); break;
    }
}

/* out (op)= b broadcast to out's shape (numpy rules, b's rank <= out's). */
static void broadcast_apply(ds_cpu_tensor *out, const ds_cpu_tensor *b, bcast_op op)
{
    uint32_t r = out->rank;
    int64_t stride[DS_MAX_RANK], idx[DS_MAX_RANK] = {0};
    int64_t s = 1;
    for (uint32_t i = r; i-- > 0;) {
        int64_t bi = (int64_t)i - (int64_t)(r - b->rank);
        if (bi < 0 || b->dims[bi] == 1) {
            stride[i] = 0;
        } else {
            stride[i] = s;
        }
        if (bi >= 0)
            s *= b->dims[bi];
    }
    int64_t inner = r ? out->dims[r - 1] : 1, istride = r ? stride[r - 1] : 0;
    int64_t outer = ds_cpu_numel(out) / (inner ? inner : 1);
    float *y = out->data;
    int64_t bn = ds_cpu_numel(b), on = ds_cpu_numel(out);
    if (bn == on || bn == 1) { /* same shape (or a scalar): one flat row */
        broadcast_row(op, y, b->data, on, bn == on);
        return;
    }
    int64_t boff = 0;
    for (int64_t o = 0; o < outer; o++) {
        broadcast_row(op, y, b->data + boff, inner, istride);
        y += inner;
        /* advance the multi-index over all but the last axis */
        for (int64_t d = (int64_t)r - 2; d >= 0; d--) {
            idx[d]++;
            boff += stride[d];
            if (idx[d] < out->dims[d])
                break;
            boff -= stride[d] * idx[d];
            idx[d] = 0;
        }
    }
}

static void op_broadcast(const ds_cpu_op_ctx *c)
{
    bcast_op op = c->node->op == DS_OP_MUL ? BC_MUL
                : c->node->op == DS_OP_PRELU ? BC_PRELU : BC_ADD;
    broadcast_apply(c->out, c->in[0], BC_COPY);
    for (uint32_t i = 1; i < c->n_in; i++)
        broadcast_apply(c->out, c->in[i], op);
}

/* ---- matrix products ---- */

static void op_gemm(const ds_cpu_op_ctx *c)
{
    const ds_op_attrs *a = &c->node->attrs;
    const ds_cpu_tensor *A = c->in[0], *B = c->in[1];
    const ds_cpu_tensor *C = c->n_in > 2 ? c->in[2] : NULL;
    int64_t M = c->out->dims[0], N = c->out->dims[1];
    int64_t K = a->trans_a ? A->dims[0] : A->dims[1];
    float *y = c->out->data;
    if (C) { /* Y = beta * C broadcast to [M, N], then += alpha * A B */
        broadcast_apply(c->out, C, BC_COPY);
        if (a->beta != 1.0f)
            for (int64_t i = 0; i < M * N; i++)
                y[i] *= a->beta;
    }
    ds_sgemm(c->pool, a->trans_a, a->trans_b, M, N, K, a->alpha, A->data, A->dims[1], B->data,
             B->dims[1], C ? 1.0f : 0.0f, y, N);
    apply_activation(a, y, M * N);
}

static void op_matmul(const ds_cpu_op_ctx *c)
{
    const ds_cpu_tensor *A = c->in[0], *B = c->in[1];
    /* numpy: 1-D A is a row [1,K], 1-D B a column [K,1] */
    int64_t M = A->rank > 1 ? A->dims[A->rank - 2] : 1, K = A->dims[A->rank - 1];
    int64_t N = B->rank > 1 ? B->dims[B->rank - 1] : 1;
    uint32_t ba = A->rank > 2 ? A->rank - 2 : 0, bb = B->rank > 2 ? B->rank - 2 : 0;
    uint32_t br = ba > bb ? ba : bb;
    int64_t bdims[DS_MAX_RANK], sa[DS_MAX_RANK], sb[DS_MAX_RANK];
    int64_t batch = 1;
    for (uint32_t i = 0; i < br; i++) {
        int64_t da = i + ba >= br ? A->dims[i + ba - br] : 1;
        int64_t db = i + bb >= br ? B->dims[i + bb - br] : 1;
        bdims[i] = da > db ? da : db;
        batch *= bdims[i];
    }
    /* element strides of each batch axis, 0 where broadcast */
    int64_t s1 = M * K, s2 = K * N;
    for (uint32_t i = br; i-- > 0;) {
        int64_t da = i + ba >= br ? A->dims[i + ba - br] : 1;
        int64_t db = i + bb >= br ? B->dims[i + bb - br] : 1;
        sa[i] = da == 1 ? 0 : s1;
        sb[i] = db == 1 ? 0 : s2;
        s1 *= da;
        s2 *= db;
    }
    if (bb == 0) { /* B shared by every batch entry: one tall product */
        ds_sgemm(c->pool, false, false, batch * M, N, K, 1.0f, A->data, K, B->data, N, 0.0f,
                 c->out->data, N);
        return;
    }
    int64_t idx[DS_MAX_RANK] = {0};
    for (int64_t t = 0; t < batch; t++) {
        int64_t oa = 0, ob = 0, rem = t;
        for (uint32_t i = br; i-- > 0;) {
            idx[i] = rem % bdims[i];
            rem /= bdims[i];
            oa += idx[i] * sa[i];
            ob += idx[i] * sb[i];
        }
        ds_sgemm(c->pool, false, false, M, N, K, 1.0f, A->data + oa, K, B->data + ob, N, 0.0f,
                 c->out->data + t * M * N, N);
    }
}

/* ---- layout ---- */

static void op_concat(const ds_cpu_op_ctx *c)
{
    uint32_t axis = (uint32_t)c->node->attrs.axis;
    const ds_cpu_tensor *o = c->out;
    int64_t outer = prod(o->dims, 0, axis), inner = prod(o->dims, axis + 1, o->rank);
    float *y = o->data;
    for (int64_t i = 0; i < outer; i++) {
        for (uint32_t k = 0; k < c->n_in; k++) {
            int64_t n = c->in[k]->dims[axis] * inner;
            memcpy(y, c->in[k]->data + i * n, (size_t)n * sizeof *y);
            y += n;
        }
    }
}

static void op_transpose(const ds_cpu_op_ctx *c)
{
    const ds_cpu_tensor *x = c->in[0];
    const uint32_t *perm = c->node->attrs.perm;
    uint32_t r = x->rank;
    if (r == 0) {
        c->out->data[0] = x->data[0];
        return;
    }
    int64_t xs[DS_MAX_RANK], s[DS_MAX_RANK], idx[DS_MAX_RANK] = {0};
    int64_t acc = 1;
    for (uint32_t i = r; i-- > 0;) {
        xs[i] = acc;
        acc *= x->dims[i];
    }
    for (uint32_t i = 0; i < r; i++)
        s[i] = xs[perm[i]]; /* input stride of output axis i */
    int64_t inner = c->out->dims[r - 1], is = s[r - 1];
    int64_t outer = ds_cpu_numel(c->out) / inner;
    float *y = c->out->data;
    int64_t off = 0;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++)
            y[i] = x->data[off + i * is];
        y += inner;
        for (int64_t d = (int64_t)r - 2; d >= 0; d--) {
            idx[d]++;
            off += s[d];
            if (idx[d] < c->out->dims[d])
                break;
            off -= s[d] * idx[d];
            idx[d] = 0;
        }
    }
}

static void op_softmax(const ds_cpu_op_ctx *c)
{
    const ds_cpu_tensor *x = c->in[0];
    uint32_t axis = (uint32_t)c->node->attrs.axis;
    int64_t outer = prod(x->dims, 0, axis), n, inner;
    if (c->node->attrs.softmax_legacy) { /* opset < 13: rows of [outer, rest] */
        n = prod(x->dims, axis, x->rank);
        inner = 1;
    } else {
        n = x->dims[axis];
        inner = prod(x->dims, axis + 1, x->rank);
    }
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            const float *xp = x->data + o * n * inner + i;
            float *yp = c->out->data + o * n * inner + i;
            float m = -INFINITY;
            for (int64_t k = 0; k < n; k++)
                m = xp[k * inner] > m ? xp[k * inner] : m;
            float s = 0.0f;
            for (int64_t k = 0; k < n; k++) {
                float e = expf(xp[k * inner] - m);
                yp[k * inner] = e;
                s += e;
            }
            for (int64_t k = 0; k < n; k++)
                yp[k * inner] /= s;
        }
    }
}

void ds_cpu_op_run(const ds_cpu_op_ctx *c)
{
    switch (c->node->op) {
    case DS_OP_CONV: op_conv(c); break;
    case DS_OP_BATCHNORM: op_batchnorm(c); break;
    case DS_OP_RELU:
    case DS_OP_CLIP:
    case DS_OP_LEAKY_RELU:
    case DS_OP_SIGMOID:
    case DS_OP_TANH:
    case DS_OP_HARD_SIGMOID:
    case DS_OP_HARD_SWISH:
    case DS_OP_IDENTITY:
    case DS_OP_FLATTEN:
    case DS_OP_RESHAPE: op_unary(c); break;
    case DS_OP_PRELU:
    case DS_OP_ADD:
    case DS_OP_MUL:
    case DS_OP_SUM: op_broadcast(c); break;
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL: op_pool(c); break;
    case DS_OP_GLOBAL_AVGPOOL:
    case DS_OP_GLOBAL_MAXPOOL: op_global_pool(c); break;
    case DS_OP_GEMM: op_gemm(c); break;
    case DS_OP_MATMUL: op_matmul(c); break;
    case DS_OP_CONCAT: op_concat(c); break;
    case DS_OP_TRANSPOSE: op_transpose(c); break;
    case DS_OP_SOFTMAX: op_softmax(c); break;
    case DS_OP_LRN: op_lrn(c); break;
    case DS_OP_COUNT: break;
    }
}
