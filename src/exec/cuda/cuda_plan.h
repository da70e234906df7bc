/* cuda_plan.h - from the IR to the cuda backend's program (pure, no CUDA).
 *
 * The cuda executor turns a finalized graph into a list of steps, one per
 * node, each tagged with the engine that runs it, and a memory plan. Both
 * are pure functions of the graph, so tests/test_cuda_plan.c checks them on
 * machines without a GPU; cuda_exec.c then only creates descriptors for the
 * steps and launches them.
 *
 * Engine per op (why):
 *  - Conv with symmetric pads -> cuDNN (cudnnConvolutionForward). Epilogue:
 *    bias + ReLU -> cudnnConvolutionBiasActivationForward (one call);
 *    bias and/or Clip (ReLU6) or ReLU without bias -> our bias_act kernel.
 *    Residual fusion: Conv(bias, no activation) -> Add(other) -> Relu, where
 *    the Conv and Add outputs have no other reader and `other` is computed
 *    before the Conv, becomes ONE cudnnConvolutionBiasActivationForward with
 *    z = other (y = relu(conv + z + bias)); the Add and Relu steps are
 *    skipped and their intermediate tensors get no memory.
 *    Depthwise convolutions (one input channel per group) -> our direct
 *    kernel with bias and clamp fused: cuDNN's FP32 (FMA) depthwise kernels
 *    were measured 4x slower than the whole PyTorch model on mobilenet_v2.
 *    Asymmetric pads (ONNX SAME_* with even kernels) cannot be expressed in
 *    a cuDNN descriptor -> the same direct kernel (slow, exact).
 *  - Gemm, MatMul -> cuBLAS (cublasSgemm / cublasSgemmStridedBatched).
 *  - Reshape, Flatten, Identity -> device-to-device copy; Concat -> one
 *    cudaMemcpy2DAsync per input (no kernel needed).
 *  - Everything else -> our kernels (kernels.cu): elementwise activations,
 *    broadcast Add/Mul/Sum/PRelu, Transpose, BatchNormalization (unfolded),
 *    Max/AveragePool, global pools, Softmax, LRN. Pooling, Softmax and LRN
 *    are ours rather than cuDNN's because ONNX semantics (ceil_mode, the
 *    count_include_pad divisor at the ceil overhang, opset<13 Softmax
 *    coercion, asymmetric pads) are not all expressible in cuDNN
 *    descriptors, and one exact implementation beats two paths. They are a
 *    few percent of a CNN's time.
 *
 * Memory: every non-constant tensor (graph inputs and activations) gets an
 * offset in ONE activation arena sized for max_batch (batchable graphs) or
 * for one request (non-batchable graphs run a batch as b sequential runs).
 * Lifetimes are [writing step, last reading step] over the steps that run
 * (inputs from step 0, outputs to the end; a step's inputs and output are
 * both live at that step, so no op runs in place); tensors whose lifetimes
 * overlap never share bytes;
 * placement is greedy largest-first, lowest fitting offset. Constants go in
 * a separate weights buffer uploaded once.
 */
#ifndef DS_EXEC_CUDA_PLAN_H
#define DS_EXEC_CUDA_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/graph.h"

#define DS_CU_ALIGN 256u
#define DS_CU_NO_OFFSET UINT64_MAX

typedef enum ds_cu_engine {
    DS_CU_ENGINE_CUDNN = 0,  /* cuDNN convolution */
    DS_CU_ENGINE_CUBLAS,     /* Gemm, MatMul */
    DS_CU_ENGINE_KERNEL,     /* our kernels (kernels.cu) */
    DS_CU_ENGINE_COPY        /* cudaMemcpy(2D)Async: Reshape, Flatten, Identity, Concat */
} ds_cu_engine;

typedef enum ds_cu_epilogue {
    DS_CU_EPI_NONE = 0,        /* the op's output as is */
    DS_CU_EPI_CUDNN_BIAS_RELU, /* cudnnConvolutionBiasActivationForward */
    DS_CU_EPI_CUDNN_BIAS_ADD_RELU, /* the same with z = the residual tensor */
    DS_CU_EPI_KERNEL           /* bias_act kernel: + bias (if any), clamp to [act_lo, act_hi] */
} ds_cu_epilogue;

typedef struct ds_cu_conv_params {
    uint32_t pad_h, pad_w;       /* symmetric (cuDNN) */
    uint32_t stride_h, stride_w, dil_h, dil_w, group;
    int64_t c, h, w;             /* input, per request */
    int64_t k, kh, kw;           /* filters, kernel */
    int64_t oh, ow;              /* output */
    bool has_bias;
} ds_cu_conv_params;

typedef struct ds_cu_step {
    uint32_t node;               /* index in g->nodes */
    ds_op_kind op;
    ds_cu_engine engine;
    ds_cu_epilogue epilogue;
    ds_activation act;           /* fused activation of Conv/Gemm */
    float act_lo, act_hi;        /* clamp of the fused activation (ReLU: 0, +inf) */
    ds_cu_conv_params conv;      /* DS_OP_CONV only */
    uint32_t out;                /* the tensor this step writes (a later node's output when fused) */
    uint32_t z;                  /* DS_CU_EPI_CUDNN_BIAS_ADD_RELU: residual tensor, else DS_TENSOR_NONE */
    bool skip;                   /* fused into an earlier step: runs nothing */
} ds_cu_step;

typedef struct ds_cu_program {
    ds_cu_step *steps;
    uint32_t n_steps;
    uint32_t batch_mult;         /* max_batch when batchable, else 1 */
    uint64_t *offsets;           /* per tensor: arena offset, DS_CU_NO_OFFSET for constants */
    uint64_t *weight_offsets;    /* per tensor: weights offset, DS_CU_NO_OFFSET otherwise */
    uint64_t arena_bytes;
    uint64_t weights_bytes;
    uint64_t tensor_bytes_sum;   /* sum of arena tensors' sizes, without reuse */
    uint32_t n_fused;            /* residual fusions made */
} ds_cu_program;

/* Build the program of finalized graph g for batches 1..max_batch.
 * INVALID_ARGUMENT (not finalized, max_batch 0), UNSUPPORTED_OP (an op the
 * backend lacks; the message names node and op), OUT_OF_MEMORY. */
dstack_status ds_cu_program_build(const ds_graph *g, uint32_t max_batch, ds_cu_program *out);
void ds_cu_program_free(ds_cu_program *p);

/* The step for one node (no memory, no fusion). */
dstack_status ds_cu_step_plan(const ds_graph *g, uint32_t node, ds_cu_step *out);

/* The residual fusion pass over steps[g->n_nodes] (one per node, in node
 * order); returns the number of fusions made. */
uint32_t ds_cu_fuse_residual(const ds_graph *g, ds_cu_step *steps);

/* Lifetimes of every tensor over the steps that run (steps NULL: one
 * unfused step per node). first/last[n_tensors]; live[t] false for
 * constants and for tensors no running step touches. */
dstack_status ds_cu_lifetimes(const ds_graph *g, const ds_cu_step *steps, uint32_t *first,
                              uint32_t *last, bool *live);

/* Memory plan alone: offsets[n_tensors] (DS_CU_NO_OFFSET for tensors with
 * no memory), the arena size, and the sum of the planned tensors' sizes.
 * Tensors are sized numel * 4 * batch_mult, each rounded up to `align`. */
dstack_status ds_cu_plan_memory(const ds_graph *g, const ds_cu_step *steps, uint32_t batch_mult,
                                uint64_t align, uint64_t *offsets, uint64_t *arena_bytes,
                                uint64_t *sum_bytes);

/* Dims of tensor t when the graph runs `batch` requests at once (batchable
 * graphs: dims[0] = batch for non-constants). Returns the rank. */
uint32_t ds_cu_dims_at(const ds_graph *g, uint32_t t, uint32_t batch, int64_t *dims);

const char *ds_cu_engine_name(ds_cu_engine e);

#endif
