// kernels.cu - the cuda backend's own kernels. See kernels.h.
#include "exec/cuda/kernels.h"

#include <math.h>

namespace {

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    if (b > 1048576) b = 1048576; // grid-stride loops cover the rest
    return (unsigned)(b > 0 ? b : 1);
}

inline int launched() { return (int)cudaGetLastError(); }

__device__ __forceinline__ float clampf(float v, float lo, float hi) {
    return fminf(fmaxf(v, lo), hi);
}

__global__ void unary_kernel(int op, const float *__restrict__ x, float *__restrict__ y, int64_t n,
                             float p0, float p1) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i], r;
        switch (op) {
        case DS_K_CLAMP: r = clampf(v, p0, p1); break;
        case DS_K_LEAKY: r = v >= 0.0f ? v : p0 * v; break;
        case DS_K_SIGMOID: r = 1.0f / (1.0f + expf(-v)); break;
        case DS_K_TANH: r = tanhf(v); break;
        case DS_K_HARD_SIGMOID: r = fmaxf(0.0f, fminf(1.0f, p0 * v + p1)); break;
        default: r = v * fmaxf(0.0f, fminf(1.0f, v / 6.0f + 0.5f)); break;
        }
        y[i] = r;
    }
}

// One block row per (n, c) plane: no per-element division.
__global__ void bias_act_kernel(float *y, const float *__restrict__ bias, int64_t c, int64_t hw,
                                float lo, float hi) {
    int64_t plane = blockIdx.x;
    float b = bias ? bias[plane % c] : 0.0f;
    float *yp = y + plane * hw;
    for (int64_t i = blockIdx.y * (int64_t)blockDim.x + threadIdx.x; i < hw;
         i += (int64_t)gridDim.y * blockDim.x)
        yp[i] = clampf(yp[i] + b, lo, hi);
}

__global__ void binary_kernel(int op, const float *a, const float *b, float *y, ds_k_strided s,
                              int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t rem = i, ia = 0, ib = 0;
        for (int d = s.rank - 1; d >= 0; d--) {
            int64_t coord = rem % s.dims[d];
            rem /= s.dims[d];
            ia += coord * s.a_stride[d];
            ib += coord * s.b_stride[d];
        }
        float va = a[ia], r;
        switch (op) {
        case DS_K_ADD: r = va + b[ib]; break;
        case DS_K_MUL: r = va * b[ib]; break;
        case DS_K_PRELU: r = va < 0.0f ? b[ib] * va : va; break;
        default: r = va; break;
        }
        y[i] = r;
    }
}

__global__ void binary_flat_kernel(int op, const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float va = a[i], r;
        switch (op) {
        case DS_K_ADD: r = va + b[i]; break;
        case DS_K_MUL: r = va * b[i]; break;
        case DS_K_PRELU: r = va < 0.0f ? b[i] * va : va; break;
        default: r = va; break;
        }
        y[i] = r;
    }
}

__global__ void pool2d_kernel(const float *__restrict__ x, float *__restrict__ y, ds_k_pool p,
                              int64_t total) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t ow = i % p.ow, oh = (i / p.ow) % p.oh, nc = i / (p.ow * p.oh);
        const float *xp = x + nc * p.h * p.w;
        int64_t h0 = oh * p.sh - p.pt, w0 = ow * p.sw - p.pl;
        float acc = p.is_max ? -INFINITY : 0.0f;
        int64_t valid = 0, padded = 0;
        for (int kh = 0; kh < p.kh; kh++) {
            int64_t hh = h0 + (int64_t)kh * p.dh;
            bool h_in = hh >= 0 && hh < p.h;
            bool h_pad = hh >= -p.pt && hh < p.h + p.pb;
            for (int kw = 0; kw < p.kw; kw++) {
                int64_t ww = w0 + (int64_t)kw * p.dw;
                bool w_in = ww >= 0 && ww < p.w;
                if (h_pad && ww >= -p.pl && ww < p.w + p.pr) padded++;
                if (!(h_in && w_in)) continue;
                float v = xp[hh * p.w + ww];
                valid++;
                if (p.is_max) acc = fmaxf(acc, v);
                else acc += v;
            }
        }
        if (!p.is_max) {
            int64_t div = p.count_include_pad ? padded : valid;
            acc = div > 0 ? acc / (float)div : 0.0f;
        }
        y[i] = acc;
    }
}

__device__ float block_reduce(float v, bool is_max, float *shared) {
    for (int o = 16; o > 0; o >>= 1) {
        float other = __shfl_down_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, other) : v + other;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    if (warp == 0) {
        v = lane < nw ? shared[lane] : (is_max ? -INFINITY : 0.0f);
        for (int o = 16; o > 0; o >>= 1) {
            float other = __shfl_down_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, other) : v + other;
        }
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    float r = shared[0];
    __syncthreads();
    return r;
}

__global__ void global_pool_kernel(int is_max, const float *__restrict__ x, float *__restrict__ y,
                                   int64_t hw) {
    __shared__ float sh[32];
    const float *xp = x + blockIdx.x * hw;
    float acc = is_max ? -INFINITY : 0.0f;
    for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) acc = is_max ? fmaxf(acc, xp[i]) : acc + xp[i];
    acc = block_reduce(acc, is_max != 0, sh);
    if (threadIdx.x == 0) y[blockIdx.x] = is_max ? acc : acc / (float)hw;
}

__global__ void softmax_kernel(const float *__restrict__ x, float *__restrict__ y, int64_t len,
                               int64_t inner) {
    __shared__ float sh[32];
    int64_t row = blockIdx.x;
    int64_t base = (row / inner) * len * inner + row % inner;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) m = fmaxf(m, x[base + i * inner]);
    m = block_reduce(m, true, sh);
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) s += expf(x[base + i * inner] - m);
    s = block_reduce(s, false, sh);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
        y[base + i * inner] = expf(x[base + i * inner] - m) / s;
}

__global__ void lrn_kernel(const float *__restrict__ x, float *__restrict__ y, int64_t total,
                           int64_t c, int64_t hw, int size, float alpha, float beta, float bias) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = i % hw, ch = (i / hw) % c, n = i / (hw * c);
        int64_t lo = ch - (size - 1) / 2, hi = ch + size / 2; // ceil((size-1)/2) = size/2
        if (lo < 0) lo = 0;
        if (hi > c - 1) hi = c - 1;
        float sq = 0.0f;
        for (int64_t j = lo; j <= hi; j++) {
            float v = x[(n * c + j) * hw + p];
            sq += v * v;
        }
        y[i] = x[i] / powf(bias + alpha / (float)size * sq, beta);
    }
}

__global__ void batchnorm_kernel(const float *__restrict__ x, float *__restrict__ y,
                                 const float *scale, const float *bias, const float *mean,
                                 const float *var, float eps, int64_t total, int64_t c, int64_t hw) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t ch = (i / hw) % c;
        y[i] = (x[i] - mean[ch]) / sqrtf(var[ch] + eps) * scale[ch] + bias[ch];
    }
}

// Direct convolution, one thread per output; I is int when every index fits.
template <typename I>
__global__ void conv2d_kernel(const float *__restrict__ x, const float *__restrict__ w,
                              const float *__restrict__ bias, float *__restrict__ y, ds_k_conv p,
                              I total) {
    const I OW = (I)p.ow, OH = (I)p.oh, K = (I)p.k, H = (I)p.h, W = (I)p.w, C = (I)p.c;
    const I cg = C / (I)p.group, kg = K / (I)p.group;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
        I ow = i % OW, t = i / OW;
        I oh = t % OH;
        t /= OH;
        I k = t % K, n = t / K;
        I g = k / kg;
        float acc = 0.0f;
        for (I ci = 0; ci < cg; ci++) {
            const float *xp = x + (n * C + g * cg + ci) * H * W;
            const float *wp = w + (k * cg + ci) * p.kh * p.kw;
            for (int kh = 0; kh < p.kh; kh++) {
                I hh = oh * p.sh - p.pt + (I)kh * p.dh;
                if (hh < 0 || hh >= H) continue;
                for (int kw = 0; kw < p.kw; kw++) {
                    I ww = ow * p.sw - p.pl + (I)kw * p.dw;
                    if (ww < 0 || ww >= W) continue;
                    acc += __ldg(&xp[hh * W + ww]) * __ldg(&wp[kh * p.kw + kw]);
                }
            }
        }
        if (bias) acc += __ldg(&bias[k]);
        y[i] = clampf(acc, p.lo, p.hi);
    }
}

} // namespace

extern "C" {

int ds_k_unary(cudaStream_t stream, int op, const float *x, float *y, int64_t n, float p0, float p1) {
    if (n <= 0) return 0;
    unary_kernel<<<grid_for(n), kThreads, 0, stream>>>(op, x, y, n, p0, p1);
    return launched();
}

int ds_k_bias_act(cudaStream_t stream, float *y, const float *bias, int64_t n, int64_t c,
                  int64_t hw, float lo, float hi) {
    int64_t planes = n * c;
    if (planes <= 0 || hw <= 0) return 0;
    int threads = hw >= 256 ? 256 : (int)((hw + 31) / 32) * 32;
    int64_t by = (hw + threads - 1) / threads;
    dim3 grid((unsigned)planes, (unsigned)(by > 65535 ? 65535 : by));
    bias_act_kernel<<<grid, threads, 0, stream>>>(y, bias, c, hw, lo, hi);
    return launched();
}

int ds_k_binary(cudaStream_t stream, int op, const float *a, const float *b, float *y,
                const ds_k_strided *shape) {
    int64_t n = 1;
    for (int i = 0; i < shape->rank; i++) n *= shape->dims[i];
    if (n <= 0) return 0;
    /* both operands laid out like y: no index arithmetic */
    bool flat = true;
    int64_t st = 1;
    for (int i = shape->rank - 1; i >= 0 && flat; i--) {
        if (shape->dims[i] != 1 &&
            (shape->a_stride[i] != st || (op != DS_K_GATHER && shape->b_stride[i] != st)))
            flat = false;
        st *= shape->dims[i];
    }
    if (flat)
        binary_flat_kernel<<<grid_for(n), kThreads, 0, stream>>>(op, a, b ? b : a, y, n);
    else
        binary_kernel<<<grid_for(n), kThreads, 0, stream>>>(op, a, b ? b : a, y, *shape, n);
    return launched();
}

int ds_k_pool2d(cudaStream_t stream, const float *x, float *y, const ds_k_pool *p) {
    int64_t total = p->n * p->c * p->oh * p->ow;
    if (total <= 0) return 0;
    pool2d_kernel<<<grid_for(total), kThreads, 0, stream>>>(x, y, *p, total);
    return launched();
}

int ds_k_global_pool(cudaStream_t stream, int is_max, const float *x, float *y, int64_t nc,
                     int64_t hw) {
    if (nc <= 0) return 0;
    int threads = hw >= 256 ? 256 : (hw > 32 ? 64 : 32);
    global_pool_kernel<<<(unsigned)nc, threads, 0, stream>>>(is_max, x, y, hw);
    return launched();
}

int ds_k_softmax(cudaStream_t stream, const float *x, float *y, int64_t outer, int64_t len,
                 int64_t inner) {
    if (outer * inner <= 0 || len <= 0) return 0;
    int threads = len >= 256 ? 256 : (len > 32 ? 64 : 32);
    softmax_kernel<<<(unsigned)(outer * inner), threads, 0, stream>>>(x, y, len, inner);
    return launched();
}

int ds_k_lrn(cudaStream_t stream, const float *x, float *y, int64_t n, int64_t c, int64_t hw,
             int32_t size, float alpha, float beta, float bias) {
    int64_t total = n * c * hw;
    if (total <= 0) return 0;
    lrn_kernel<<<grid_for(total), kThreads, 0, stream>>>(x, y, total, c, hw, size, alpha, beta, bias);
    return launched();
}

int ds_k_batchnorm(cudaStream_t stream, const float *x, float *y, const float *scale,
                   const float *bias, const float *mean, const float *var, float eps, int64_t n,
                   int64_t c, int64_t hw) {
    int64_t total = n * c * hw;
    if (total <= 0) return 0;
    batchnorm_kernel<<<grid_for(total), kThreads, 0, stream>>>(x, y, scale, bias, mean, var, eps,
                                                               total, c, hw);
    return launched();
}

int ds_k_conv2d(cudaStream_t stream, const float *x, const float *w, const float *bias, float *y,
                const ds_k_conv *p) {
    int64_t total = p->n * p->k * p->oh * p->ow;
    if (total <= 0) return 0;
    int64_t in_total = p->n * p->c * p->h * p->w;
    if (total < INT32_MAX / 2 && in_total < INT32_MAX / 2)
        conv2d_kernel<int><<<grid_for(total), kThreads, 0, stream>>>(x, w, bias, y, *p, (int)total);
    else
        conv2d_kernel<int64_t><<<grid_for(total), kThreads, 0, stream>>>(x, w, bias, y, *p, total);
    return launched();
}

} // extern "C"
