/* zoo_layers.c - the zoo's layer builder: shapes, weights, nodes (see zoo_build.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/zoo_build.h"
#include "util/error.h"
#include "util/fault.h"

#define ZB_NAME_LEN 192

static ds_zt zt_none(void) { return (ds_zt){.id = DS_TENSOR_NONE}; }

static bool zb_dead(const ds_zb *b, ds_zt x)
{
    return b->st != DSTACK_OK || x.id == DS_TENSOR_NONE;
}

/* The graph adders report failure only as DS_TENSOR_NONE, with the cause in
 * the thread's message. The zoo's own arguments are well-formed, so what is
 * left is running out of memory. */
static uint32_t zb_checked(ds_zb *b, uint32_t id)
{
    if (id == DS_TENSOR_NONE && b->st == DSTACK_OK)
        b->st = DSTACK_ERR_OUT_OF_MEMORY;
    return id;
}

static void zb_internal(ds_zb *b, const char *layer, const char *why)
{
    if (b->st == DSTACK_OK)
        b->st = ds_fail(DSTACK_ERR_INTERNAL, "zoo '%s', layer '%s': %s", b->name, layer, why);
}

/* ---- weights ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* n floats uniform in [-bound, bound), two per 64-bit draw (24 bits each).
 * One exact integer times one scale: a single rounding, so no compiler's
 * multiply-add contraction can change the bits. */
static void fill_uniform(ds_zb *b, float *dst, size_t n, float bound)
{
    const float scale = bound / 8388608.0f; /* 2^23 */
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t z = splitmix64(&b->rng);
        dst[i] = (float)((int32_t)(z >> 40) - 8388608) * scale;
        dst[i + 1] = (float)((int32_t)((z >> 8) & 0xFFFFFFu) - 8388608) * scale;
    }
    if (i < n)
        dst[i] = (float)((int32_t)(splitmix64(&b->rng) >> 40) - 8388608) * scale;
}

/* A constant of `rank` dims filled U(-bound, bound); returns its data
 * pointer through *data (owned by the graph) for callers that adjust it. */
static uint32_t zb_const(ds_zb *b, const char *layer, const char *suffix, uint32_t rank,
                         const int64_t *dims, float bound, float **data)
{
    if (b->st != DSTACK_OK)
        return DS_TENSOR_NONE;
    char name[ZB_NAME_LEN];
    snprintf(name, sizeof name, "%s.%s", layer, suffix);
    size_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        n *= (size_t)dims[i];
    float *w = ds_malloc(n * sizeof *w);
    if (!w) {
        b->st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "zoo '%s': %zu bytes for weights '%s'", b->name,
                        n * sizeof *w, name);
        return DS_TENSOR_NONE;
    }
    fill_uniform(b, w, n, bound);
    if (data)
        *data = w;
    return zb_checked(b, ds_graph_add_const(b->g, name, rank, dims, w));
}

/* ---- shapes ---- */

/* Output side of a window op, torch rules (ceil mode: the last window must
 * start inside the input or its left padding). A padded input smaller than
 * the window is refused, as torch does, except that torch's ceil mode lets
 * such a window hang off the edge (GoogLeNet's maxpool4 on a 1x1 map); the
 * zoo refuses that too, so every window covers real pixels. */
static bool zb_window_out(ds_zb *b, const char *layer, uint32_t in, uint32_t kernel,
                          uint32_t stride, uint32_t pad, bool ceil_mode, uint32_t *out)
{
    if (in + 2 * pad < kernel || in == 0) {
        b->st = ds_fail(DSTACK_ERR_SHAPE,
                        "zoo '%s': image_size %u is too small: layer '%s' gets a %ux%u map, "
                        "its %ux%u window (pad %u) needs at least %ux%u",
                        b->name, b->image_size, layer, in, in, kernel, kernel, pad,
                        kernel > 2 * pad ? kernel - 2 * pad : 1,
                        kernel > 2 * pad ? kernel - 2 * pad : 1);
        return false;
    }
    uint32_t span = in + 2 * pad - kernel;
    uint32_t o = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
    if (ceil_mode && (o - 1) * stride >= in + pad)
        o--;
    *out = o;
    return true;
}

static void window_attrs(ds_op_attrs *a, uint32_t kernel, uint32_t stride, uint32_t pad)
{
    ds_op_attrs_init(a);
    a->kernel[0] = a->kernel[1] = kernel;
    a->stride[0] = a->stride[1] = stride ? stride : 1;
    a->pads[0] = a->pads[1] = a->pads[2] = a->pads[3] = pad;
}

static uint32_t zb_node(ds_zb *b, ds_op_kind op, const char *name, const uint32_t *inputs,
                        uint32_t n_inputs, const ds_op_attrs *a, const char *out_name)
{
    return zb_checked(
        b, ds_graph_add_node(b->g, op, name, inputs, n_inputs, a, out_name ? out_name : name));
}

/* ---- layers ---- */

ds_zt ds_zb_input(ds_zb *b)
{
    if (b->st != DSTACK_OK)
        return zt_none();
    int64_t dims[4] = {1, 3, b->image_size, b->image_size};
    uint32_t id = zb_checked(b, ds_graph_add_input(b->g, "input", 4, dims));
    return (ds_zt){.id = id, .c = 3, .h = b->image_size, .w = b->image_size};
}

ds_zt ds_zb_conv(ds_zb *b, ds_zt x, const char *name, ds_zconv c)
{
    if (zb_dead(b, x))
        return zt_none();
    uint32_t stride = c.stride ? c.stride : 1, group = c.group ? c.group : 1;
    if (x.flat || c.cout == 0 || c.kernel == 0 || x.c % group || c.cout % group) {
        zb_internal(b, name, "bad conv geometry");
        return zt_none();
    }
    ds_zt y = {.c = c.cout};
    if (!zb_window_out(b, name, x.h, c.kernel, stride, c.pad, false, &y.h) ||
        !zb_window_out(b, name, x.w, c.kernel, stride, c.pad, false, &y.w))
        return zt_none();

    uint32_t cin_g = x.c / group;
    float fan_in = (float)cin_g * (float)(c.kernel * c.kernel);
    float gain = c.linear ? 1.0f : sqrtf(2.0f);
    int64_t wd[4] = {c.cout, cin_g, c.kernel, c.kernel};
    /* One statement per constant: the RNG stream must be consumed in a fixed
     * order, and initializer lists have none. */
    uint32_t in[3] = {x.id, DS_TENSOR_NONE, DS_TENSOR_NONE};
    in[1] = zb_const(b, name, "weight", 4, wd, gain * sqrtf(3.0f / fan_in), NULL);
    if (c.bias) {
        int64_t bd[1] = {c.cout};
        in[2] = zb_const(b, name, "bias", 1, bd, 1.0f / sqrtf(fan_in), NULL);
    }
    if (b->st != DSTACK_OK)
        return zt_none();
    ds_op_attrs a;
    window_attrs(&a, c.kernel, stride, c.pad);
    a.group = group;
    y.id = zb_node(b, DS_OP_CONV, name, in, c.bias ? 3 : 2, &a, NULL);
    return b->st == DSTACK_OK ? y : zt_none();
}

ds_zt ds_zb_bn(ds_zb *b, ds_zt x, const char *name, float epsilon, float gamma_scale)
{
    if (zb_dead(b, x))
        return zt_none();
    int64_t d[1] = {x.c};
    float *gamma = NULL, *var = NULL;
    uint32_t in[5] = {x.id, 0, 0, 0, 0};
    in[1] = zb_const(b, name, "weight", 1, d, 0.1f, &gamma);
    in[2] = zb_const(b, name, "bias", 1, d, 0.05f, NULL);
    in[3] = zb_const(b, name, "running_mean", 1, d, 0.05f, NULL);
    in[4] = zb_const(b, name, "running_var", 1, d, 0.1f, &var);
    if (b->st != DSTACK_OK)
        return zt_none();
    for (uint32_t i = 0; i < x.c; i++) {
        gamma[i] = gamma_scale * (1.0f + gamma[i]);
        var[i] += 1.0f;
    }
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.epsilon = epsilon;
    ds_zt y = x;
    y.id = zb_node(b, DS_OP_BATCHNORM, name, in, 5, &a, NULL);
    return b->st == DSTACK_OK ? y : zt_none();
}

static ds_zt zb_unary(ds_zb *b, ds_zt x, ds_op_kind op, const char *name, const ds_op_attrs *a)
{
    if (zb_dead(b, x))
        return zt_none();
    ds_op_attrs def;
    if (!a) {
        ds_op_attrs_init(&def);
        a = &def;
    }
    ds_zt y = x;
    y.id = zb_node(b, op, name, &x.id, 1, a, NULL);
    return b->st == DSTACK_OK ? y : zt_none();
}

ds_zt ds_zb_relu(ds_zb *b, ds_zt x, const char *name)
{
    return zb_unary(b, x, DS_OP_RELU, name, NULL);
}

ds_zt ds_zb_relu6(ds_zb *b, ds_zt x, const char *name)
{
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.clip_min = 0.0f;
    a.clip_max = 6.0f;
    return zb_unary(b, x, DS_OP_CLIP, name, &a);
}

static ds_zt zb_pool(ds_zb *b, ds_zt x, ds_op_kind op, const char *name, uint32_t kernel,
                     uint32_t stride, uint32_t pad, bool ceil_mode)
{
    if (zb_dead(b, x))
        return zt_none();
    if (x.flat) {
        zb_internal(b, name, "pooling a flat tensor");
        return zt_none();
    }
    ds_zt y = x;
    if (!zb_window_out(b, name, x.h, kernel, stride, pad, ceil_mode, &y.h) ||
        !zb_window_out(b, name, x.w, kernel, stride, pad, ceil_mode, &y.w))
        return zt_none();
    ds_op_attrs a;
    window_attrs(&a, kernel, stride, pad);
    a.ceil_mode = ceil_mode;
    a.count_include_pad = true;
    y.id = zb_node(b, op, name, &x.id, 1, &a, NULL);
    return b->st == DSTACK_OK ? y : zt_none();
}

ds_zt ds_zb_maxpool(ds_zb *b, ds_zt x, const char *name, uint32_t kernel, uint32_t stride,
                    uint32_t pad, bool ceil_mode)
{
    return zb_pool(b, x, DS_OP_MAXPOOL, name, kernel, stride, pad, ceil_mode);
}

ds_zt ds_zb_avgpool(ds_zb *b, ds_zt x, const char *name, uint32_t kernel, uint32_t stride,
                    uint32_t pad)
{
    return zb_pool(b, x, DS_OP_AVGPOOL, name, kernel, stride, pad, false);
}

ds_zt ds_zb_global_avgpool(ds_zb *b, ds_zt x, const char *name)
{
    ds_zt y = zb_unary(b, x, DS_OP_GLOBAL_AVGPOOL, name, NULL);
    y.h = y.w = 1;
    return y;
}

/* Reshape to `rank` dims with dims[0] = 0 (copy the batch). */
static ds_zt zb_reshape(ds_zb *b, ds_zt x, const char *name, uint32_t rank, const int64_t *shape)
{
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.shape_rank = rank;
    for (uint32_t i = 0; i < rank; i++)
        a.shape[i] = shape[i];
    return zb_unary(b, x, DS_OP_RESHAPE, name, &a);
}

ds_zt ds_zb_adaptive_avgpool(ds_zb *b, ds_zt x, const char *name, uint32_t target)
{
    if (zb_dead(b, x))
        return zt_none();
    if (x.flat || target == 0) {
        zb_internal(b, name, "bad adaptive pool");
        return zt_none();
    }
    if (x.h == target && x.w == target)
        return x;
    if (x.h == x.w && x.h % target == 0)
        return ds_zb_avgpool(b, x, name, x.h / target, x.h / target, 0);

    char nm[ZB_NAME_LEN];
    snprintf(nm, sizeof nm, "%s.flat", name);
    int64_t flat[3] = {0, x.c, (int64_t)x.h * x.w};
    ds_zt f = zb_reshape(b, x, nm, 3, flat);
    if (b->st != DSTACK_OK)
        return zt_none();

    /* P[(y*w + x), (i*t + j)] = 1/area of bin (i, j) when pixel (y, x) is in it. */
    size_t hw = (size_t)x.h * x.w, tt = (size_t)target * target;
    float *p = ds_calloc(hw * tt, sizeof *p);
    if (!p) {
        b->st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "zoo '%s': pooling matrix of layer '%s'", b->name,
                        name);
        return zt_none();
    }
    for (uint32_t i = 0; i < target; i++) {
        uint32_t y0 = i * x.h / target, y1 = ((i + 1) * x.h + target - 1) / target;
        for (uint32_t j = 0; j < target; j++) {
            uint32_t x0 = j * x.w / target, x1 = ((j + 1) * x.w + target - 1) / target;
            float v = 1.0f / (float)((y1 - y0) * (x1 - x0));
            for (uint32_t yy = y0; yy < y1; yy++)
                for (uint32_t xx = x0; xx < x1; xx++)
                    p[((size_t)yy * x.w + xx) * tt + (size_t)i * target + j] = v;
        }
    }
    snprintf(nm, sizeof nm, "%s.pool_matrix", name);
    int64_t pd[2] = {(int64_t)hw, (int64_t)tt};
    uint32_t in[2] = {f.id, zb_checked(b, ds_graph_add_const(b->g, nm, 2, pd, p))};
    if (b->st != DSTACK_OK)
        return zt_none();
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    snprintf(nm, sizeof nm, "%s.matmul", name);
    ds_zt m = f;
    m.id = zb_node(b, DS_OP_MATMUL, nm, in, 2, &a, NULL);
    int64_t back[4] = {0, x.c, target, target};
    ds_zt y = zb_reshape(b, m, name, 4, back);
    y.h = y.w = target;
    return y;
}

ds_zt ds_zb_add(ds_zb *b, ds_zt x, ds_zt y, const char *name)
{
    if (zb_dead(b, x) || zb_dead(b, y))
        return zt_none();
    if (x.c != y.c || x.h != y.h || x.w != y.w || x.flat != y.flat) {
        zb_internal(b, name, "adding tensors of different shapes");
        return zt_none();
    }
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    uint32_t in[2] = {x.id, y.id};
    ds_zt s = x;
    s.id = zb_node(b, DS_OP_ADD, name, in, 2, &a, NULL);
    return b->st == DSTACK_OK ? s : zt_none();
}

ds_zt ds_zb_concat(ds_zb *b, const ds_zt *xs, uint32_t n, const char *name)
{
    if (b->st != DSTACK_OK)
        return zt_none();
    if (n == 0 || n > DS_NODE_MAX_INPUTS) {
        zb_internal(b, name, "concat of 0 or too many inputs");
        return zt_none();
    }
    uint32_t in[DS_NODE_MAX_INPUTS];
    ds_zt y = xs[0];
    y.c = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (zb_dead(b, xs[i]))
            return zt_none();
        if (xs[i].h != xs[0].h || xs[i].w != xs[0].w || xs[i].flat) {
            zb_internal(b, name, "concat of maps of different sides");
            return zt_none();
        }
        in[i] = xs[i].id;
        y.c += xs[i].c;
    }
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.axis = 1;
    y.id = zb_node(b, DS_OP_CONCAT, name, in, n, &a, NULL);
    return b->st == DSTACK_OK ? y : zt_none();
}

ds_zt ds_zb_flatten(ds_zb *b, ds_zt x, const char *name)
{
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.axis = 1;
    ds_zt y = zb_unary(b, x, DS_OP_FLATTEN, name, &a);
    y.c = x.c * x.h * x.w;
    y.h = y.w = 1;
    y.flat = true;
    return y;
}

ds_zt ds_zb_linear(ds_zb *b, ds_zt x, const char *name, uint32_t out, bool relu_follows,
                   const char *out_name)
{
    if (zb_dead(b, x))
        return zt_none();
    if (!x.flat || out == 0) {
        zb_internal(b, name, "linear layer on a non-flat tensor");
        return zt_none();
    }
    float fan_in = (float)x.c, gain = relu_follows ? sqrtf(2.0f) : 1.0f;
    int64_t wd[2] = {out, x.c}, bd[1] = {out};
    uint32_t in[3] = {x.id, 0, 0};
    in[1] = zb_const(b, name, "weight", 2, wd, gain * sqrtf(3.0f / fan_in), NULL);
    in[2] = zb_const(b, name, "bias", 1, bd, 1.0f / sqrtf(fan_in), NULL);
    if (b->st != DSTACK_OK)
        return zt_none();
    ds_op_attrs a;
    ds_op_attrs_init(&a);
    a.alpha = 1.0f;
    a.beta = 1.0f;
    a.trans_b = true;
    ds_zt y = {.c = out, .h = 1, .w = 1, .flat = true};
    y.id = zb_node(b, DS_OP_GEMM, name, in, 3, &a, out_name);
    return b->st == DSTACK_OK ? y : zt_none();
}

ds_zt ds_zb_gap_fc_head(ds_zb *b, ds_zt x, const char *fc_name)
{
    x = ds_zb_global_avgpool(b, x, "avgpool");
    x = ds_zb_flatten(b, x, "flatten");
    return ds_zb_linear(b, x, fc_name, b->classes, false, "logits");
}
