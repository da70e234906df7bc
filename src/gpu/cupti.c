/* cupti.c - see cupti.h. */
#include "gpu/cupti.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cupti_activity.h>
#include <cupti_version.h>

#include "util/error.h"

#define CUPTI_BUFFER_BYTES (4u << 20)
/* CUpti_ActivityKernel9 arrived with CUDA 12.0; every layout since keeps the
 * prefix read below (checked against the 13.0 header's Kernel9 and 10). */
#define CUPTI_MIN_API_VERSION 19u

typedef CUptiResult (*fn_register)(CUpti_BuffersCallbackRequestFunc, CUpti_BuffersCallbackCompleteFunc);
typedef CUptiResult (*fn_kind)(CUpti_ActivityKind);
typedef CUptiResult (*fn_flush)(uint32_t);
typedef CUptiResult (*fn_next)(uint8_t *, size_t, CUpti_Activity **);
typedef CUptiResult (*fn_version)(uint32_t *);
typedef CUptiResult (*fn_result_string)(CUptiResult, const char **);

static struct {
    pthread_once_t once;
    void *lib;
    char why[256]; /* set when the library is unusable */
    fn_register reg;
    fn_kind enable, disable;
    fn_flush flush;
    fn_next next;
    fn_result_string result_string;
    uint32_t api_version;
    bool callbacks_registered;
} cupti = {.once = PTHREAD_ONCE_INIT};

/* The trace lock (one trace at a time) and what the buffer callbacks collect. */
static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t collect_lock = PTHREAD_MUTEX_INITIALIZER;
static ds_kernel_record *collected;
static size_t n_collected, cap_collected;
static bool collect_failed;
static size_t n_incomplete; /* records without a valid start and end */

static void *sym(const char *name)
{
    void *p = dlsym(cupti.lib, name);
    if (!p && !cupti.why[0])
        snprintf(cupti.why, sizeof cupti.why, "libcupti has no %s", name);
    return p;
}

static void load_cupti(void)
{
    const char *env = getenv("DSTACK_CUPTI_LIBRARY");
    const char *names[] = {env, "libcupti.so.13", "libcupti.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !cupti.lib; i++)
        if (names[i] && names[i][0])
            cupti.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!cupti.lib) {
        const char *e = dlerror();
        snprintf(cupti.why, sizeof cupti.why, "CUPTI not found (libcupti.so.13 or libcupti.so on the library path%s): %s",
                 env ? ", or DSTACK_CUPTI_LIBRARY" : "", e ? e : "dlopen failed");
        return;
    }
    cupti.reg = (fn_register)sym("cuptiActivityRegisterCallbacks");
    cupti.enable = (fn_kind)sym("cuptiActivityEnable");
    cupti.disable = (fn_kind)sym("cuptiActivityDisable");
    cupti.flush = (fn_flush)sym("cuptiActivityFlushAll");
    cupti.next = (fn_next)sym("cuptiActivityGetNextRecord");
    cupti.result_string = (fn_result_string)sym("cuptiGetResultString");
    fn_version version = (fn_version)sym("cuptiGetVersion");
    if (cupti.why[0])
        return;
    if (version(&cupti.api_version) != CUPTI_SUCCESS || cupti.api_version < CUPTI_MIN_API_VERSION)
        snprintf(cupti.why, sizeof cupti.why, "CUPTI API version %u is older than %u (CUDA 12.0)", cupti.api_version,
                 CUPTI_MIN_API_VERSION);
}

static dstack_status cupti_fail(CUptiResult r, const char *what)
{
    const char *s = NULL;
    if (cupti.result_string)
        cupti.result_string(r, &s);
    return ds_fail(DSTACK_ERR_DEVICE, "%s: CUPTI error %d (%s)", what, (int)r, s ? s : "no message");
}

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    void *p = NULL;
    if (posix_memalign(&p, 8, CUPTI_BUFFER_BYTES) != 0)
        p = NULL;
    *buffer = p;
    *size = p ? CUPTI_BUFFER_BYTES : 0;
    *max_records = 0; /* as many as fit */
}

static void keep(const CUpti_ActivityKernel9 *k)
{
    if (k->start == 0 || k->end <= k->start) {
        n_incomplete++; /* not finished when flushed: its time is unknown */
        return;
    }
    if (n_collected == cap_collected) {
        size_t cap = cap_collected ? 2 * cap_collected : 1024;
        ds_kernel_record *p = realloc(collected, cap * sizeof *p);
        if (!p) {
            collect_failed = true;
            return;
        }
        collected = p;
        cap_collected = cap;
    }
    ds_kernel_record *r = &collected[n_collected++];
    memset(r, 0, sizeof *r);
    r->grid_blocks = (uint64_t)(k->gridX > 0 ? k->gridX : 1) * (uint64_t)(k->gridY > 0 ? k->gridY : 1) *
                     (uint64_t)(k->gridZ > 0 ? k->gridZ : 1);
    r->block_threads = (uint32_t)((k->blockX > 0 ? k->blockX : 1) * (k->blockY > 0 ? k->blockY : 1) *
                                  (k->blockZ > 0 ? k->blockZ : 1));
    r->regs_per_thread = k->registersPerThread;
    r->smem_bytes = (uint32_t)(k->staticSharedMemory > 0 ? k->staticSharedMemory : 0) +
                    (uint32_t)(k->dynamicSharedMemory > 0 ? k->dynamicSharedMemory : 0);
    r->smem_config = k->sharedMemoryExecuted;
    r->start_ns = k->start;
    r->end_ns = k->end;
    snprintf(r->name, sizeof r->name, "%s", k->name ? k->name : "?");
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid)
{
    (void)ctx;
    (void)stream;
    (void)size;
    CUpti_Activity *rec = NULL;
    pthread_mutex_lock(&collect_lock);
    while (buffer && cupti.next(buffer, valid, &rec) == CUPTI_SUCCESS)
        if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL)
            keep((const CUpti_ActivityKernel9 *)rec);
    pthread_mutex_unlock(&collect_lock);
    free(buffer);
}

dstack_status ds_cupti_begin(void)
{
    pthread_once(&cupti.once, load_cupti);
    if (cupti.why[0])
        return ds_fail(DSTACK_ERR_UNSUPPORTED, "kernel trace: %s", cupti.why);
    pthread_mutex_lock(&trace_lock);
    pthread_mutex_lock(&collect_lock);
    free(collected);
    collected = NULL;
    n_collected = cap_collected = 0;
    collect_failed = false;
    n_incomplete = 0;
    pthread_mutex_unlock(&collect_lock);
    CUptiResult r = CUPTI_SUCCESS;
    if (!cupti.callbacks_registered) {
        r = cupti.reg(buffer_requested, buffer_completed);
        cupti.callbacks_registered = r == CUPTI_SUCCESS;
    }
    if (r == CUPTI_SUCCESS)
        r = cupti.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    if (r != CUPTI_SUCCESS) {
        pthread_mutex_unlock(&trace_lock);
        return cupti_fail(r, "kernel trace: enabling CUPTI's kernel activity");
    }
    return DSTACK_OK;
}

static int by_start(const void *a, const void *b)
{
    const ds_kernel_record *x = a, *y = b;
    return (x->start_ns > y->start_ns) - (x->start_ns < y->start_ns);
}

dstack_status ds_cupti_end(ds_kernel_record **out, size_t *n)
{
    /* stop recording first, so nothing launched after this trace lands in
     * the next one, then hand every buffer over */
    CUptiResult d = cupti.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    CUptiResult r = cupti.flush(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    pthread_mutex_lock(&collect_lock);
    ds_kernel_record *recs = collected;
    size_t count = n_collected, incomplete = n_incomplete;
    bool failed = collect_failed;
    collected = NULL;
    n_collected = cap_collected = 0;
    pthread_mutex_unlock(&collect_lock);
    pthread_mutex_unlock(&trace_lock);
    dstack_status st = DSTACK_OK;
    if (r != CUPTI_SUCCESS)
        st = cupti_fail(r, "kernel trace: flushing CUPTI's buffers");
    else if (d != CUPTI_SUCCESS)
        st = cupti_fail(d, "kernel trace: disabling CUPTI's kernel activity");
    else if (failed)
        st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "kernel trace: no memory for the kernel records");
    else if (incomplete)
        st = ds_fail(DSTACK_ERR_DEVICE, "kernel trace: %zu of %zu kernel records without an end (the traced work "
                     "had not finished)", incomplete, incomplete + count);
    if (st != DSTACK_OK) {
        free(recs);
        return st;
    }
    if (count > 1)
        qsort(recs, count, sizeof *recs, by_start);
    *out = count ? recs : NULL;
    if (!count)
        free(recs);
    *n = count;
    return DSTACK_OK;
}
