/* kernels.h - our own CUDA kernels (kernels.cu), C launchers on a stream.
 *
 * Each launcher enqueues on `stream` and returns the launch's cudaError_t
 * (cudaGetLastError after the launch) as an int; nothing synchronizes.
 * Shapes are int64 element counts. Semantics are ONNX's, matching the cpu
 * reference executor. */
#ifndef DS_EXEC_CUDA_KERNELS_H
#define DS_EXEC_CUDA_KERNELS_H

#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_K_MAX_RANK 8

typedef enum ds_k_unary_op {
    DS_K_CLAMP = 0,   /* min(max(x, p0), p1): Relu (0, inf), Clip */
    DS_K_LEAKY,       /* x >= 0 ? x : p0 * x */
    DS_K_SIGMOID,
    DS_K_TANH,
    DS_K_HARD_SIGMOID,/* max(0, min(1, p0 * x + p1)) */
    DS_K_HARD_SWISH
} ds_k_unary_op;

typedef enum ds_k_binary_op {
    DS_K_ADD = 0,
    DS_K_MUL,
    DS_K_PRELU,       /* a < 0 ? b * a : a */
    DS_K_GATHER       /* y = a at strided positions (broadcast copy, transpose) */
} ds_k_binary_op;

/* y has dims[rank] (contiguous); a and b are read at sum(coord[i] * stride[i])
 * (stride 0 on broadcast axes). b unused for DS_K_GATHER. */
typedef struct ds_k_strided {
    int32_t rank;
    int64_t dims[DS_K_MAX_RANK];
    int64_t a_stride[DS_K_MAX_RANK];
    int64_t b_stride[DS_K_MAX_RANK];
} ds_k_strided;

int ds_k_unary(cudaStream_t stream, int op, const float *x, float *y, int64_t n, float p0, float p1);
/* y[n][c][hw] = clamp(y + bias[c], lo, hi) in place; bias may be NULL. */
int ds_k_bias_act(cudaStream_t stream, float *y, const float *bias, int64_t n, int64_t c,
                  int64_t hw, float lo, float hi);
int ds_k_binary(cudaStream_t stream, int op, const float *a, const float *b, float *y,
                const ds_k_strided *shape);

typedef struct ds_k_pool {
    int64_t n, c, h, w, oh, ow;
    int32_t kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
    int32_t is_max, count_include_pad;
} ds_k_pool;
int ds_k_pool2d(cudaStream_t stream, const float *x, float *y, const ds_k_pool *p);
/* y[nc] = mean or max of x[nc][hw] */
int ds_k_global_pool(cudaStream_t stream, int is_max, const float *x, float *y, int64_t nc,
                     int64_t hw);
/* softmax over `len` elements spaced `inner` apart, outer * inner rows */
int ds_k_softmax(cudaStream_t stream, const float *x, float *y, int64_t outer, int64_t len,
                 int64_t inner);
int ds_k_lrn(cudaStream_t stream, const float *x, float *y, int64_t n, int64_t c, int64_t hw,
             int32_t size, float alpha, float beta, float bias);
int ds_k_batchnorm(cudaStream_t stream, const float *x, float *y, const float *scale,
                   const float *bias, const float *mean, const float *var, float eps, int64_t n,
                   int64_t c, int64_t hw);

typedef struct ds_k_conv {
    int64_t n, c, h, w, k, oh, ow;
    int32_t kh, kw, sh, sw, pt, pl, dh, dw, group;
    float lo, hi; /* clamp after bias */
} ds_k_conv;
/* Direct convolution (asymmetric pads); bias may be NULL. */
int ds_k_conv2d(cudaStream_t stream, const float *x, const float *w, const float *bias, float *y,
                const ds_k_conv *p);

#ifdef __cplusplus
}
#endif

#endif
