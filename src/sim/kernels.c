/* kernels.c - graph -> kernels and the analytic time of a kernel list; the
 * model is documented in kernels.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/kernels.h"
#include "util/error.h"

/* ---- the device ---- */

/* Fitted to bench/results/gpu-h100 by bench/sim_calibration; the record of
 * data and fit is bench/profiles/h100-sim.txt (tests/test_sim.c checks that
 * these numbers and that file agree). */
#define H100_SM_FLOPS 2.52e+11
#define H100_SM_FLOPS_SIMPLE 1.62e+10
#define H100_MEM_BW 2e+12
#define H100_SM_MEM_BW 1.9e+11
#define H100_LAUNCH_GAP_NS 2780.0
#define H100_BATCH_OVERHEAD_NS 51500.0
#define H100_HOST_BW 2.16e+10
#define H100_SAT_OCCUPANCY 0.775

void ds_sim_device_default(ds_sim_device *d, dstack_partitioning partitioning,
                           uint32_t sm_count_override)
{
    memset(d, 0, sizeof *d);
    uint32_t sms = sm_count_override ? sm_count_override : 132;
    d->sm_count = sms;
    bool none = partitioning == DSTACK_PARTITION_NONE || partitioning == DSTACK_PARTITION_MPS;
    if (none || sms < 8) {
        d->partitioning = DSTACK_PARTITION_NONE;
        d->unit_sms = sms;
        d->n_units = 1;
    } else {
        /* Units of 8; a remainder costs one more unit to GPC boundaries, as
         * the H100's split gives 15 units + 12 SMs, not 16 + 4. */
        d->partitioning = DSTACK_PARTITION_GREEN_CTX;
        d->unit_sms = 8;
        d->n_units = sms / 8 - (sms % 8 && sms / 8 > 1 ? 1 : 0);
        d->tail_leftover = true; /* the split's remainder joins the last unit */
    }
    snprintf(d->name, sizeof d->name, "sim H100 SXM (%u SMs, %s)", sms,
             d->partitioning == DSTACK_PARTITION_NONE ? "no partitions" : "green-context units");
    d->sm_flops = H100_SM_FLOPS;
    d->sm_flops_simple = H100_SM_FLOPS_SIMPLE;
    d->mem_bw = H100_MEM_BW;
    d->sm_mem_bw = H100_SM_MEM_BW;
    d->launch_gap_ns = H100_LAUNCH_GAP_NS;
    d->batch_overhead_ns = H100_BATCH_OVERHEAD_NS;
    d->host_bw = H100_HOST_BW;
    d->sat_occupancy = H100_SAT_OCCUPANCY;
}

/* ---- building the list ---- */

#define SIMPLE_ELEMS_PER_BLOCK 1024u
#define SIMPLE_BLOCKS_PER_SM 8u
#define SPLITK_MIN_SLICE 1024u
#ifndef TILE_BIG_M
#define TILE_BIG_M 128u
#define TILE_BIG_N 64u
#define TILE_BIG_BPSM 2u
#define TILE_SMALL_M 64u
#define TILE_SMALL_N 32u
#define TILE_SMALL_BPSM 4u
#endif

typedef struct klist {
    ds_sim_kernel *k;
    uint32_t n, cap;
    bool oom;
} klist;

static void push(klist *l, ds_sim_kernel k)
{
    if (l->oom)
        return;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 64;
        ds_sim_kernel *nk = realloc(l->k, cap * sizeof *nk);
        if (!nk) {
            l->oom = true;
            return;
        }
        l->k = nk;
        l->cap = cap;
    }
    l->k[l->n++] = k;
}

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* Elements of tensor t at batch b (weights once). */
static double numel_at(const ds_graph *g, uint32_t t, uint32_t b)
{
    const ds_tensor *x = &g->tensors[t];
    double n = (double)ds_tensor_numel(x);
    if (g->batchable && x->kind != DS_TENSOR_CONST)
        n *= b;
    return n;
}

/* Bytes of every present input and the output of node n at batch b. */
static double node_bytes(const ds_graph *g, const ds_node *n, uint32_t b)
{
    double e = numel_at(g, n->output, b);
    for (uint32_t i = 0; i < n->n_inputs; i++)
        if (n->inputs[i] != DS_TENSOR_NONE)
            e += numel_at(g, n->inputs[i], b);
    return 4.0 * e;
}

static void simple(klist *l, uint32_t node, double elems, double flops_per_elem, double bytes)
{
    if (elems <= 0)
        return;
    ds_sim_kernel k = {.node = node,
                       .blocks = ceil_div((uint64_t)elems, SIMPLE_ELEMS_PER_BLOCK),
                       .blocks_per_sm = SIMPLE_BLOCKS_PER_SM,
                       .flops_per_block = flops_per_elem * SIMPLE_ELEMS_PER_BLOCK,
                       .bytes = bytes,
                       .kind = 1};
    push(l, k);
}

/* `groups` independent M x N x K GEMMs, tiled as kernels.h says. */
static void gemm(klist *l, const ds_sim_device *dev, uint32_t node, uint64_t groups, uint64_t M,
                 uint64_t N, uint64_t K, double bytes)
{
    if (!groups || !M || !N || !K)
        return;
    uint64_t tm = TILE_BIG_M, tn = TILE_BIG_N;
    uint32_t bpsm = TILE_BIG_BPSM;
    uint64_t tiles = groups * ceil_div(M, tm) * ceil_div(N, tn);
    if (tiles < dev->sm_count) {
        tm = TILE_SMALL_M;
        tn = TILE_SMALL_N;
        bpsm = TILE_SMALL_BPSM;
        tiles = groups * ceil_div(M, tm) * ceil_div(N, tn);
    }
    uint64_t split = 1;
    if (tiles < dev->sm_count) {
        split = dev->sm_count / tiles;
        uint64_t most = K / SPLITK_MIN_SLICE;
        if (split > most)
            split = most;
        if (split < 1)
            split = 1;
    }
    uint64_t kslice = ceil_div(K, split);
    ds_sim_kernel k = {.node = node,
                       .blocks = tiles * split,
                       .blocks_per_sm = bpsm,
                       .flops_per_block = 2.0 * (double)(tm * tn * kslice),
                       .bytes = bytes,
                       .kind = 0};
    push(l, k);
    if (split > 1) {
        double out = (double)(groups * M * N);
        simple(l, node, out, (double)split, 4.0 * out * (double)(split + 1));
    }
}

/* ---- the cuda backend's residual fusion (ds_cu_fuse_residual) ---- */

static uint32_t readers(const ds_graph *g, uint32_t t, uint32_t *reader)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (uint32_t j = 0; j < g->nodes[i].n_inputs; j++)
            if (g->nodes[i].inputs[j] == t) {
                n++;
                *reader = i;
            }
    return n;
}

static bool is_output(const ds_graph *g, uint32_t t)
{
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == t)
            return true;
    return g->tensors[t].is_output;
}

static bool same_dims(const ds_tensor *a, const ds_tensor *b)
{
    if (a->rank != b->rank)
        return false;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

/* Conv (bias, no activation) -> Add(other) -> Relu is one cuDNN call on the
 * cuda backend (conv + bias + residual + ReLU): returns the residual tensor
 * and marks Add and Relu skipped, else DS_TENSOR_NONE. */
static uint32_t fuse_residual(const ds_graph *g, uint32_t i, bool *skip)
{
    const ds_node *n = &g->nodes[i];
    const ds_tensor *x = &g->tensors[n->inputs[0]];
    uint32_t group = n->attrs.group ? n->attrs.group : 1;
    bool bias = n->n_inputs > 2 && n->inputs[2] != DS_TENSOR_NONE;
    bool symmetric = n->attrs.pads[0] == n->attrs.pads[2] && n->attrs.pads[1] == n->attrs.pads[3];
    if (!bias || n->attrs.activation != DS_ACT_NONE || !symmetric ||
        (group > 1 && (uint32_t)x->dims[1] == group))
        return DS_TENSOR_NONE;
    uint32_t t = n->output, j = 0, k = 0;
    if (is_output(g, t) || readers(g, t, &j) != 1 || g->nodes[j].op != DS_OP_ADD || skip[j])
        return DS_TENSOR_NONE;
    const ds_node *add = &g->nodes[j];
    if (add->n_inputs != 2 || add->inputs[0] == add->inputs[1])
        return DS_TENSOR_NONE;
    uint32_t z = add->inputs[0] == t ? add->inputs[1] : add->inputs[0];
    const ds_tensor *zt = &g->tensors[z];
    if (zt->kind == DS_TENSOR_CONST || (zt->kind == DS_TENSOR_ACTIVATION && zt->producer >= i))
        return DS_TENSOR_NONE;
    if (!same_dims(zt, &g->tensors[t]) || !same_dims(zt, &g->tensors[add->output]))
        return DS_TENSOR_NONE;
    uint32_t u = add->output;
    if (is_output(g, u) || readers(g, u, &k) != 1 || g->nodes[k].op != DS_OP_RELU || skip[k])
        return DS_TENSOR_NONE;
    skip[j] = skip[k] = true;
    return z;
}

static void conv(klist *l, const ds_graph *g, const ds_sim_device *dev, uint32_t idx, uint32_t b,
                 bool *skip)
{
    const ds_node *n = &g->nodes[idx];
    const ds_tensor *x = &g->tensors[n->inputs[0]], *w = &g->tensors[n->inputs[1]];
    const ds_tensor *y = &g->tensors[n->output];
    uint64_t group = n->attrs.group ? n->attrs.group : 1;
    uint64_t kk = (uint64_t)(w->dims[2] * w->dims[3]);
    uint64_t K = (uint64_t)w->dims[1] * kk;
    double out = numel_at(g, n->output, b), bytes = node_bytes(g, n, b);
    if (group > 1 && (uint64_t)x->dims[1] == group) { /* depthwise: direct kernel */
        simple(l, idx, out, 2.0 * (double)K, bytes);
        return;
    }
    uint64_t M = (uint64_t)(out / (double)y->dims[1]);
    uint64_t N = (uint64_t)w->dims[0] / group;
    uint32_t z = fuse_residual(g, idx, skip);
    if (z != DS_TENSOR_NONE) { /* reads the residual, no epilogue */
        gemm(l, dev, idx, group, M, N, K, bytes + 4.0 * numel_at(g, z, b));
        return;
    }
    gemm(l, dev, idx, group, M, N, K, bytes);
    bool bias = n->n_inputs > 2 && n->inputs[2] != DS_TENSOR_NONE;
    ds_activation act = n->attrs.activation;
    if ((bias || act != DS_ACT_NONE) && !(bias && act == DS_ACT_RELU))
        simple(l, idx, out, 1.0, 8.0 * out);
}

static void gemm_node(klist *l, const ds_graph *g, const ds_sim_device *dev, uint32_t idx,
                      uint32_t b)
{
    const ds_node *n = &g->nodes[idx];
    const ds_tensor *A = &g->tensors[n->inputs[0]], *B = &g->tensors[n->inputs[1]];
    double out = numel_at(g, n->output, b);
    uint64_t K = (uint64_t)(n->attrs.trans_a ? A->dims[0] : A->dims[1]);
    uint64_t N = (uint64_t)(n->attrs.trans_b ? B->dims[0] : B->dims[1]);
    uint64_t M = (uint64_t)(out / (double)N);
    bool has_c = n->n_inputs > 2 && n->inputs[2] != DS_TENSOR_NONE && n->attrs.beta != 0.0f;
    if (has_c)
        simple(l, idx, out, 0.0, 4.0 * (numel_at(g, n->inputs[2], b) + out));
    gemm(l, dev, idx, 1, M, N, K, node_bytes(g, n, b));
    if (n->attrs.activation != DS_ACT_NONE)
        simple(l, idx, out, 1.0, 8.0 * out);
}

static void matmul_node(klist *l, const ds_graph *g, const ds_sim_device *dev, uint32_t idx,
                        uint32_t b)
{
    const ds_node *n = &g->nodes[idx];
    const ds_tensor *A = &g->tensors[n->inputs[0]], *B = &g->tensors[n->inputs[1]];
    const ds_tensor *Y = &g->tensors[n->output];
    uint64_t K = (uint64_t)A->dims[A->rank - 1];
    uint64_t N = B->rank >= 2 ? (uint64_t)B->dims[B->rank - 1] : 1;
    uint64_t M = A->rank >= 2 ? (uint64_t)A->dims[A->rank - 2] : 1;
    double out = numel_at(g, n->output, b);
    uint64_t groups = (uint64_t)(out / (double)(M * N));
    (void)Y;
    gemm(l, dev, idx, groups, M, N, K, node_bytes(g, n, b));
}

static void node_kernels(klist *l, const ds_graph *g, const ds_sim_device *dev, uint32_t idx,
                         uint32_t b, bool *skip)
{
    const ds_node *n = &g->nodes[idx];
    if (skip[idx])
        return;
    double out = numel_at(g, n->output, b), bytes = node_bytes(g, n, b);
    switch (n->op) {
    case DS_OP_CONV: conv(l, g, dev, idx, b, skip); break;
    case DS_OP_GEMM: gemm_node(l, g, dev, idx, b); break;
    case DS_OP_MATMUL: matmul_node(l, g, dev, idx, b); break;
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL:
        simple(l, idx, out, (double)(n->attrs.kernel[0] * n->attrs.kernel[1]), bytes);
        break;
    case DS_OP_GLOBAL_AVGPOOL:
    case DS_OP_GLOBAL_MAXPOOL: simple(l, idx, numel_at(g, n->inputs[0], b), 1.0, bytes); break;
    case DS_OP_LRN: simple(l, idx, out, (double)(n->attrs.size ? n->attrs.size : 1), bytes); break;
    case DS_OP_SOFTMAX: simple(l, idx, out, 5.0, bytes); break;
    case DS_OP_CONCAT:
    case DS_OP_TRANSPOSE:
    case DS_OP_RESHAPE:
    case DS_OP_FLATTEN:
    case DS_OP_IDENTITY: simple(l, idx, out, 0.0, 8.0 * out); break;
    default: simple(l, idx, out, 1.0, bytes); break; /* elementwise, BN, PRelu, Sum, ... */
    }
}

dstack_status ds_sim_kernels(const ds_graph *g, uint32_t batch, const ds_sim_device *dev,
                             ds_sim_kernel **out, uint32_t *n_out)
{
    if (!g || !dev || !out || !n_out || batch == 0 || !g->finalized)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "ds_sim_kernels: NULL argument, batch 0 or graph not finalized");
    klist l = {0};
    uint32_t passes = g->batchable ? 1 : batch, b = g->batchable ? batch : 1;
    bool *skip = calloc(g->n_nodes + 1, sizeof *skip);
    if (!skip)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim: no memory for the kernels of '%s'", g->name);
    for (uint32_t i = 0; i < g->n_nodes; i++)
        node_kernels(&l, g, dev, i, b, skip);
    free(skip);
    uint32_t one = l.n;
    for (uint32_t p = 1; p < passes && !l.oom; p++)
        for (uint32_t i = 0; i < one; i++)
            push(&l, l.k[i]);
    if (l.oom) {
        free(l.k);
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "sim: no memory for the kernels of '%s'", g->name);
    }
    *out = l.k;
    *n_out = l.n;
    return DSTACK_OK;
}

/* ---- time ---- */

double ds_sim_block_ns(const ds_sim_kernel *k, const ds_sim_device *dev)
{
    double rate = k->kind == 0 ? dev->sm_flops : dev->sm_flops_simple;
    return k->flops_per_block / rate * 1e9;
}

double ds_sim_wave_ns(const ds_sim_kernel *k, const ds_sim_device *dev)
{
    return ds_sim_wave_of_ns(k, dev, (double)k->blocks_per_sm);
}

double ds_sim_occupancy_speed(const ds_sim_kernel *k, const ds_sim_device *dev, double per_sm)
{
    double occ = per_sm / (double)k->blocks_per_sm;
    return dev->sat_occupancy > 0 && occ < dev->sat_occupancy ? occ / dev->sat_occupancy : 1.0;
}

double ds_sim_wave_of_ns(const ds_sim_kernel *k, const ds_sim_device *dev, double per_sm)
{
    return per_sm * ds_sim_block_ns(k, dev) / ds_sim_occupancy_speed(k, dev, per_sm);
}

double ds_sim_batch_overhead_ns(const ds_sim_device *dev, double host_bytes)
{
    return dev->batch_overhead_ns + (dev->host_bw > 0 ? host_bytes / dev->host_bw * 1e9 : 0.0);
}

double ds_sim_round_ns(double wave_ns, double waves, double bytes, double bw)
{
    double c = wave_ns * waves, m = bytes > 0 && bw > 0 ? bytes / bw * 1e9 : 0.0;
    double t = c > m ? c : m;
    return t < 1.0 ? 1.0 : t;
}

double ds_sim_host_bytes(const ds_graph *g, uint32_t batch)
{
    double e = 0;
    for (uint32_t i = 0; i < g->n_inputs; i++)
        e += (double)ds_tensor_numel(&g->tensors[g->inputs[i]]);
    for (uint32_t i = 0; i < g->n_outputs; i++)
        e += (double)ds_tensor_numel(&g->tensors[g->outputs[i]]);
    return 4.0 * e * batch;
}

/* Compute of all of k on `sms` SMs nobody else holds: its full waves, then
 * the tail wave spread over min(tail, sms) SMs. */
double ds_sim_kernel_compute_ns(const ds_sim_kernel *k, uint32_t sms, const ds_sim_device *dev)
{
    uint64_t fit = (uint64_t)k->blocks_per_sm * sms;
    uint64_t full = k->blocks / fit, tail = k->blocks - full * fit;
    double c = (double)full * ds_sim_wave_ns(k, dev);
    if (tail) {
        uint64_t touched = tail < sms ? tail : sms;
        c += ds_sim_wave_of_ns(k, dev, (double)ceil_div(tail, touched));
    }
    return c;
}

/* One kernel alone on `sms` SMs, as the engine runs it on a range nobody
 * else holds or waits for: one round of all its waves, compute-or-memory
 * over the whole kernel, at the bandwidth of its SMs fully occupied (a
 * kernel smaller than one wave: of the SMs and blocks it holds). Taken per
 * wave, a memory-bound full wave plus a compute-bound tail (its SMs hold
 * fewer blocks) could take longer on more SMs. */
static double kernel_alone_ns(const ds_sim_kernel *k, uint32_t sms, const ds_sim_device *dev)
{
    if (k->blocks == 0)
        return 0.0; /* the engine skips it: only its launch gap counts */
    uint64_t fit = (uint64_t)k->blocks_per_sm * sms;
    double touched = (double)sms, per_sm = (double)k->blocks_per_sm;
    if (k->blocks < fit) {
        touched = (double)(k->blocks < sms ? k->blocks : sms);
        per_sm = (double)ceil_div(k->blocks, (uint64_t)touched);
    }
    double bw = fmin(dev->mem_bw,
                     touched * dev->sm_mem_bw * ds_sim_occupancy_speed(k, dev, per_sm));
    return ds_sim_round_ns(ds_sim_kernel_compute_ns(k, sms, dev), 1.0, k->bytes, bw);
}

uint64_t ds_sim_kernels_time_ns(const ds_sim_kernel *k, uint32_t n, uint32_t sms,
                                const ds_sim_device *dev)
{
    if (!k || !dev || sms == 0)
        return 0;
    double t = dev->batch_overhead_ns;
    for (uint32_t i = 0; i < n; i++)
        t += dev->launch_gap_ns + kernel_alone_ns(&k[i], sms, dev);
    return (uint64_t)ceil(t);
}

uint64_t ds_sim_batch_time_ns(const ds_sim_kernel *k, uint32_t n, uint32_t sms,
                              double host_bytes, const ds_sim_device *dev)
{
    if (!k || !dev || sms == 0)
        return 0;
    double t = ds_sim_batch_overhead_ns(dev, host_bytes);
    for (uint32_t i = 0; i < n; i++)
        t += dev->launch_gap_ns + kernel_alone_ns(&k[i], sms, dev);
    return (uint64_t)ceil(t);
}
