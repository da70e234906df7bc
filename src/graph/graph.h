/* graph.h - the network IR: tensors, ops, shapes. Nothing GPU here.
 *
 * A ds_graph is a list of tensors and a list of nodes in topological order.
 * Every value is float32. Tensors are graph inputs, constants (weights, owned
 * by the graph) or activations (outputs of nodes). Shapes are stored for ONE
 * request:
 *
 *  - If the graph is `batchable`, every graph input and activation has the
 *    batch on axis 0 and dims[0] == 1; an executor running a batch of b
 *    substitutes dims[0] = b for every non-constant tensor. A graph is
 *    batchable when every input has dims[0] == 1 (or a symbolic first
 *    dimension) and every node keeps axis 0 as the batch axis (see
 *    ds_graph_finalize). CNNs from the zoo and from exporters are.
 *  - Otherwise the stored shapes are the whole of one request (say an ONNX
 *    conformance case with input 2x3x4x5) and an executor runs a batch of b
 *    as b independent runs.
 *
 * Why this rule: a request is one sample, and batching is the scheduler's
 * business, so one IR serves both "resnet50 at any batch" and the fixed-shape
 * ONNX node tests without a second code path in the executors.
 *
 * Conv and pooling are 2-D (NCHW, OIHW weights). Other ranks are refused at
 * import with DSTACK_ERR_UNSUPPORTED_OP.
 */
#ifndef DS_GRAPH_H
#define DS_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dstack.h"

#define DS_MAX_RANK DSTACK_MAX_RANK
#define DS_NODE_MAX_INPUTS 16
#define DS_TENSOR_NONE UINT32_MAX /* an absent optional input */

typedef enum ds_op_kind {
    DS_OP_CONV,            /* X, W[, B]; attrs kernel/stride/pads/dilation/group, activation */
    DS_OP_BATCHNORM,       /* X, scale, bias, mean, var; epsilon */
    DS_OP_RELU,
    DS_OP_CLIP,            /* clip_min, clip_max (ReLU6: 0, 6) */
    DS_OP_LEAKY_RELU,      /* alpha */
    DS_OP_SIGMOID,
    DS_OP_TANH,
    DS_OP_HARD_SIGMOID,    /* alpha, beta: max(0, min(1, alpha*x + beta)) */
    DS_OP_HARD_SWISH,      /* x * max(0, min(1, x/6 + 1/2)) */
    DS_OP_PRELU,           /* X, slope (broadcast to X) */
    DS_OP_MAXPOOL,         /* kernel/stride/pads/dilation, ceil_mode */
    DS_OP_AVGPOOL,         /* kernel/stride/pads, ceil_mode, count_include_pad */
    DS_OP_GLOBAL_AVGPOOL,  /* N,C,H,W -> N,C,1,1 */
    DS_OP_GLOBAL_MAXPOOL,
    DS_OP_GEMM,            /* A, B[, C]; alpha, beta, trans_a, trans_b; activation */
    DS_OP_MATMUL,          /* numpy matmul semantics, broadcast batch dims */
    DS_OP_ADD,             /* numpy broadcasting, two inputs */
    DS_OP_MUL,
    DS_OP_SUM,             /* 1..16 inputs, broadcasting */
    DS_OP_CONCAT,          /* axis */
    DS_OP_FLATTEN,         /* axis */
    DS_OP_RESHAPE,         /* shape[] with 0 (copy) and -1 (infer), allowzero */
    DS_OP_TRANSPOSE,       /* perm[] */
    DS_OP_SOFTMAX,         /* axis; softmax_legacy: opset < 13 coerces to 2-D at axis */
    DS_OP_LRN,             /* size, alpha, beta, bias */
    DS_OP_IDENTITY,        /* also Dropout at inference */
    DS_OP_COUNT
} ds_op_kind;

/* An activation fused into Conv or Gemm (set by the BN/activation folding
 * pass or by the zoo); executors apply it to the op's output. */
typedef enum ds_activation {
    DS_ACT_NONE = 0,
    DS_ACT_RELU,
    DS_ACT_CLIP /* uses clip_min, clip_max */
} ds_activation;

/* Every attribute of every op, flat: an op reads the fields it needs. Fields
 * are normalized at import (negative axes made positive, auto_pad turned
 * into explicit pads, defaults filled), so executors never see ONNX rules. */
typedef struct ds_op_attrs {
    /* conv, pools: 2-D */
    uint32_t kernel[2];   /* kH, kW */
    uint32_t stride[2];
    uint32_t dilation[2];
    uint32_t pads[4];     /* top, left, bottom, right */
    uint32_t group;
    bool ceil_mode;
    bool count_include_pad;
    ds_activation activation;
    /* scalars */
    float alpha;          /* LeakyRelu, HardSigmoid, Gemm, LRN */
    float beta;           /* HardSigmoid, Gemm, LRN */
    float bias;           /* LRN */
    float epsilon;        /* BatchNormalization */
    float clip_min;       /* Clip and DS_ACT_CLIP; -INFINITY / INFINITY when absent */
    float clip_max;
    uint32_t size;        /* LRN */
    bool trans_a, trans_b;
    bool softmax_legacy;  /* opset < 13 Softmax: flatten to [prod(<axis), prod(>=axis)] */
    bool allowzero;       /* Reshape opset 14 */
    int32_t axis;         /* Concat, Flatten, Softmax: >= 0 after import */
    uint32_t perm[DS_MAX_RANK]; /* Transpose: perm of the input's rank */
    int64_t shape[DS_MAX_RANK]; /* Reshape target, as in ONNX (0, -1 allowed) */
    uint32_t shape_rank;
} ds_op_attrs;

typedef enum ds_tensor_kind {
    DS_TENSOR_INPUT,      /* fed by the request */
    DS_TENSOR_CONST,      /* weights: data owned by the graph */
    DS_TENSOR_ACTIVATION  /* written by exactly one node */
} ds_tensor_kind;

typedef struct ds_tensor {
    char *name;           /* owned */
    ds_tensor_kind kind;
    uint32_t rank;
    int64_t dims[DS_MAX_RANK]; /* of one request; all > 0 after finalize */
    float *data;          /* DS_TENSOR_CONST only: owned, product(dims) floats */
    uint32_t producer;    /* node index for activations, UINT32_MAX otherwise */
    bool is_output;       /* a graph output */
} ds_tensor;

typedef struct ds_node {
    ds_op_kind op;
    char *name;           /* owned; "" allowed */
    uint32_t n_inputs;
    uint32_t inputs[DS_NODE_MAX_INPUTS]; /* tensor ids; DS_TENSOR_NONE if absent */
    uint32_t output;      /* tensor id: every op has exactly one output */
    ds_op_attrs attrs;
} ds_node;

typedef struct ds_graph {
    char *name;
    ds_tensor *tensors;
    uint32_t n_tensors, cap_tensors;
    ds_node *nodes;
    uint32_t n_nodes, cap_nodes;
    uint32_t inputs[DSTACK_MAX_IO];  /* tensor ids, in the model's input order */
    uint32_t n_inputs;
    uint32_t outputs[DSTACK_MAX_IO]; /* tensor ids, in the model's output order */
    uint32_t n_outputs;
    bool batchable;       /* set by ds_graph_finalize */
    bool finalized;
} ds_graph;

/* ---- building (the zoo and the ONNX importer use these) ---- */

/* A new empty graph, or NULL when out of memory. */
ds_graph *ds_graph_new(const char *name);
void ds_graph_free(ds_graph *g);

/* Fill *a with the defaults every op starts from: stride 1, dilation 1,
 * group 1, alpha 1, beta 1 (Gemm; other ops set theirs), clip +-INFINITY,
 * epsilon 1e-5, LRN bias 1, everything else 0. */
void ds_op_attrs_init(ds_op_attrs *a);

/* Each adder returns the new tensor id, or DS_TENSOR_NONE on failure with
 * the cause set by ds_fail (OUT_OF_MEMORY, INVALID_ARGUMENT for too many
 * inputs/rank). Names are copied. */
uint32_t ds_graph_add_input(ds_graph *g, const char *name, uint32_t rank, const int64_t *dims);
/* Takes ownership of `data` (malloc'd, product(dims) floats) even on failure. */
uint32_t ds_graph_add_const(ds_graph *g, const char *name, uint32_t rank, const int64_t *dims,
                            float *data);
/* A node whose output is a new activation tensor named `output_name` (a
 * generated name if NULL). Shapes are inferred later, by finalize. */
uint32_t ds_graph_add_node(ds_graph *g, ds_op_kind op, const char *name, const uint32_t *inputs,
                           uint32_t n_inputs, const ds_op_attrs *attrs, const char *output_name);
dstack_status ds_graph_mark_output(ds_graph *g, uint32_t tensor);

/* Infer every activation's shape, check every node's inputs (count, rank,
 * matching sizes), decide `batchable`, and seal the graph. Fails with
 * DSTACK_ERR_SHAPE (message names the node, the op and the reason) or
 * INVALID_ARGUMENT (no outputs, a tensor used before it is produced). */
dstack_status ds_graph_finalize(ds_graph *g);

/* ---- passes (on a finalized graph; they keep it finalized) ---- */

/* Fold every BatchNormalization that directly follows a Conv whose output
 * has no other reader into that Conv's weights and bias (exact up to float
 * rounding), and fuse a Relu/Clip that is the only reader of a Conv or Gemm
 * into its `activation`. Drops the dead nodes and constants. */
dstack_status ds_graph_fold(ds_graph *g);

/* ---- queries ---- */

int64_t ds_tensor_numel(const ds_tensor *t);       /* product of dims */
uint64_t ds_graph_param_count(const ds_graph *g);  /* floats in constants */
/* The work of one request, counted as the cpu executor does it: 2 x MACs
 * for Conv/Gemm/MatMul, the taps each window really visits for the pools
 * (clipped to the input) and LRN, 1 per element otherwise. Saturates at
 * UINT64_MAX. ds_graph_node_work is one node's share. */
uint64_t ds_graph_flops(const ds_graph *g);
uint64_t ds_graph_node_work(const ds_graph *g, const ds_node *n);
const char *ds_op_name(ds_op_kind op);             /* "Conv", ... */
/* A tensor id by name, or DS_TENSOR_NONE. */
uint32_t ds_graph_find_tensor(const ds_graph *g, const char *name);

/* The taps i in [0, k) of a window starting at `start` with step d that land
 * in [lo, hi): i in [*first, *first + result). O(1), so a 65535-wide window
 * over a 1-pixel input costs one tap, not 65535 bound checks. */
static inline int64_t ds_window_taps(int64_t start, int64_t k, int64_t d, int64_t lo, int64_t hi,
                                     int64_t *first)
{
    int64_t f = start >= lo ? 0 : (lo - start + d - 1) / d;
    int64_t e = start >= hi ? 0 : (hi - 1 - start) / d + 1;
    if (e > k)
        e = k;
    *first = f;
    return e > f ? e - f : 0;
}

/* ---- the built-in zoo (zoo.c) ---- */

typedef struct ds_zoo_params {
    uint32_t image_size; /* input H = W, default 224 */
    uint32_t classes;    /* default 1000 */
    uint64_t seed;       /* weights are a deterministic function of the seed */
} ds_zoo_params;

/* Build zoo model `name` (finalized, not folded). NOT_FOUND for an unknown
 * name (the message lists the known ones), SHAPE when image_size is too
 * small for the architecture. */
dstack_status ds_zoo_build(const char *name, const ds_zoo_params *p, ds_graph **out);
/* The zoo's names, NULL-terminated. */
const char *const *ds_zoo_names(void);

/* ---- ONNX (onnx_import.c, onnx_export.c) ---- */

/* Parse an ONNX model into a finalized graph (constants folded into
 * initializers, Dropout as Identity, a symbolic or -1 first input dim as
 * the batch). Statuses: PARSE, UNSUPPORTED_OP, UNSUPPORTED_TYPE, SHAPE,
 * EXTERNAL_DATA, OUT_OF_MEMORY; the message names node, op and reason. */
dstack_status ds_onnx_import(const void *bytes, size_t n_bytes, ds_graph **out);
/* The same, holding at most min(16 x n_bytes + 64 MiB, memory_budget) bytes
 * while unpacking (RESOURCE_LIMIT beyond), and refusing messages nested
 * deeper than 64 (PARSE). ds_onnx_import has no memory_budget of its own. */
dstack_status ds_onnx_import_budget(const void *bytes, size_t n_bytes, uint64_t memory_budget,
                                    ds_graph **out);
/* Serialize a finalized graph as an ONNX model (opset 13, dynamic batch
 * when batchable). *bytes is malloc'd, the caller frees it. */
dstack_status ds_onnx_export(const ds_graph *g, void **bytes, size_t *n_bytes);

#endif /* DS_GRAPH_H */
