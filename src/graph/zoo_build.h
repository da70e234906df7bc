/* zoo_build.h - private to the zoo: a small layer-builder over the graph API.
 *
 * Each zoo architecture is a function that stacks layers with these helpers.
 * The builder tracks every activation's NCHW shape (N = 1) itself, so an
 * image too small for the architecture is refused with DSTACK_ERR_SHAPE and a
 * message naming the layer before finalize runs, and so layers can size
 * their weights without querying the graph.
 *
 * Errors are sticky: the first failure is stored in `st` (with its message
 * set by ds_fail) and every later helper returns a tensor with id
 * DS_TENSOR_NONE without touching the graph, so architecture code reads as a
 * straight list of layers with one check at the end.
 *
 * Weights are drawn from one splitmix64 stream per model, seeded with
 * seed ^ FNV-1a(canonical architecture name) and consumed in build order,
 * two 24-bit draws u per 64-bit output mapped to (u - 2^23) * bound / 2^23:
 * the same (name, seed, image_size, classes) gives bitwise the same weights
 * on every platform (tests pin the first values).
 *   - Conv/Linear weights: Kaiming-uniform, U(-b, b) with b = gain*sqrt(3/fan_in),
 *     gain sqrt(2) when a ReLU follows (possibly after a BN or a residual
 *     add), 1 when nothing clips the output (MobileNetV2's projections, the
 *     classifier), so the second moment of activations stays about constant
 *     with depth.
 *   - Biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default).
 *   - BatchNorm: gamma = g*(1 + U(-0.1, 0.1)), beta, running mean U(-0.05, 0.05),
 *     running var 1 + U(-0.1, 0.1); g is the caller's: 1, or 0.2 for the BN
 *     that ends a residual branch, so the un-normalized sum grows ~4% per
 *     block instead of doubling (measured with ONNX Runtime at 224: ResNet-152
 *     activations go from rms 1.4 to 5.9 over its 50 blocks, logits rms 6).
 */
#ifndef DS_GRAPH_ZOO_BUILD_H
#define DS_GRAPH_ZOO_BUILD_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/graph.h"

typedef struct ds_zb {
    ds_graph *g;
    const char *name; /* the name the caller asked for ("squeezenet"), for messages */
    uint32_t image_size;
    uint32_t classes;
    uint64_t rng;     /* splitmix64 state */
    dstack_status st; /* first failure; helpers are no-ops after it */
} ds_zb;

/* An activation and its shape. Rank 4 (1, c, h, w) unless `flat`, then
 * rank 2 (1, c). id is DS_TENSOR_NONE once the builder has failed. */
typedef struct ds_zt {
    uint32_t id;
    uint32_t c, h, w;
    bool flat;
} ds_zt;

/* A convolution: square kernel, symmetric padding. Zero stride/group mean 1. */
typedef struct ds_zconv {
    uint32_t cout, kernel, stride, pad, group;
    bool bias;   /* has a bias input (VGG, AlexNet, SqueezeNet) */
    bool linear; /* no ReLU follows: Kaiming gain 1 instead of sqrt(2) */
} ds_zconv;

/* An architecture: stack layers on `x` (the graph input) and return the
 * logits, shape (1, classes). */
typedef ds_zt (*ds_zoo_arch_fn)(ds_zb *b, ds_zt x);

ds_zt ds_zb_input(ds_zb *b);
ds_zt ds_zb_conv(ds_zb *b, ds_zt x, const char *name, ds_zconv c);
/* BatchNormalization with the given epsilon; gamma centred on gamma_scale. */
ds_zt ds_zb_bn(ds_zb *b, ds_zt x, const char *name, float epsilon, float gamma_scale);
ds_zt ds_zb_relu(ds_zb *b, ds_zt x, const char *name);
ds_zt ds_zb_relu6(ds_zb *b, ds_zt x, const char *name); /* Clip(0, 6) */
ds_zt ds_zb_maxpool(ds_zb *b, ds_zt x, const char *name, uint32_t kernel, uint32_t stride,
                    uint32_t pad, bool ceil_mode);
/* AvgPool, count_include_pad as torch's default (true). */
ds_zt ds_zb_avgpool(ds_zb *b, ds_zt x, const char *name, uint32_t kernel, uint32_t stride,
                    uint32_t pad);
ds_zt ds_zb_global_avgpool(ds_zb *b, ds_zt x, const char *name);
/* torch.nn.AdaptiveAvgPool2d((target, target)), exactly: nothing when the
 * map is already target x target, an AvgPool with kernel = stride = h/target
 * when it divides, else Reshape (1, c, h*w) + MatMul by a constant
 * (h*w, target^2) averaging matrix built from torch's bin rule (bin i spans
 * floor(i*h/t) .. ceil((i+1)*h/t)) + Reshape back. The matrix adds h*w*t^2
 * floats of constants (not trainable parameters). */
ds_zt ds_zb_adaptive_avgpool(ds_zb *b, ds_zt x, const char *name, uint32_t target);
ds_zt ds_zb_add(ds_zb *b, ds_zt x, ds_zt y, const char *name);
/* Concat on the channel axis; 1..DS_NODE_MAX_INPUTS inputs of equal h, w. */
ds_zt ds_zb_concat(ds_zb *b, const ds_zt *xs, uint32_t n, const char *name);
ds_zt ds_zb_flatten(ds_zb *b, ds_zt x, const char *name); /* Flatten(axis = 1) */
/* torch.nn.Linear as Gemm(trans_b = 1): weight (out, in), bias (out). The
 * output tensor is named `out_name` (NULL: same as the node). */
ds_zt ds_zb_linear(ds_zb *b, ds_zt x, const char *name, uint32_t out, bool relu_follows,
                   const char *out_name);
/* GlobalAveragePool + Flatten + Linear(classes) named "logits": the
 * classifier head shared by every ResNet-like model. */
ds_zt ds_zb_gap_fc_head(ds_zb *b, ds_zt x, const char *fc_name);

/* The architectures (zoo_*.c). */
ds_zt ds_zoo_resnet18(ds_zb *b, ds_zt x);
ds_zt ds_zoo_resnet34(ds_zb *b, ds_zt x);
ds_zt ds_zoo_resnet50(ds_zb *b, ds_zt x);
ds_zt ds_zoo_resnet101(ds_zb *b, ds_zt x);
ds_zt ds_zoo_resnet152(ds_zb *b, ds_zt x);
ds_zt ds_zoo_mobilenet_v2(ds_zb *b, ds_zt x);
ds_zt ds_zoo_vgg16(ds_zb *b, ds_zt x);
ds_zt ds_zoo_vgg19(ds_zb *b, ds_zt x);
ds_zt ds_zoo_alexnet(ds_zb *b, ds_zt x);
ds_zt ds_zoo_squeezenet1_0(ds_zb *b, ds_zt x);
ds_zt ds_zoo_squeezenet1_1(ds_zb *b, ds_zt x);
ds_zt ds_zoo_googlenet(ds_zb *b, ds_zt x);
ds_zt ds_zoo_densenet121(ds_zb *b, ds_zt x);

#endif /* DS_GRAPH_ZOO_BUILD_H */
