/* probe_env.c - first call on the GPU machine: does the runtime see the GPU,
 * do the green-context driver entry points resolve, what is the SM
 * granularity, do cuDNN and cuBLAS load and run on a green-context stream.
 * Standalone (no libdstack): cc probe_env.c -lcudnn -lcublas -lcudart */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>

#define GETP(name, ver) \
    PFN_##name##_v##ver p_##name = NULL; \
    { enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound; \
      cudaError_t e = cudaGetDriverEntryPointByVersion(#name, (void **)&p_##name, ver, cudaEnableDefault, &q); \
      printf("entry %-28s v%d: err=%d q=%d %p\n", #name, ver, (int)e, (int)q, (void *)p_##name); }

int main(void) {
    int n = -1;
    cudaError_t e = cudaGetDeviceCount(&n);
    printf("cudaGetDeviceCount: %d (%s) n=%d\n", (int)e, cudaGetErrorString(e), n);
    if (e != cudaSuccess || n < 1) return 1;
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv); cudaRuntimeGetVersion(&rt);
    printf("driver %d runtime %d cudnn %zu cublas-ok\n", drv, rt, cudnnGetVersion());
    cudaSetDevice(0); cudaFree(0);
    struct cudaDeviceProp prop; cudaGetDeviceProperties(&prop, 0);
    printf("device %s cc %d.%d sms %d\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
    GETP(cuDeviceGetDevResource, 12040);
    GETP(cuDevSmResourceSplitByCount, 12040);
    GETP(cuDevResourceGenerateDesc, 12040);
    GETP(cuGreenCtxCreate, 12040);
    GETP(cuGreenCtxDestroy, 12040);
    GETP(cuGreenCtxGetDevResource, 12040);
    GETP(cuGreenCtxStreamCreate, 12050);
    GETP(cuStreamDestroy, 4000);
    GETP(cuDeviceGet, 2000);
    if (!p_cuDeviceGetDevResource || !p_cuGreenCtxStreamCreate) return 2;
    CUdevice dev; CUresult r = p_cuDeviceGet(&dev, 0);
    CUdevResource res; r = p_cuDeviceGetDevResource(dev, &res, CU_DEV_RESOURCE_TYPE_SM);
    printf("devres r=%d sm=%u min=%u align=%u\n", r, res.sm.smCount, res.sm.minSmPartitionSize, res.sm.smCoscheduledAlignment);
    unsigned ng = 64; CUdevResource groups[64], rem;
    r = p_cuDevSmResourceSplitByCount(groups, &ng, &res, &rem, 0, res.sm.minSmPartitionSize);
    printf("split r=%d groups=%u g0=%u rem=%u\n", r, ng, groups[0].sm.smCount, rem.sm.smCount);
    unsigned counts[] = {1, 2, 4, 8, ng};
    for (int i = 0; i < 5; i++) {
        CUdevResourceDesc d; r = p_cuDevResourceGenerateDesc(&d, &groups[0], counts[i]);
        CUgreenCtx g; CUresult r2 = p_cuGreenCtxCreate(&g, d, dev, CU_GREEN_CTX_DEFAULT_STREAM);
        CUstream s = NULL; CUresult r3 = p_cuGreenCtxStreamCreate(&s, g, CU_STREAM_NON_BLOCKING, 0);
        CUdevResource back; CUresult r4 = p_cuGreenCtxGetDevResource(g, &back, CU_DEV_RESOURCE_TYPE_SM);
        /* cublas sgemm on the green stream with primary-ctx memory */
        cublasHandle_t h; cublasCreate(&h); cublasSetStream(h, (cudaStream_t)s);
        cublasStatus_t cs = cublasSetSmCountTarget(h, (int)back.sm.smCount);
        float *a; cudaMalloc((void **)&a, 3 * 512 * 512 * 4); cudaMemsetAsync(a, 0, 3*512*512*4, (cudaStream_t)s);
        float al = 1, be = 0;
        cublasStatus_t cs2 = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 512, 512, 512, &al, a, 512, a + 512*512, 512, &be, a + 2*512*512, 512);
        cudnnHandle_t dn; cudnnStatus_t ds = cudnnCreate(&dn); cudnnSetStream(dn, (cudaStream_t)s);
        cudaError_t se = cudaStreamSynchronize((cudaStream_t)s);
        printf("units %u: desc=%d gctx=%d stream=%d back=%d sms=%u smtarget=%d sgemm=%d cudnn=%d sync=%d\n",
               counts[i], r, r2, r3, r4, back.sm.smCount, cs, cs2, ds, se);
        cudnnDestroy(dn); cublasDestroy(h); cudaFree(a);
        p_cuStreamDestroy(s); p_cuGreenCtxDestroy(g);
    }
    return 0;
}
