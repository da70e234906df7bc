/* cuda_exec.c - the cuda executor: cuDNN + cuBLAS + our kernels on SM partitions.
 *
 * Plans (one per model and max_batch, built once in plan_create):
 *  - the program of cuda_plan.c (steps, engines, memory plan);
 *  - one activation arena (cudaMalloc, zeroed once) and one weights buffer
 *    uploaded once; pinned host staging for max_batch inputs and outputs;
 *  - cuDNN descriptors for EVERY batch size 1..max_batch, created eagerly
 *    (nothing is created on the hot path): per conv, a filter, convolution,
 *    bias and activation descriptor, and per batch size the x/y tensor
 *    descriptors and the algorithm. Algorithms are MEASURED with
 *    cudnnFindConvolutionForwardAlgorithmEx on the plan's own buffers for
 *    batch sizes 1, 2, 4, 8, ... and max_batch (a batch in between takes the
 *    next larger measured size's choice, if cuDNN accepts it there, else the
 *    heuristic one), under a 256 MiB workspace cap; the plan's workspace is
 *    the max over its choices. DSTACK_CUDA_CONV_ALGO=heuristic (read at
 *    executor creation) takes cudnnGetConvolutionForwardAlgorithm_v7's
 *    choice instead: faster plan building, slower runs.
 *    Non-batchable graphs have one shape (a batch is b sequential runs).
 *  - Precision: FP32 uses CUDNN_FMA_MATH (not CUDNN_DEFAULT_MATH: on
 *    Ampere/Hopper DEFAULT permits TF32 tensor cores, ~1e-3 relative error)
 *    and excludes the FFT algorithms and Winograd above 3x3 (alexnet's 5x5
 *    conv measured 3.3e-4 with it); cuBLAS runs CUBLAS_PEDANTIC_MATH (no
 *    TF32 even under NVIDIA_TF32_OVERRIDE). TF32 uses CUDNN_TENSOR_OP_MATH
 *    and CUBLAS_TF32_TENSOR_OP_MATH (expect ~1e-3 relative on deep CNNs).
 *    FP16 is not implemented: plan_create returns UNSUPPORTED.
 *
 * A run: inputs are memcpy'd into the plan's pinned staging on the calling
 * thread, then everything is enqueued on the partition's stream: H2D, the
 * steps, D2H, and a cudaLaunchHostFunc callback that copies the outputs to
 * the caller's buffers and calls done(arg, OK) once. When every input of a
 * batchable plan is already page-locked (dstack_host_alloc, cudaHostAlloc,
 * cudaHostRegister), the staging memcpy is skipped and each request's input
 * is copied H2D straight from the caller's buffer: at batch 32 on resnet50
 * the staging memcpy was 2-3 ms of 13. For batchable plans the input copies
 * are enqueued outside the captured graph (below), so one graph serves both. Nothing synchronizes on
 * the hot path. The partition's mutex serializes use of its cuDNN/cuBLAS
 * handles by host threads.
 *
 * CUDA graphs (default on; DSTACK_CUDA_GRAPHS=0, read at executor creation,
 * turns them off): the first run of a plan at batch b on a partition is
 * captured on that partition's stream (H2D, steps, D2H, the host callback)
 * and instantiated - part of warm-up, the only thing created after
 * plan_create - and later runs replay it with one cudaGraphLaunch. Up to 64
 * graphs per plan, then direct enqueue. If capture fails (a library call
 * that cannot be captured), the plan runs directly from then on. Measured on
 * an H100 (bench/results/gpu-h100.md): mobilenet_v2 batch 1 1.31 -> 0.90 ms,
 * resnet50 batch 1 3.15 -> 2.75 ms; replays stay inside their green context
 * (resnet50 b16: 71.4 ms on 8 SMs, 7.5 ms on 120, as without graphs).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/cuda/cuda_plan.h"
#include "exec/cuda/kernels.h"
#include "exec/exec.h"
#include "gpu/cupti.h"
#include "gpu/gpu.h"
#include "util/error.h"

#define DS_CU_WORKSPACE_CAP ((size_t)256 << 20)

#define DS_CU_MAX_GRAPHS 64

typedef struct ds_cuda_exec {
    ds_executor base;
    bool algo_find;  /* measure conv algorithms (default) or take cuDNN's heuristics */
    bool use_graphs; /* replay a captured CUDA graph per (plan, batch, partition) */
    ds_gpu *gpu;
    ds_gpu_part *whole; /* the whole device: plan building, runs without a partition */
} ds_cuda_exec;

typedef struct cu_conv_rt {
    cudnnFilterDescriptor_t wdesc;
    cudnnConvolutionDescriptor_t cdesc;
    cudnnTensorDescriptor_t bdesc;
    cudnnActivationDescriptor_t adesc;
    cudnnTensorDescriptor_t *xdesc, *ydesc; /* [n_shapes] */
    cudnnConvolutionFwdAlgo_t *algo;        /* [n_shapes] */
} cu_conv_rt;

struct ds_exec_plan {
    ds_cuda_exec *ex;
    const ds_graph *g;
    ds_cu_program prog;
    dstack_precision precision;
    uint32_t max_batch, n_shapes;
    cu_conv_rt *conv; /* [n_steps]; set for cuDNN conv steps */
    char *d_arena, *d_weights;
    void *d_workspace;
    size_t workspace_bytes;
    char *h_in, *h_out; /* pinned */
    uint64_t in_off[DSTACK_MAX_IO], in_bytes[DSTACK_MAX_IO];   /* per request */
    uint64_t out_off[DSTACK_MAX_IO], out_bytes[DSTACK_MAX_IO]; /* per request */
    cudaEvent_t finished;
    /* captured runs, keyed by (partition, batch) */
    struct {
        ds_gpu_part *gp;
        uint32_t batch;
        cudaGraphExec_t exec;
    } graphs[DS_CU_MAX_GRAPHS];
    uint32_t n_graphs;
    bool graphs_failed; /* capture did not work here: run directly from now on */
    /* the run in flight (one at a time) */
    ds_exec_done_fn done;
    void *done_arg;
    uint32_t run_batch;
    void **out_ptrs; /* [max_batch * n_outputs] */
    const void **in_ptrs; /* [max_batch * n_inputs]: the caller's buffers */
    bool direct_inputs;   /* this run copies H2D from in_ptrs, not staging */
};

#define CU_TRY(call, what)                                                                  \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        if (e_ != cudaSuccess) return ds_gpu_cuda_fail(e_, what);                           \
    } while (0)
#define DNN_TRY(call, what)                                                                 \
    do {                                                                                    \
        cudnnStatus_t s_ = (call);                                                          \
        if (s_ != CUDNN_STATUS_SUCCESS) return ds_gpu_cudnn_fail(s_, what);                 \
    } while (0)
#define BLAS_TRY(call, what)                                                                \
    do {                                                                                    \
        cublasStatus_t s_ = (call);                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) return ds_gpu_cublas_fail(s_, what);               \
    } while (0)
#define K_TRY(call, node)                                                                   \
    do {                                                                                    \
        int e_ = (call);                                                                    \
        if (e_ != 0) return ds_fail(DSTACK_ERR_DEVICE, "node '%s' (%s): kernel launch: %s", \
                                    (node)->name, ds_op_name((node)->op),                   \
                                    cudaGetErrorString((cudaError_t)e_));                   \
    } while (0)

/* ---------------------------------------------------------------- helpers */

static float *tensor_ptr(const ds_exec_plan *p, uint32_t t) {
    if (p->g->tensors[t].kind == DS_TENSOR_CONST)
        return (float *)(p->d_weights + p->prog.weight_offsets[t]);
    return (float *)(p->d_arena + p->prog.offsets[t]);
}

static int64_t prod(const int64_t *d, uint32_t from, uint32_t to) {
    int64_t n = 1;
    for (uint32_t i = from; i < to; i++) n *= d[i];
    return n;
}

/* Strides of an input of in_dims broadcast (right-aligned) to out_rank dims. */
static void bcast_strides(const int64_t *in_dims, uint32_t in_rank, const int64_t *out_dims,
                          uint32_t out_rank, int64_t *strides) {
    int64_t s = 1;
    for (int i = (int)out_rank - 1; i >= 0; i--) {
        int ii = i - (int)(out_rank - in_rank);
        if (ii < 0) {
            strides[i] = 0;
            continue;
        }
        strides[i] = (in_dims[ii] == 1 && out_dims[i] != 1) ? 0 : s;
        s *= in_dims[ii];
    }
}

/* --------------------------------------------------------------- the steps */

static dstack_status step_conv(ds_exec_plan *p, ds_gpu_part *gp, const ds_cu_step *s,
                               uint32_t b) {
    const ds_node *n = &p->g->nodes[s->node];
    const float *x = tensor_ptr(p, n->inputs[0]), *w = tensor_ptr(p, n->inputs[1]);
    const float *bias = s->conv.has_bias ? tensor_ptr(p, n->inputs[2]) : NULL;
    float *y = tensor_ptr(p, s->out);
    int64_t yd[DS_MAX_RANK];
    ds_cu_dims_at(p->g, s->out, b, yd);
    if (s->engine == DS_CU_ENGINE_KERNEL) {
        int64_t xd[DS_MAX_RANK];
        ds_cu_dims_at(p->g, n->inputs[0], b, xd);
        const ds_op_attrs *a = &n->attrs;
        ds_k_conv kc = {.n = xd[0], .c = xd[1], .h = xd[2], .w = xd[3], .k = yd[1], .oh = yd[2],
                        .ow = yd[3], .kh = (int32_t)s->conv.kh, .kw = (int32_t)s->conv.kw,
                        .sh = (int32_t)a->stride[0], .sw = (int32_t)a->stride[1],
                        .pt = (int32_t)a->pads[0], .pl = (int32_t)a->pads[1],
                        .dh = (int32_t)a->dilation[0], .dw = (int32_t)a->dilation[1],
                        .group = (int32_t)s->conv.group, .lo = s->act_lo, .hi = s->act_hi};
        K_TRY(ds_k_conv2d(gp->stream, x, w, bias, y, &kc), n);
        return DSTACK_OK;
    }
    cu_conv_rt *c = &p->conv[s->node];
    uint32_t i = p->g->batchable ? b - 1 : 0;
    const float one = 1.0f, zero = 0.0f;
    if (s->epilogue == DS_CU_EPI_CUDNN_BIAS_RELU || s->epilogue == DS_CU_EPI_CUDNN_BIAS_ADD_RELU) {
        /* y = relu(conv(x) + alpha2 * z + bias); z = y with alpha2 = 0 when there is no residual */
        bool res = s->epilogue == DS_CU_EPI_CUDNN_BIAS_ADD_RELU;
        DNN_TRY(cudnnConvolutionBiasActivationForward(
                    gp->cudnn, &one, c->xdesc[i], x, c->wdesc, w, c->cdesc, c->algo[i],
                    p->d_workspace, p->workspace_bytes, res ? &one : &zero, c->ydesc[i],
                    res ? tensor_ptr(p, s->z) : y, c->bdesc, bias, c->adesc, c->ydesc[i], y),
                "cudnnConvolutionBiasActivationForward");
        return DSTACK_OK;
    }
    DNN_TRY(cudnnConvolutionForward(gp->cudnn, &one, c->xdesc[i], x, c->wdesc, w, c->cdesc,
                                    c->algo[i], p->d_workspace, p->workspace_bytes, &zero,
                                    c->ydesc[i], y),
            "cudnnConvolutionForward");
    if (s->epilogue == DS_CU_EPI_KERNEL)
        K_TRY(ds_k_bias_act(gp->stream, y, bias, yd[0], yd[1], yd[2] * yd[3], s->act_lo, s->act_hi),
              n);
    return DSTACK_OK;
}

static dstack_status step_gemm(ds_exec_plan *p, ds_gpu_part *gp, const ds_cu_step *s,
                               uint32_t b) {
    const ds_node *n = &p->g->nodes[s->node];
    const ds_op_attrs *a = &n->attrs;
    int64_t ad[DS_MAX_RANK], bd[DS_MAX_RANK], yd[DS_MAX_RANK];
    ds_cu_dims_at(p->g, n->inputs[0], b, ad);
    ds_cu_dims_at(p->g, n->inputs[1], b, bd);
    uint32_t yr = ds_cu_dims_at(p->g, n->output, b, yd);
    int64_t M = a->trans_a ? ad[1] : ad[0], K = a->trans_a ? ad[0] : ad[1];
    int64_t N = a->trans_b ? bd[0] : bd[1];
    float *y = tensor_ptr(p, n->output);
    float beta = 0.0f;
    bool has_c = n->n_inputs > 2 && n->inputs[2] != DS_TENSOR_NONE && a->beta != 0.0f;
    if (has_c) {
        int64_t cd[DS_MAX_RANK];
        uint32_t cr = ds_cu_dims_at(p->g, n->inputs[2], b, cd);
        ds_k_strided sh = {.rank = (int32_t)yr};
        for (uint32_t i = 0; i < yr; i++) sh.dims[i] = yd[i];
        bcast_strides(cd, cr, yd, yr, sh.a_stride);
        K_TRY(ds_k_binary(gp->stream, DS_K_GATHER, tensor_ptr(p, n->inputs[2]), NULL, y, &sh), n);
        beta = a->beta;
    }
    float alpha = a->alpha;
    BLAS_TRY(cublasSgemm(gp->cublas, a->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                         a->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha,
                         tensor_ptr(p, n->inputs[1]), (int)(a->trans_b ? K : N),
                         tensor_ptr(p, n->inputs[0]), (int)(a->trans_a ? M : K), &beta, y, (int)N),
             "cublasSgemm (Gemm)");
    if (s->epilogue == DS_CU_EPI_KERNEL)
        K_TRY(ds_k_unary(gp->stream, DS_K_CLAMP, y, y, M * N, s->act_lo, s->act_hi), n);
    return DSTACK_OK;
}

static dstack_status step_matmul(ds_exec_plan *p, ds_gpu_part *gp, const ds_cu_step *s,
                                 uint32_t b) {
    const ds_node *n = &p->g->nodes[s->node];
    int64_t ad[DS_MAX_RANK + 1], bd[DS_MAX_RANK + 1];
    uint32_t ar = ds_cu_dims_at(p->g, n->inputs[0], b, ad);
    uint32_t br = ds_cu_dims_at(p->g, n->inputs[1], b, bd);
    if (ar == 1) { /* (K) -> (1, K) */
        ad[1] = ad[0];
        ad[0] = 1;
        ar = 2;
    }
    if (br == 1) { /* (K) -> (K, 1) */
        bd[1] = 1;
        br = 2;
    }
    int64_t M = ad[ar - 2], K = ad[ar - 1], N = bd[br - 1];
    uint32_t batch_rank = (ar > br ? ar : br) - 2;
    int64_t out_batch[DS_MAX_RANK] = {0}, as[DS_MAX_RANK] = {0}, bs[DS_MAX_RANK] = {0};
    /* batch dims, right-aligned, and each side's batch strides in matrices */
    int64_t sa = 1, sb = 1;
    for (int i = (int)batch_rank - 1; i >= 0; i--) {
        int ia = i - (int)(batch_rank - (ar - 2)), ib = i - (int)(batch_rank - (br - 2));
        int64_t da = ia >= 0 ? ad[ia] : 1, db = ib >= 0 ? bd[ib] : 1;
        out_batch[i] = da > db ? da : db;
        as[i] = da == 1 ? 0 : sa;
        bs[i] = db == 1 ? 0 : sb;
        sa *= da;
        sb *= db;
    }
    int64_t count = prod(out_batch, 0, batch_rank);
    const float *A = tensor_ptr(p, n->inputs[0]), *B = tensor_ptr(p, n->inputs[1]);
    float *Y = tensor_ptr(p, n->output);
    const float one = 1.0f, zero = 0.0f;
    /* uniform strides: every batch axis of a side is either fully present or absent */
    bool a_full = sa == count, a_none = sa == 1, b_full = sb == count, b_none = sb == 1;
    if ((a_full || a_none) && (b_full || b_none)) {
        BLAS_TRY(cublasSgemmStridedBatched(gp->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)N, (int)M,
                                           (int)K, &one, B, (int)N, b_none ? 0 : K * N, A, (int)K,
                                           a_none ? 0 : M * K, &zero, Y, (int)N, M * N, (int)count),
                 "cublasSgemmStridedBatched (MatMul)");
        return DSTACK_OK;
    }
    for (int64_t q = 0; q < count; q++) {
        int64_t rem = q, oa = 0, ob = 0;
        for (int i = (int)batch_rank - 1; i >= 0; i--) {
            int64_t coord = rem % out_batch[i];
            rem /= out_batch[i];
            oa += coord * as[i];
            ob += coord * bs[i];
        }
        BLAS_TRY(cublasSgemm(gp->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one,
                             B + ob * K * N, (int)N, A + oa * M * K, (int)K, &zero, Y + q * M * N,
                             (int)N),
                 "cublasSgemm (MatMul)");
    }
    return DSTACK_OK;
}

static dstack_status step_binary(ds_exec_plan *p, ds_gpu_part *gp, const ds_node *n, int op,
                                 uint32_t ta, uint32_t tb, bool a_is_out, uint32_t b) {
    int64_t ad[DS_MAX_RANK], bd[DS_MAX_RANK], yd[DS_MAX_RANK];
    uint32_t yr = ds_cu_dims_at(p->g, n->output, b, yd);
    uint32_t ar = ds_cu_dims_at(p->g, a_is_out ? n->output : ta, b, ad);
    uint32_t br = ds_cu_dims_at(p->g, tb, b, bd);
    ds_k_strided sh = {.rank = (int32_t)yr};
    for (uint32_t i = 0; i < yr; i++) sh.dims[i] = yd[i];
    bcast_strides(ad, ar, yd, yr, sh.a_stride);
    bcast_strides(bd, br, yd, yr, sh.b_stride);
    const float *A = a_is_out ? tensor_ptr(p, n->output) : tensor_ptr(p, ta);
    K_TRY(ds_k_binary(gp->stream, op, A, tensor_ptr(p, tb), tensor_ptr(p, n->output), &sh), n);
    return DSTACK_OK;
}

static dstack_status step_gather(ds_exec_plan *p, ds_gpu_part *gp, const ds_node *n,
                                 uint32_t b) {
    int64_t xd[DS_MAX_RANK], yd[DS_MAX_RANK], xs[DS_MAX_RANK];
    uint32_t xr = ds_cu_dims_at(p->g, n->inputs[0], b, xd);
    uint32_t yr = ds_cu_dims_at(p->g, n->output, b, yd);
    ds_k_strided sh = {.rank = (int32_t)yr};
    for (uint32_t i = 0; i < yr; i++) sh.dims[i] = yd[i];
    if (n->op == DS_OP_TRANSPOSE) {
        int64_t st = 1;
        for (int i = (int)xr - 1; i >= 0; i--) {
            xs[i] = st;
            st *= xd[i];
        }
        for (uint32_t i = 0; i < yr; i++) sh.a_stride[i] = xs[n->attrs.perm[i]];
    } else {
        bcast_strides(xd, xr, yd, yr, sh.a_stride);
    }
    K_TRY(ds_k_binary(gp->stream, DS_K_GATHER, tensor_ptr(p, n->inputs[0]), NULL,
                      tensor_ptr(p, n->output), &sh),
          n);
    return DSTACK_OK;
}

static dstack_status step_copy(ds_exec_plan *p, ds_gpu_part *gp, const ds_node *n, uint32_t b) {
    int64_t yd[DS_MAX_RANK];
    uint32_t yr = ds_cu_dims_at(p->g, n->output, b, yd);
    float *y = tensor_ptr(p, n->output);
    if (n->op != DS_OP_CONCAT) {
        size_t bytes = (size_t)prod(yd, 0, yr) * sizeof(float);
        if (bytes) CU_TRY(cudaMemcpyAsync(y, tensor_ptr(p, n->inputs[0]), bytes,
                                          cudaMemcpyDeviceToDevice, gp->stream),
                          "cudaMemcpyAsync (copy op)");
        return DSTACK_OK;
    }
    uint32_t axis = (uint32_t)n->attrs.axis;
    int64_t outer = prod(yd, 0, axis), out_inner = prod(yd, axis, yr), at = 0;
    for (uint32_t j = 0; j < n->n_inputs; j++) {
        if (n->inputs[j] == DS_TENSOR_NONE) continue;
        int64_t xd[DS_MAX_RANK];
        uint32_t xr = ds_cu_dims_at(p->g, n->inputs[j], b, xd);
        int64_t in_inner = prod(xd, axis, xr);
        if (in_inner > 0 && outer > 0)
            CU_TRY(cudaMemcpy2DAsync(y + at, (size_t)out_inner * sizeof(float),
                                     tensor_ptr(p, n->inputs[j]), (size_t)in_inner * sizeof(float),
                                     (size_t)in_inner * sizeof(float), (size_t)outer,
                                     cudaMemcpyDeviceToDevice, gp->stream),
                   "cudaMemcpy2DAsync (Concat)");
        at += in_inner;
    }
    return DSTACK_OK;
}

static dstack_status step_kernel(ds_exec_plan *p, ds_gpu_part *gp, const ds_cu_step *s,
                                 uint32_t b) {
    const ds_node *n = &p->g->nodes[s->node];
    const ds_op_attrs *a = &n->attrs;
    int64_t xd[DS_MAX_RANK], yd[DS_MAX_RANK];
    uint32_t xr = ds_cu_dims_at(p->g, n->inputs[0], b, xd);
    uint32_t yr = ds_cu_dims_at(p->g, n->output, b, yd);
    const float *x = tensor_ptr(p, n->inputs[0]);
    float *y = tensor_ptr(p, n->output);
    int64_t numel = prod(yd, 0, yr);
    cudaStream_t st = gp->stream;
    switch (n->op) {
    case DS_OP_RELU: K_TRY(ds_k_unary(st, DS_K_CLAMP, x, y, numel, 0.0f, INFINITY), n); break;
    case DS_OP_CLIP:
        K_TRY(ds_k_unary(st, DS_K_CLAMP, x, y, numel, a->clip_min, a->clip_max), n);
        break;
    case DS_OP_LEAKY_RELU: K_TRY(ds_k_unary(st, DS_K_LEAKY, x, y, numel, a->alpha, 0), n); break;
    case DS_OP_SIGMOID: K_TRY(ds_k_unary(st, DS_K_SIGMOID, x, y, numel, 0, 0), n); break;
    case DS_OP_TANH: K_TRY(ds_k_unary(st, DS_K_TANH, x, y, numel, 0, 0), n); break;
    case DS_OP_HARD_SIGMOID:
        K_TRY(ds_k_unary(st, DS_K_HARD_SIGMOID, x, y, numel, a->alpha, a->beta), n);
        break;
    case DS_OP_HARD_SWISH: K_TRY(ds_k_unary(st, DS_K_HARD_SWISH, x, y, numel, 0, 0), n); break;
    case DS_OP_PRELU:
        return step_binary(p, gp, n, DS_K_PRELU, n->inputs[0], n->inputs[1], false, b);
    case DS_OP_ADD: return step_binary(p, gp, n, DS_K_ADD, n->inputs[0], n->inputs[1], false, b);
    case DS_OP_MUL: return step_binary(p, gp, n, DS_K_MUL, n->inputs[0], n->inputs[1], false, b);
    case DS_OP_SUM: {
        if (n->n_inputs == 1) return step_gather(p, gp, n, b);
        dstack_status r = step_binary(p, gp, n, DS_K_ADD, n->inputs[0], n->inputs[1], false, b);
        for (uint32_t j = 2; j < n->n_inputs && r == DSTACK_OK; j++)
            r = step_binary(p, gp, n, DS_K_ADD, n->output, n->inputs[j], true, b);
        return r;
    }
    case DS_OP_TRANSPOSE: return step_gather(p, gp, n, b);
    case DS_OP_BATCHNORM:
        K_TRY(ds_k_batchnorm(st, x, y, tensor_ptr(p, n->inputs[1]), tensor_ptr(p, n->inputs[2]),
                             tensor_ptr(p, n->inputs[3]), tensor_ptr(p, n->inputs[4]), a->epsilon,
                             xd[0], xr > 1 ? xd[1] : 1, prod(xd, 2, xr)),
              n);
        break;
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL: {
        ds_k_pool kp = {.n = xd[0], .c = xd[1], .h = xd[2], .w = xd[3], .oh = yd[2], .ow = yd[3],
                        .kh = (int32_t)a->kernel[0], .kw = (int32_t)a->kernel[1],
                        .sh = (int32_t)a->stride[0], .sw = (int32_t)a->stride[1],
                        .pt = (int32_t)a->pads[0], .pl = (int32_t)a->pads[1],
                        .pb = (int32_t)a->pads[2], .pr = (int32_t)a->pads[3],
                        .dh = (int32_t)(a->dilation[0] ? a->dilation[0] : 1),
                        .dw = (int32_t)(a->dilation[1] ? a->dilation[1] : 1),
                        .is_max = n->op == DS_OP_MAXPOOL, .count_include_pad = a->count_include_pad};
        K_TRY(ds_k_pool2d(st, x, y, &kp), n);
        break;
    }
    case DS_OP_GLOBAL_AVGPOOL:
    case DS_OP_GLOBAL_MAXPOOL:
        K_TRY(ds_k_global_pool(st, n->op == DS_OP_GLOBAL_MAXPOOL, x, y, xd[0] * xd[1],
                               prod(xd, 2, xr)),
              n);
        break;
    case DS_OP_SOFTMAX: {
        uint32_t ax = (uint32_t)a->axis;
        int64_t outer = prod(xd, 0, ax);
        int64_t len = a->softmax_legacy ? prod(xd, ax, xr) : xd[ax];
        int64_t inner = a->softmax_legacy ? 1 : prod(xd, ax + 1, xr);
        K_TRY(ds_k_softmax(st, x, y, outer, len, inner), n);
        break;
    }
    case DS_OP_LRN:
        K_TRY(ds_k_lrn(st, x, y, xd[0], xd[1], prod(xd, 2, xr), (int32_t)a->size, a->alpha,
                       a->beta, a->bias),
              n);
        break;
    default:
        return ds_fail(DSTACK_ERR_INTERNAL, "node '%s' (%s): no kernel step", n->name,
                       ds_op_name(n->op));
    }
    return DSTACK_OK;
}

static dstack_status run_steps(ds_exec_plan *p, ds_gpu_part *gp, uint32_t b) {
    for (uint32_t i = 0; i < p->prog.n_steps; i++) {
        const ds_cu_step *s = &p->prog.steps[i];
        const ds_node *n = &p->g->nodes[s->node];
        dstack_status st;
        if (s->skip) continue;
        switch (s->engine) {
        case DS_CU_ENGINE_CUDNN: st = step_conv(p, gp, s, b); break;
        case DS_CU_ENGINE_CUBLAS:
            st = n->op == DS_OP_GEMM ? step_gemm(p, gp, s, b) : step_matmul(p, gp, s, b);
            break;
        case DS_CU_ENGINE_COPY: st = step_copy(p, gp, n, b); break;
        default:
            st = n->op == DS_OP_CONV ? step_conv(p, gp, s, b) : step_kernel(p, gp, s, b);
            break;
        }
        if (st != DSTACK_OK)
            return ds_fail_prefix(st, "node %u '%s' (%s): ", i, n->name, ds_op_name(n->op));
    }
    return DSTACK_OK;
}

/* -------------------------------------------------------------------- runs */

static void CUDART_CB run_finished(void *arg) {
    ds_exec_plan *p = arg;
    const ds_graph *g = p->g;
    for (uint32_t r = 0; r < p->run_batch; r++)
        for (uint32_t j = 0; j < g->n_outputs; j++)
            memcpy(p->out_ptrs[r * g->n_outputs + j],
                   p->h_out + p->out_off[j] + (uint64_t)r * p->out_bytes[j], p->out_bytes[j]);
    ds_exec_done_fn done = p->done;
    void *arg2 = p->done_arg;
    done(arg2, DSTACK_OK);
}

static dstack_status enqueue_io(ds_exec_plan *p, ds_gpu_part *gp, uint32_t first_req,
                                uint32_t n_req, bool to_device) {
    const ds_graph *g = p->g;
    uint32_t n_io = to_device ? g->n_inputs : g->n_outputs;
    for (uint32_t j = 0; j < n_io; j++) {
        uint32_t t = to_device ? g->inputs[j] : g->outputs[j];
        uint64_t per = to_device ? p->in_bytes[j] : p->out_bytes[j];
        char *host = (to_device ? p->h_in + p->in_off[j] : p->h_out + p->out_off[j]) + first_req * per;
        char *dev = p->d_arena + p->prog.offsets[t];
        size_t bytes = (size_t)(per * n_req);
        if (!bytes) continue;
        CU_TRY(cudaMemcpyAsync(to_device ? (void *)dev : (void *)host, to_device ? (void *)host : (void *)dev,
                               bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost,
                               gp->stream),
               to_device ? "cudaMemcpyAsync (input H2D)" : "cudaMemcpyAsync (output D2H)");
    }
    return DSTACK_OK;
}

/* A batchable plan's inputs, enqueued before its body (and outside any
 * captured graph): one copy per input from staging, or one per request
 * straight from the caller's page-locked buffers. */
static dstack_status enqueue_inputs(ds_exec_plan *p, ds_gpu_part *gp, uint32_t batch) {
    if (!p->direct_inputs) return enqueue_io(p, gp, 0, batch, true);
    const ds_graph *g = p->g;
    for (uint32_t j = 0; j < g->n_inputs; j++) {
        char *dev = p->d_arena + p->prog.offsets[g->inputs[j]];
        for (uint32_t r = 0; r < batch && p->in_bytes[j]; r++)
            CU_TRY(cudaMemcpyAsync(dev + (uint64_t)r * p->in_bytes[j], p->in_ptrs[r * g->n_inputs + j],
                                   p->in_bytes[j], cudaMemcpyHostToDevice, gp->stream),
                   "cudaMemcpyAsync (input H2D, page-locked)");
    }
    return DSTACK_OK;
}

static dstack_status enqueue_body(ds_exec_plan *p, ds_gpu_part *gp, uint32_t batch) {
    BLAS_TRY(cublasSetMathMode(gp->cublas, p->precision == DSTACK_PRECISION_TF32
                                               ? CUBLAS_TF32_TENSOR_OP_MATH
                                               : CUBLAS_PEDANTIC_MATH),
             "cublasSetMathMode");
    dstack_status st = DSTACK_OK;
    if (p->g->batchable) { /* inputs: enqueue_inputs, before the body */
        if ((st = run_steps(p, gp, batch)) != DSTACK_OK) return st;
        if ((st = enqueue_io(p, gp, 0, batch, false)) != DSTACK_OK) return st;
    } else {
        for (uint32_t r = 0; r < batch && st == DSTACK_OK; r++) {
            st = enqueue_io(p, gp, r, 1, true);
            if (st == DSTACK_OK) st = run_steps(p, gp, 1);
            if (st == DSTACK_OK) st = enqueue_io(p, gp, r, 1, false);
        }
        if (st != DSTACK_OK) return st;
    }
    CU_TRY(cudaLaunchHostFunc(gp->stream, run_finished, p), "cudaLaunchHostFunc");
    return DSTACK_OK;
}

/* Capture the run of `batch` on gp once (its first run: warm-up), replay it after. */
static dstack_status enqueue_graph(ds_exec_plan *p, ds_gpu_part *gp, uint32_t batch) {
    cudaGraphExec_t exec = NULL;
    for (uint32_t i = 0; i < p->n_graphs; i++)
        if (p->graphs[i].gp == gp && p->graphs[i].batch == batch) exec = p->graphs[i].exec;
    if (!exec) {
        if (p->n_graphs == DS_CU_MAX_GRAPHS) return enqueue_body(p, gp, batch);
        cudaError_t e = cudaStreamBeginCapture(gp->stream, cudaStreamCaptureModeThreadLocal);
        if (e != cudaSuccess) return ds_gpu_cuda_fail(e, "cudaStreamBeginCapture");
        dstack_status st = enqueue_body(p, gp, batch);
        cudaGraph_t graph = NULL;
        e = cudaStreamEndCapture(gp->stream, &graph);
        if (st == DSTACK_OK && e == cudaSuccess)
            e = cudaGraphInstantiate(&exec, graph, 0);
        if (graph) cudaGraphDestroy(graph);
        if (st != DSTACK_OK || e != cudaSuccess || !exec) {
            cudaGetLastError();
            p->graphs_failed = true; /* e.g. a library call that cannot be captured */
            return enqueue_body(p, gp, batch);
        }
        p->graphs[p->n_graphs].gp = gp;
        p->graphs[p->n_graphs].batch = batch;
        p->graphs[p->n_graphs++].exec = exec;
    }
    CU_TRY(cudaGraphLaunch(exec, gp->stream), "cudaGraphLaunch");
    return DSTACK_OK;
}

static dstack_status enqueue_run(ds_exec_plan *p, ds_gpu_part *gp, uint32_t batch) {
    dstack_status st = p->g->batchable ? enqueue_inputs(p, gp, batch) : DSTACK_OK;
    if (st != DSTACK_OK) return st;
    st = p->ex->use_graphs && !p->graphs_failed ? enqueue_graph(p, gp, batch)
                                                : enqueue_body(p, gp, batch);
    if (st != DSTACK_OK) return st;
    CU_TRY(cudaEventRecord(p->finished, gp->stream), "cudaEventRecord");
    return DSTACK_OK;
}

/* Page-locked host memory (cudaHostAlloc / cudaHostRegister): the copy engine
 * reads it directly. Anything else, or a failed query, is not. */
static bool is_page_locked(const void *ptr) {
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeHost;
}

static dstack_status cuda_run(ds_executor *base, ds_exec_plan *p, const ds_exec_batch *b,
                              const ds_partition *part, ds_exec_done_fn done, void *done_arg) {
    ds_cuda_exec *ex = (ds_cuda_exec *)base;
    if (!p || !b || !done) return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cuda run: NULL argument");
    if (b->batch == 0 || b->batch > p->max_batch)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cuda run: batch %u outside 1..%u", b->batch,
                       p->max_batch);
    const ds_graph *g = p->g;
    for (uint32_t r = 0; r < b->batch; r++) {
        for (uint32_t j = 0; j < g->n_inputs; j++) {
            const void *src = b->inputs[r * g->n_inputs + j];
            if (!src) return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "request %u input %u is NULL", r, j);
            p->in_ptrs[r * g->n_inputs + j] = src;
        }
        for (uint32_t j = 0; j < g->n_outputs; j++) {
            void *dst = b->outputs[r * g->n_outputs + j];
            if (!dst) return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "request %u output %u is NULL", r, j);
            p->out_ptrs[r * g->n_outputs + j] = dst;
        }
    }
    ds_gpu_part *gp = part && part->handle ? (ds_gpu_part *)part->handle : ex->whole;
    dstack_status st = ds_gpu_bind_thread(ex->gpu);
    if (st != DSTACK_OK) return st;
    p->direct_inputs = g->batchable;
    for (uint32_t i = 0; i < b->batch * g->n_inputs && p->direct_inputs; i++)
        p->direct_inputs = is_page_locked(p->in_ptrs[i]);
    if (!p->direct_inputs)
        for (uint32_t r = 0; r < b->batch; r++)
            for (uint32_t j = 0; j < g->n_inputs; j++)
                memcpy(p->h_in + p->in_off[j] + (uint64_t)r * p->in_bytes[j], p->in_ptrs[r * g->n_inputs + j],
                       p->in_bytes[j]);
    p->done = done;
    p->done_arg = done_arg;
    p->run_batch = b->batch;
    pthread_mutex_lock(&gp->lock);
    st = enqueue_run(p, gp, b->batch);
    pthread_mutex_unlock(&gp->lock);
    if (st != DSTACK_OK) {
        /* what was enqueued may still run: wait so the staging is free again */
        cudaStreamSynchronize(gp->stream);
        cudaGetLastError();
    }
    return st;
}

/* ------------------------------------------------------------------- plans */

static bool algo_allowed(const ds_exec_plan *p, const ds_cu_step *s,
                         const cudnnConvolutionFwdAlgoPerf_t *r) {
    if (r->status != CUDNN_STATUS_SUCCESS || r->memory > DS_CU_WORKSPACE_CAP) return false;
    if (p->precision != DSTACK_PRECISION_FP32) return true;
    /* FP32: FMA kernels only (no TF32 tensor cores), no FFT, and no Winograd
     * above 3x3: measured 3.3e-4 relative error on alexnet's 5x5 conv (batch
     * >= 8) against the cpu reference, over the 1e-4 FP32 bound. */
    if (r->mathType != CUDNN_FMA_MATH) return false;
    if (r->algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT || r->algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING)
        return false;
    bool winograd = r->algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
                    r->algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
    return !(winograd && (s->conv.kh > 3 || s->conv.kw > 3));
}

/* Heuristic choice (no trial runs). */
static dstack_status algo_heuristic(ds_exec_plan *p, cudnnHandle_t h, const ds_cu_step *s,
                                    cu_conv_rt *c, uint32_t i) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    DNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(h, c->xdesc[i], c->wdesc, c->cdesc, c->ydesc[i],
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf),
            "cudnnGetConvolutionForwardAlgorithm_v7");
    c->algo[i] = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    for (int k = 0; k < got; k++)
        if (algo_allowed(p, s, &perf[k])) {
            c->algo[i] = perf[k].algo;
            break;
        }
    return DSTACK_OK;
}

/* Measured choice: cudnnFindConvolutionForwardAlgorithmEx on the plan's own
 * buffers (x and y in the arena, the real weights). */
static dstack_status algo_find(ds_exec_plan *p, cudnnHandle_t h, const ds_cu_step *s,
                               cu_conv_rt *c, uint32_t i, void *ws, size_t ws_bytes) {
    const ds_node *n = &p->g->nodes[s->node];
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    DNN_TRY(cudnnFindConvolutionForwardAlgorithmEx(
                h, c->xdesc[i], tensor_ptr(p, n->inputs[0]), c->wdesc, tensor_ptr(p, n->inputs[1]),
                c->cdesc, c->ydesc[i], tensor_ptr(p, s->out), CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got,
                perf, ws, ws_bytes),
            "cudnnFindConvolutionForwardAlgorithmEx");
    for (int k = 0; k < got; k++)
        if (algo_allowed(p, s, &perf[k])) {
            c->algo[i] = perf[k].algo;
            return DSTACK_OK;
        }
    return algo_heuristic(p, h, s, c, i);
}

/* Batch sizes that get a measured algorithm: 1, 2, 4, ... and max_batch; a
 * batch b uses the choice of the smallest such size >= b. */
static bool is_find_bucket(uint32_t b, uint32_t max_batch) {
    return b == max_batch || (b & (b - 1)) == 0;
}

static dstack_status choose_algos(ds_exec_plan *p, cudnnHandle_t h, const ds_cu_step *s,
                                  cu_conv_rt *c, void *find_ws, size_t *ws) {
    dstack_status st = DSTACK_OK;
    bool find = p->ex->algo_find && find_ws;
    /* from the largest batch down, so each b can take the next bucket's algorithm */
    for (uint32_t i = p->n_shapes; i-- > 0 && st == DSTACK_OK;) {
        uint32_t b = i + 1;
        if (!find) st = algo_heuristic(p, h, s, c, i);
        else if (is_find_bucket(b, p->n_shapes)) st = algo_find(p, h, s, c, i, find_ws, DS_CU_WORKSPACE_CAP);
        else c->algo[i] = c->algo[i + 1];
        if (st != DSTACK_OK) return st;
        size_t need = 0;
        cudnnStatus_t r = cudnnGetConvolutionForwardWorkspaceSize(h, c->xdesc[i], c->wdesc, c->cdesc,
                                                                  c->ydesc[i], c->algo[i], &need);
        if (r != CUDNN_STATUS_SUCCESS || need > DS_CU_WORKSPACE_CAP) { /* not valid at this b */
            if ((st = algo_heuristic(p, h, s, c, i)) != DSTACK_OK) return st;
            DNN_TRY(cudnnGetConvolutionForwardWorkspaceSize(h, c->xdesc[i], c->wdesc, c->cdesc,
                                                            c->ydesc[i], c->algo[i], &need),
                    "cudnnGetConvolutionForwardWorkspaceSize");
        }
        if (need > *ws) *ws = need;
    }
    return DSTACK_OK;
}

static dstack_status set_4d(cudnnTensorDescriptor_t d, const int64_t *dims) {
    DNN_TRY(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)dims[0],
                                       (int)dims[1], (int)dims[2], (int)dims[3]),
            "cudnnSetTensor4dDescriptor");
    return DSTACK_OK;
}

static dstack_status conv_prepare(ds_exec_plan *p, cudnnHandle_t h, const ds_cu_step *s,
                                  void *find_ws, size_t *ws) {
    const ds_node *n = &p->g->nodes[s->node];
    const ds_cu_conv_params *cp = &s->conv;
    cu_conv_rt *c = &p->conv[s->node];
    c->xdesc = calloc(p->n_shapes, sizeof *c->xdesc);
    c->ydesc = calloc(p->n_shapes, sizeof *c->ydesc);
    c->algo = calloc(p->n_shapes, sizeof *c->algo);
    if (!c->xdesc || !c->ydesc || !c->algo) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "conv descriptors");
    DNN_TRY(cudnnCreateFilterDescriptor(&c->wdesc), "cudnnCreateFilterDescriptor");
    DNN_TRY(cudnnSetFilter4dDescriptor(c->wdesc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)cp->k,
                                       (int)(cp->c / cp->group), (int)cp->kh, (int)cp->kw),
            "cudnnSetFilter4dDescriptor");
    DNN_TRY(cudnnCreateConvolutionDescriptor(&c->cdesc), "cudnnCreateConvolutionDescriptor");
    DNN_TRY(cudnnSetConvolution2dDescriptor(c->cdesc, (int)cp->pad_h, (int)cp->pad_w,
                                            (int)cp->stride_h, (int)cp->stride_w, (int)cp->dil_h,
                                            (int)cp->dil_w, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT),
            "cudnnSetConvolution2dDescriptor");
    DNN_TRY(cudnnSetConvolutionGroupCount(c->cdesc, (int)cp->group), "cudnnSetConvolutionGroupCount");
    DNN_TRY(cudnnSetConvolutionMathType(c->cdesc, p->precision == DSTACK_PRECISION_TF32
                                                      ? CUDNN_TENSOR_OP_MATH
                                                      : CUDNN_FMA_MATH),
            "cudnnSetConvolutionMathType");
    DNN_TRY(cudnnCreateTensorDescriptor(&c->bdesc), "cudnnCreateTensorDescriptor");
    DNN_TRY(cudnnSetTensor4dDescriptor(c->bdesc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, (int)cp->k,
                                       1, 1),
            "cudnnSetTensor4dDescriptor (bias)");
    DNN_TRY(cudnnCreateActivationDescriptor(&c->adesc), "cudnnCreateActivationDescriptor");
    DNN_TRY(cudnnSetActivationDescriptor(c->adesc, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0),
            "cudnnSetActivationDescriptor");
    for (uint32_t i = 0; i < p->n_shapes; i++) {
        int64_t xd[DS_MAX_RANK], yd[DS_MAX_RANK];
        ds_cu_dims_at(p->g, n->inputs[0], i + 1, xd);
        ds_cu_dims_at(p->g, s->out, i + 1, yd);
        DNN_TRY(cudnnCreateTensorDescriptor(&c->xdesc[i]), "cudnnCreateTensorDescriptor");
        DNN_TRY(cudnnCreateTensorDescriptor(&c->ydesc[i]), "cudnnCreateTensorDescriptor");
        dstack_status st = set_4d(c->xdesc[i], xd);
        if (st == DSTACK_OK) st = set_4d(c->ydesc[i], yd);
        if (st != DSTACK_OK) return st;
        int on, oc, oh, ow;
        DNN_TRY(cudnnGetConvolution2dForwardOutputDim(c->cdesc, c->xdesc[i], c->wdesc, &on, &oc, &oh,
                                                      &ow),
                "cudnnGetConvolution2dForwardOutputDim");
        if (on != yd[0] || oc != yd[1] || oh != yd[2] || ow != yd[3])
            return ds_fail(DSTACK_ERR_SHAPE, "node '%s' (Conv): cuDNN output %dx%dx%dx%d, graph %lldx%lldx%lldx%lld",
                           n->name, on, oc, oh, ow, (long long)yd[0], (long long)yd[1],
                           (long long)yd[2], (long long)yd[3]);
    }
    return choose_algos(p, h, s, c, find_ws, ws);
}

static void conv_release(ds_exec_plan *p, cu_conv_rt *c) {
    for (uint32_t i = 0; i < p->n_shapes; i++) {
        if (c->xdesc && c->xdesc[i]) cudnnDestroyTensorDescriptor(c->xdesc[i]);
        if (c->ydesc && c->ydesc[i]) cudnnDestroyTensorDescriptor(c->ydesc[i]);
    }
    free(c->xdesc);
    free(c->ydesc);
    free(c->algo);
    if (c->wdesc) cudnnDestroyFilterDescriptor(c->wdesc);
    if (c->cdesc) cudnnDestroyConvolutionDescriptor(c->cdesc);
    if (c->bdesc) cudnnDestroyTensorDescriptor(c->bdesc);
    if (c->adesc) cudnnDestroyActivationDescriptor(c->adesc);
}

static void cuda_plan_destroy(ds_executor *base, ds_exec_plan *p) {
    (void)base;
    if (!p) return;
    ds_gpu_bind_thread(p->ex->gpu);
    if (p->finished) {
        cudaEventSynchronize(p->finished);
        cudaEventDestroy(p->finished);
    }
    for (uint32_t i = 0; i < p->n_graphs; i++) cudaGraphExecDestroy(p->graphs[i].exec);
    if (p->conv)
        for (uint32_t i = 0; i < p->prog.n_steps; i++) conv_release(p, &p->conv[i]);
    free(p->conv);
    cudaFree(p->d_arena);
    cudaFree(p->d_weights);
    cudaFree(p->d_workspace);
    cudaFreeHost(p->h_in);
    cudaFreeHost(p->h_out);
    free(p->out_ptrs);
    free(p->in_ptrs);
    ds_cu_program_free(&p->prog);
    free(p);
}

static dstack_status plan_upload(ds_exec_plan *p) {
    const ds_graph *g = p->g;
    CU_TRY(cudaMalloc((void **)&p->d_arena, p->prog.arena_bytes ? p->prog.arena_bytes : 256),
           "cudaMalloc (activation arena)");
    CU_TRY(cudaMemset(p->d_arena, 0, p->prog.arena_bytes ? p->prog.arena_bytes : 256),
           "cudaMemset (arena)");
    CU_TRY(cudaMalloc((void **)&p->d_weights, p->prog.weights_bytes ? p->prog.weights_bytes : 256),
           "cudaMalloc (weights)");
    for (uint32_t t = 0; t < g->n_tensors; t++) {
        const ds_tensor *x = &g->tensors[t];
        if (x->kind != DS_TENSOR_CONST || !x->data) continue;
        size_t bytes = (size_t)ds_tensor_numel(x) * sizeof(float);
        if (bytes)
            CU_TRY(cudaMemcpy(p->d_weights + p->prog.weight_offsets[t], x->data, bytes,
                              cudaMemcpyHostToDevice),
                   "cudaMemcpy (weights upload)");
    }
    uint64_t in = 0, out = 0;
    for (uint32_t j = 0; j < g->n_inputs; j++) {
        p->in_bytes[j] = (uint64_t)ds_tensor_numel(&g->tensors[g->inputs[j]]) * sizeof(float);
        p->in_off[j] = in;
        in += p->in_bytes[j] * p->max_batch;
    }
    for (uint32_t j = 0; j < g->n_outputs; j++) {
        p->out_bytes[j] = (uint64_t)ds_tensor_numel(&g->tensors[g->outputs[j]]) * sizeof(float);
        p->out_off[j] = out;
        out += p->out_bytes[j] * p->max_batch;
    }
    CU_TRY(cudaHostAlloc((void **)&p->h_in, in ? in : 64, cudaHostAllocDefault), "cudaHostAlloc (inputs)");
    CU_TRY(cudaHostAlloc((void **)&p->h_out, out ? out : 64, cudaHostAllocDefault), "cudaHostAlloc (outputs)");
    p->out_ptrs = calloc((size_t)p->max_batch * (g->n_outputs ? g->n_outputs : 1), sizeof(void *));
    p->in_ptrs = calloc((size_t)p->max_batch * (g->n_inputs ? g->n_inputs : 1), sizeof(void *));
    if (!p->out_ptrs || !p->in_ptrs) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "request pointers");
    CU_TRY(cudaEventCreateWithFlags(&p->finished, cudaEventDisableTiming), "cudaEventCreate");
    return DSTACK_OK;
}

static dstack_status plan_build(ds_exec_plan *p) {
    dstack_status st = ds_cu_program_build(p->g, p->max_batch, &p->prog);
    if (st != DSTACK_OK) return st;
    p->n_shapes = p->g->batchable ? p->max_batch : 1;
    p->conv = calloc(p->prog.n_steps ? p->prog.n_steps : 1, sizeof *p->conv);
    if (!p->conv) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "conv runtime state");
    if ((st = ds_gpu_bind_thread(p->ex->gpu)) != DSTACK_OK) return st;
    if ((st = plan_upload(p)) != DSTACK_OK) return st;
    ds_gpu_part *gp = p->ex->whole;
    size_t ws = 0;
    void *find_ws = NULL;
    if (p->ex->algo_find && cudaMalloc(&find_ws, DS_CU_WORKSPACE_CAP) != cudaSuccess) {
        cudaGetLastError();
        find_ws = NULL; /* no room to measure: heuristics */
    }
    pthread_mutex_lock(&gp->lock);
    for (uint32_t i = 0; i < p->prog.n_steps && st == DSTACK_OK; i++) {
        const ds_cu_step *s = &p->prog.steps[i];
        if (!s->skip && s->op == DS_OP_CONV && s->engine == DS_CU_ENGINE_CUDNN) {
            st = conv_prepare(p, gp->cudnn, s, find_ws, &ws);
            if (st != DSTACK_OK)
                st = ds_fail_prefix(st, "node '%s' (Conv): ", p->g->nodes[s->node].name);
        }
    }
    if (find_ws) {
        cudaStreamSynchronize(gp->stream);
        cudaFree(find_ws);
    }
    pthread_mutex_unlock(&gp->lock);
    if (st != DSTACK_OK) return st;
    p->workspace_bytes = ws;
    if (ws) CU_TRY(cudaMalloc(&p->d_workspace, ws), "cudaMalloc (conv workspace)");
    return DSTACK_OK;
}

static dstack_status cuda_plan_create(ds_executor *base, const ds_graph *g,
                                      const ds_plan_options *o, ds_exec_plan **out) {
    *out = NULL;
    if (!g || !o) return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cuda plan: NULL argument");
    if (o->precision == DSTACK_PRECISION_FP16)
        return ds_fail(DSTACK_ERR_UNSUPPORTED, "cuda backend: FP16 precision is not implemented "
                                               "(use FP32 or TF32)");
    if (o->precision != DSTACK_PRECISION_FP32 && o->precision != DSTACK_PRECISION_TF32)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cuda plan: precision %d", (int)o->precision);
    if (g->n_inputs > DSTACK_MAX_IO || g->n_outputs > DSTACK_MAX_IO)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cuda plan: too many inputs/outputs");
    ds_exec_plan *p = calloc(1, sizeof *p);
    if (!p) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cuda plan");
    p->ex = (ds_cuda_exec *)base;
    p->g = g;
    p->precision = o->precision;
    p->max_batch = o->max_batch ? o->max_batch : 1;
    dstack_status st = plan_build(p);
    if (st != DSTACK_OK) {
        cuda_plan_destroy(base, p);
        return ds_fail_prefix(st, "model '%s' on cuda: ", g->name ? g->name : "");
    }
    *out = p;
    return DSTACK_OK;
}

/* ---------------------------------------------------------------- executor */

static dstack_status cuda_partition_get(ds_executor *base, uint32_t first_unit,
                                        uint32_t unit_count, ds_partition *out) {
    ds_cuda_exec *ex = (ds_cuda_exec *)base;
    ds_gpu_part *gp = NULL;
    dstack_status st = ds_gpu_partition(ex->gpu, first_unit, unit_count, &gp);
    if (st != DSTACK_OK) return st;
    out->first_unit = first_unit;
    out->unit_count = unit_count;
    out->sm_count = gp->sm_count;
    out->handle = gp;
    return DSTACK_OK;
}

static void cuda_destroy(ds_executor *base) {
    ds_cuda_exec *ex = (ds_cuda_exec *)base;
    if (!ex) return;
    ds_gpu_close(ex->gpu);
    free(ex);
}

static dstack_status cuda_host_alloc(ds_executor *base, size_t bytes, void **out) {
    ds_cuda_exec *ex = (ds_cuda_exec *)base;
    dstack_status st = ds_gpu_bind_thread(ex->gpu);
    if (st != DSTACK_OK) return st;
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
    if (e == cudaErrorMemoryAllocation)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cudaHostAlloc of %zu page-locked bytes: %s", bytes,
                       cudaGetErrorString(e));
    CU_TRY(e, "cudaHostAlloc (dstack_host_alloc)");
    *out = p;
    return DSTACK_OK;
}

static void cuda_host_free(ds_executor *base, void *ptr) {
    ds_cuda_exec *ex = (ds_cuda_exec *)base;
    if (ds_gpu_bind_thread(ex->gpu) == DSTACK_OK) cudaFreeHost(ptr);
}

static dstack_status cuda_trace_begin(ds_executor *base) {
    (void)base;
    return ds_cupti_begin();
}

static dstack_status cuda_trace_end(ds_executor *base, ds_kernel_record **out, size_t *n) {
    (void)base;
    return ds_cupti_end(out, n);
}

/* What a profile measured here depends on beyond the device: the library
 * versions that pick and run the kernels (cache key, src/profile/cache.h). */
static void cuda_versions(char *out, size_t n) {
    int drv = 0, rt = 0, cub_major = 0, cub_minor = 0, cub_patch = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    cublasGetProperty(MAJOR_VERSION, &cub_major);
    cublasGetProperty(MINOR_VERSION, &cub_minor);
    cublasGetProperty(PATCH_LEVEL, &cub_patch);
    snprintf(out, n, "cudnn %zu cublas %d.%d.%d runtime %d driver %d", cudnnGetVersion(), cub_major, cub_minor,
             cub_patch, rt, drv);
}

static const ds_executor_ops cuda_ops = {
    .name = "cuda",
    .plan_create = cuda_plan_create,
    .plan_destroy = cuda_plan_destroy,
    .run = cuda_run,
    .partition_get = cuda_partition_get,
    .destroy = cuda_destroy,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .trace_begin = cuda_trace_begin,
    .trace_end = cuda_trace_end,
};

dstack_status ds_exec_cuda_create(const ds_executor_config *cfg, ds_executor **out) {
    if (!out) return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "cuda executor: NULL out");
    *out = NULL;
    ds_cuda_exec *ex = calloc(1, sizeof *ex);
    if (!ex) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "cuda executor");
    int device = cfg ? cfg->device : 0;
    dstack_partitioning mode = cfg ? cfg->partitioning : DSTACK_PARTITION_AUTO;
    dstack_status st = ds_gpu_open(device, mode, &ex->gpu);
    if (st != DSTACK_OK) {
        free(ex);
        return st;
    }
    const ds_gpu_info *info = ds_gpu_get_info(ex->gpu);
    st = ds_gpu_partition(ex->gpu, 0, info->n_units, &ex->whole);
    if (st != DSTACK_OK) {
        ds_gpu_close(ex->gpu);
        free(ex);
        return st;
    }
    ex->base.ops = &cuda_ops;
    const char *algo = getenv("DSTACK_CUDA_CONV_ALGO");
    ex->algo_find = !(algo && !strcmp(algo, "heuristic"));
    const char *graphs = getenv("DSTACK_CUDA_GRAPHS");
    ex->use_graphs = !(graphs && !strcmp(graphs, "0"));
    memcpy(ex->base.device.name, info->name, sizeof ex->base.device.name);
    ex->base.device.sm_count = info->sm_count;
    ex->base.device.unit_sms = info->unit_sms;
    ex->base.device.n_units = info->n_units;
    ex->base.device.partitioning = info->partitioning;
    ex->base.device.tail_leftover = info->tail_leftover;
    cuda_versions(ex->base.device.version, sizeof ex->base.device.version);
    *out = &ex->base;
    return DSTACK_OK;
}
