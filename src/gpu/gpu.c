/* gpu.c - device open, driver entry points, partitions. See gpu.h. */
#include "gpu/gpu.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/partition_math.h"
#include "util/error.h"

#define DS_GPU_CUBLAS_WORKSPACE (8u << 20)
#define DS_GPU_MAX_UNITS 256u

typedef struct ds_green_api {
    PFN_cuDeviceGet_v2000 device_get;
    PFN_cuDeviceGetDevResource_v12040 device_get_dev_resource;
    PFN_cuDevSmResourceSplitByCount_v12040 split_by_count;
    PFN_cuDevResourceGenerateDesc_v12040 generate_desc;
    PFN_cuGreenCtxCreate_v12040 green_create;
    PFN_cuGreenCtxDestroy_v12040 green_destroy;
    PFN_cuGreenCtxGetDevResource_v12040 green_get_dev_resource;
    PFN_cuGreenCtxStreamCreate_v12050 green_stream_create;
    PFN_cuStreamDestroy_v4000 stream_destroy;
} ds_green_api;

struct ds_gpu {
    ds_gpu_info info;
    ds_green_api api;
    CUdevice cu_device;
    CUdevResource units[DS_GPU_MAX_UNITS]; /* GREEN_CTX: the split, once */
    CUdevResource rem;                     /* the split's remainder (info.leftover_sms) */
    ds_range_cache cache;                  /* ds_gpu_part * per range */
    pthread_mutex_t lock;                  /* guards cache */
};

dstack_status ds_gpu_cuda_fail(cudaError_t e, const char *what) {
    return ds_fail(DSTACK_ERR_DEVICE, "%s failed: %s (%d)", what, cudaGetErrorString(e), (int)e);
}

dstack_status ds_gpu_cudnn_fail(cudnnStatus_t s, const char *what) {
    return ds_fail(DSTACK_ERR_DEVICE, "%s failed: %s (%d)", what, cudnnGetErrorString(s), (int)s);
}

dstack_status ds_gpu_cublas_fail(cublasStatus_t s, const char *what) {
    return ds_fail(DSTACK_ERR_DEVICE, "%s failed: %s (%d)", what, cublasGetStatusString(s), (int)s);
}

static int get_entry(const char *sym, unsigned version, void **fn) {
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    *fn = NULL;
    cudaError_t e = cudaGetDriverEntryPointByVersion(sym, fn, version, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !*fn) {
        *fn = NULL;
        return 0;
    }
    return 1;
}

static int load_green_api(ds_green_api *a) {
    int ok = 1;
    ok &= get_entry("cuDeviceGet", 2000, (void **)&a->device_get);
    ok &= get_entry("cuDeviceGetDevResource", 12040, (void **)&a->device_get_dev_resource);
    ok &= get_entry("cuDevSmResourceSplitByCount", 12040, (void **)&a->split_by_count);
    ok &= get_entry("cuDevResourceGenerateDesc", 12040, (void **)&a->generate_desc);
    ok &= get_entry("cuGreenCtxCreate", 12040, (void **)&a->green_create);
    ok &= get_entry("cuGreenCtxDestroy", 12040, (void **)&a->green_destroy);
    ok &= get_entry("cuGreenCtxGetDevResource", 12040, (void **)&a->green_get_dev_resource);
    ok &= get_entry("cuGreenCtxStreamCreate", 12050, (void **)&a->green_stream_create);
    ok &= get_entry("cuStreamDestroy", 4000, (void **)&a->stream_destroy);
    return ok;
}

/* A green context of the SM resources res[0..n) (one split's). */
static CUresult green_of(ds_gpu *g, CUdevResource *res, unsigned n, CUgreenCtx *gc) {
    CUdevResourceDesc desc;
    CUresult r = g->api.generate_desc(&desc, res, n);
    return r == CUDA_SUCCESS ? g->api.green_create(gc, desc, g->cu_device, CU_GREEN_CTX_DEFAULT_STREAM) : r;
}

/* May the remainder of the split join the last unit's ranges? The driver
 * takes resources of one split (results and remainder) in one descriptor
 * (cuDevResourceGenerateDesc, CUDA 12.4+); whether a green context made of
 * it really holds them is asked once here: made, read back (the last
 * unit's SMs and the remainder's) and destroyed. Where anything says no,
 * only the range of every unit (the whole device) has them. */
static int tail_takes_remainder(ds_gpu *g) {
    unsigned n = g->info.n_units;
    CUdevResource tail[2] = {g->units[n - 1], g->rem};
    CUgreenCtx gc = NULL;
    if (green_of(g, tail, 2, &gc) != CUDA_SUCCESS) return 0;
    CUdevResource back;
    memset(&back, 0, sizeof back);
    int ok = g->api.green_get_dev_resource(gc, &back, CU_DEV_RESOURCE_TYPE_SM) == CUDA_SUCCESS &&
             back.sm.smCount > g->units[n - 1].sm.smCount;
    g->api.green_destroy(gc);
    return ok;
}

/* Split the SM resource into units of the minimum size. 0 on failure. */
static int split_units(ds_gpu *g) {
    CUdevResource res;
    memset(&res, 0, sizeof res);
    if (g->api.device_get(&g->cu_device, g->info.device) != CUDA_SUCCESS) return 0;
    if (g->api.device_get_dev_resource(g->cu_device, &res, CU_DEV_RESOURCE_TYPE_SM) != CUDA_SUCCESS)
        return 0;
    unsigned min_sms = res.sm.minSmPartitionSize ? res.sm.minSmPartitionSize : 1;
    unsigned n = DS_GPU_MAX_UNITS;
    CUdevResource rem;
    memset(&rem, 0, sizeof rem);
    if (g->api.split_by_count(g->units, &n, &res, &rem, 0, min_sms) != CUDA_SUCCESS || n == 0)
        return 0;
    g->info.unit_sms = g->units[0].sm.smCount;
    g->info.n_units = n;
    g->info.leftover_sms = rem.sm.smCount;
    g->rem = rem;
    g->info.tail_leftover = n > 1 && rem.sm.smCount > 0 && tail_takes_remainder(g);
    return 1;
}

static dstack_status open_device(ds_gpu *g, int device) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return ds_fail(DSTACK_ERR_NO_DEVICE, "no usable CUDA device: cudaGetDeviceCount: %s (%d)",
                       cudaGetErrorString(e), (int)e);
    }
    if (count <= 0) return ds_fail(DSTACK_ERR_NO_DEVICE, "no CUDA device found");
    if (device < 0 || device >= count)
        return ds_fail(DSTACK_ERR_NO_DEVICE, "CUDA device %d requested, %d present", device, count);
    if ((e = cudaSetDevice(device)) != cudaSuccess) return ds_gpu_cuda_fail(e, "cudaSetDevice");
    if ((e = cudaFree(0)) != cudaSuccess) return ds_gpu_cuda_fail(e, "cudaFree(0) (context init)");
    struct cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, device)) != cudaSuccess)
        return ds_gpu_cuda_fail(e, "cudaGetDeviceProperties");
    memcpy(g->info.name, p.name, sizeof g->info.name - 1);
    g->info.name[sizeof g->info.name - 1] = '\0';
    g->info.device = device;
    g->info.cc_major = p.major;
    g->info.cc_minor = p.minor;
    g->info.sm_count = (uint32_t)p.multiProcessorCount;
    return DSTACK_OK;
}

dstack_status ds_gpu_open(int device, dstack_partitioning mode, ds_gpu **out) {
    *out = NULL;
    ds_gpu *g = calloc(1, sizeof *g);
    if (!g) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "gpu device state");
    dstack_status st = open_device(g, device);
    if (st != DSTACK_OK) {
        free(g);
        return st;
    }
    dstack_partitioning use = mode;
    if (mode == DSTACK_PARTITION_AUTO || mode == DSTACK_PARTITION_GREEN_CTX) {
        int ok = load_green_api(&g->api) && split_units(g);
        if (!ok && mode == DSTACK_PARTITION_GREEN_CTX) {
            free(g);
            return ds_fail(DSTACK_ERR_UNSUPPORTED,
                           "green contexts unavailable: the driver lacks the 12.4/12.5 entry "
                           "points or cuDevSmResourceSplitByCount failed");
        }
        use = ok ? DSTACK_PARTITION_GREEN_CTX : DSTACK_PARTITION_NONE;
    }
    if (use == DSTACK_PARTITION_NONE || use == DSTACK_PARTITION_MPS) {
        uint32_t sms = g->info.sm_count;
        if (use == DSTACK_PARTITION_MPS)
            sms = ds_gpu_mps_sms(sms, getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"));
        g->info.unit_sms = sms;
        g->info.n_units = 1;
        g->info.leftover_sms = g->info.sm_count - sms;
    }
    g->info.partitioning = use;
    if ((st = ds_range_cache_init(&g->cache, g->info.n_units)) != DSTACK_OK) {
        free(g);
        return st;
    }
    pthread_mutex_init(&g->lock, NULL);
    *out = g;
    return DSTACK_OK;
}

const ds_gpu_info *ds_gpu_get_info(const ds_gpu *gpu) { return &gpu->info; }

dstack_status ds_gpu_bind_thread(const ds_gpu *gpu) {
    cudaError_t e = cudaSetDevice(gpu->info.device);
    return e == cudaSuccess ? DSTACK_OK : ds_gpu_cuda_fail(e, "cudaSetDevice");
}

static void part_free(void *ud, void *obj) {
    ds_gpu *g = ud;
    ds_gpu_part *p = obj;
    if (p->stream) cudaStreamSynchronize(p->stream);
    if (p->cudnn) cudnnDestroy(p->cudnn);
    if (p->cublas) cublasDestroy(p->cublas);
    if (p->cublas_workspace) cudaFree(p->cublas_workspace);
    if (p->stream) {
        if (p->green_ctx) g->api.stream_destroy((CUstream)p->stream);
        else cudaStreamDestroy(p->stream);
    }
    if (p->green_ctx) g->api.green_destroy((CUgreenCtx)p->green_ctx);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static dstack_status part_make_stream(ds_gpu *g, ds_gpu_part *p) {
    bool green = g->info.partitioning == DSTACK_PARTITION_GREEN_CTX;
    if (!green || (p->first_unit == 0 && p->unit_count == g->info.n_units)) {
        /* An ordinary stream: the process's one unit without green
         * contexts; with them, every unit is the whole device, so a batch
         * that holds every unit also gets the SMs no unit holds (12 on a
         * 132-SM Hopper; util/units.h). Nothing else runs meanwhile: the
         * scheduler gives no unit to anyone else. */
        p->sm_count = green ? g->info.sm_count : g->info.unit_sms;
        cudaError_t e = cudaStreamCreateWithFlags(&p->stream, cudaStreamNonBlocking);
        return e == cudaSuccess ? DSTACK_OK : ds_gpu_cuda_fail(e, "cudaStreamCreateWithFlags");
    }
    /* the range's units; the remainder too when the range ends at the last
     * unit and the driver takes it there (util/units.h) */
    CUdevResource res[DS_GPU_MAX_UNITS + 1];
    unsigned n_res = p->unit_count;
    memcpy(res, &g->units[p->first_unit], n_res * sizeof res[0]);
    if (g->info.tail_leftover && p->first_unit + p->unit_count == g->info.n_units) res[n_res++] = g->rem;
    CUgreenCtx gc = NULL;
    CUresult r = green_of(g, res, n_res, &gc);
    /* the remainder was taken at open but not for this range: the units
     * alone (the SMs read back below say what it holds) */
    if (r != CUDA_SUCCESS && n_res > p->unit_count) r = green_of(g, res, p->unit_count, &gc);
    if (r != CUDA_SUCCESS)
        return ds_fail(DSTACK_ERR_DEVICE, "green context for units %u+%u failed: %d", p->first_unit,
                       p->unit_count, (int)r);
    p->green_ctx = gc;
    CUstream s = NULL;
    r = g->api.green_stream_create(&s, gc, CU_STREAM_NON_BLOCKING, 0);
    if (r != CUDA_SUCCESS)
        return ds_fail(DSTACK_ERR_DEVICE, "cuGreenCtxStreamCreate failed: %d", (int)r);
    p->stream = (cudaStream_t)s;
    CUdevResource back;
    memset(&back, 0, sizeof back);
    r = g->api.green_get_dev_resource(gc, &back, CU_DEV_RESOURCE_TYPE_SM);
    if (r != CUDA_SUCCESS)
        return ds_fail(DSTACK_ERR_DEVICE, "cuGreenCtxGetDevResource failed: %d", (int)r);
    p->sm_count = back.sm.smCount;
    return DSTACK_OK;
}

static dstack_status part_create(ds_gpu *g, uint32_t first, uint32_t count, ds_gpu_part **out) {
    ds_gpu_part *p = calloc(1, sizeof *p);
    if (!p) return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "partition state");
    p->first_unit = first;
    p->unit_count = count;
    pthread_mutex_init(&p->lock, NULL);
    dstack_status st = part_make_stream(g, p);
    cudnnStatus_t ds;
    cublasStatus_t bs;
    cudaError_t e;
    if (st != DSTACK_OK) goto fail;
    if ((ds = cudnnCreate(&p->cudnn)) != CUDNN_STATUS_SUCCESS) {
        st = ds_gpu_cudnn_fail(ds, "cudnnCreate");
        goto fail;
    }
    if ((ds = cudnnSetStream(p->cudnn, p->stream)) != CUDNN_STATUS_SUCCESS) {
        st = ds_gpu_cudnn_fail(ds, "cudnnSetStream");
        goto fail;
    }
    if ((bs = cublasCreate(&p->cublas)) != CUBLAS_STATUS_SUCCESS) {
        st = ds_gpu_cublas_fail(bs, "cublasCreate");
        goto fail;
    }
    if ((bs = cublasSetStream(p->cublas, p->stream)) != CUBLAS_STATUS_SUCCESS) {
        st = ds_gpu_cublas_fail(bs, "cublasSetStream");
        goto fail;
    }
    /* cuBLAS would otherwise cudaMalloc its workspace on first use (hot path). */
    if ((e = cudaMalloc(&p->cublas_workspace, DS_GPU_CUBLAS_WORKSPACE)) != cudaSuccess) {
        st = ds_gpu_cuda_fail(e, "cudaMalloc(cublas workspace)");
        goto fail;
    }
    if ((bs = cublasSetWorkspace(p->cublas, p->cublas_workspace, DS_GPU_CUBLAS_WORKSPACE)) !=
        CUBLAS_STATUS_SUCCESS) {
        st = ds_gpu_cublas_fail(bs, "cublasSetWorkspace");
        goto fail;
    }
    if (g->info.partitioning != DSTACK_PARTITION_NONE &&
        (bs = cublasSetSmCountTarget(p->cublas, (int)p->sm_count)) != CUBLAS_STATUS_SUCCESS) {
        st = ds_gpu_cublas_fail(bs, "cublasSetSmCountTarget");
        goto fail;
    }
    *out = p;
    return DSTACK_OK;
fail:
    part_free(g, p);
    return st;
}

dstack_status ds_gpu_partition(ds_gpu *g, uint32_t first_unit, uint32_t unit_count,
                               ds_gpu_part **out) {
    *out = NULL;
    dstack_status st = ds_gpu_range_check(g->info.n_units, first_unit, unit_count);
    if (st != DSTACK_OK) return st;
    pthread_mutex_lock(&g->lock);
    ds_gpu_part *p = ds_range_cache_get(&g->cache, first_unit, unit_count);
    if (!p) {
        st = ds_gpu_bind_thread(g);
        if (st == DSTACK_OK) st = part_create(g, first_unit, unit_count, &p);
        if (st == DSTACK_OK) st = ds_range_cache_put(&g->cache, first_unit, unit_count, p);
    }
    pthread_mutex_unlock(&g->lock);
    if (st == DSTACK_OK) *out = p;
    return st;
}

void ds_gpu_close(ds_gpu *g) {
    if (!g) return;
    cudaSetDevice(g->info.device);
    cudaDeviceSynchronize();
    ds_range_cache_destroy(&g->cache, part_free, g);
    pthread_mutex_destroy(&g->lock);
    free(g);
}
