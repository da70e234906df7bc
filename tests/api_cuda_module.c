/* api_cuda_module.c - the CUDA stack is loaded only when a context asks for
 * cuda (issue 15 item 9), through include/dstack.h only.
 *
 * A program linked with libdstack.so that uses the cpu backend must not map
 * cuDNN, cuBLAS or the CUDA runtime at all (they cost 150 MB of resident
 * memory and valgrind reports); backend cuda loads libdstack-cuda.so and its
 * errors still reach dstack_last_error; a libdstack.so whose module is
 * missing says NO_DEVICE and names the module.
 *
 * The tests run in this order on purpose: once loaded, the module stays,
 * and a later dlopen by its name finds the one already loaded.
 */
#define _GNU_SOURCE /* dladdr, dl_iterate_phdr, mkdtemp, realpath */
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "dstack.h"

static const char *const cuda_libs[] = {"libcudnn", "libcublas", "libcudart", "libdstack-cuda"};

static int find_cuda(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    const char **found = arg;
    for (size_t i = 0; i < sizeof cuda_libs / sizeof cuda_libs[0]; i++)
        if (info->dlpi_name && strstr(info->dlpi_name, cuda_libs[i]))
            *found = info->dlpi_name;
    return 0;
}

/* The name of a loaded CUDA library (or the module), NULL if none. */
static const char *loaded_cuda_library(void)
{
    const char *found = NULL;
    dl_iterate_phdr(find_cuda, &found);
    return found;
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define CHECK_RSS 1 /* sanitizers' shadow memory would dwarf what is measured */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}
#endif

static bool driver_installed(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (h)
        dlclose(h);
    return h != NULL;
}

static dstack_status create(dstack_backend backend, dstack_ctx **ctx)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = backend;
    o.cpu_threads = 1;
    return dstack_create(&o, ctx);
}

static void test_cpu_context_maps_no_cuda_library(void **state)
{
    (void)state;
    assert_null(loaded_cuda_library()); /* not at start-up */
    dstack_ctx *ctx;
    assert_int_equal(create(DSTACK_BACKEND_CPU, &ctx), DSTACK_OK);
    assert_null(loaded_cuda_library());
#ifdef CHECK_RSS
    long kib = rss_kib();
    printf("# VmRSS with a cpu context: %ld KiB\n", kib);
    assert_true(kib > 0 && kib < 20 * 1024);
#endif
    dstack_destroy(ctx);
    if (!driver_installed()) {
        /* auto without a driver: cpu, and still nothing of CUDA mapped */
        assert_int_equal(create(DSTACK_BACKEND_AUTO, &ctx), DSTACK_OK);
        dstack_ctx_info info;
        dstack_ctx_info_init(&info);
        assert_int_equal(dstack_ctx_info_get(ctx, &info), DSTACK_OK);
        assert_int_equal(info.backend, DSTACK_BACKEND_CPU);
        assert_true(strstr(info.note, "using cpu") != NULL);
        assert_null(loaded_cuda_library());
        dstack_destroy(ctx);
    }
}

static void test_cuda_backend_loads_the_module_and_its_errors_reach_the_caller(void **state)
{
    (void)state;
    dstack_ctx *ctx = (dstack_ctx *)0x1;
    dstack_status st = create(DSTACK_BACKEND_CUDA, &ctx);
    if (st == DSTACK_ERR_UNSUPPORTED) {
        printf("# built without CUDA: %s\n", dstack_last_error());
        skip();
    }
    if (st == DSTACK_OK) { /* a GPU is here */
        dstack_destroy(ctx);
        assert_non_null(loaded_cuda_library());
        return;
    }
    assert_int_equal(st, DSTACK_ERR_NO_DEVICE);
    assert_ptr_equal(ctx, (dstack_ctx *)0x1);
    printf("# cuda without a GPU: %s\n", dstack_last_error());
    /* the module was there and loaded; the message is its own, from cudart */
    assert_null(strstr(dstack_last_error(), "cannot load"));
    assert_true(strlen(dstack_last_error()) > 10);
    assert_non_null(loaded_cuda_library());
}

typedef struct copied_lib {
    void *handle;
    dstack_status (*create)(const dstack_options *, dstack_ctx **);
    void (*options_init)(dstack_options *);
    void (*destroy)(dstack_ctx *);
    const char *(*last_error)(void);
    dstack_status (*ctx_info_get)(dstack_ctx *, dstack_ctx_info *);
} copied_lib;

/* libdstack.so copied alone into a fresh directory: its module is not
 * beside it, nor (without LD_LIBRARY_PATH) on the search path. */
static bool copy_library_alone(char *dir, size_t n, copied_lib *lib)
{
    Dl_info di;
    if (!dladdr((void *)&dstack_create, &di) || !di.dli_fname)
        return false;
    char real[PATH_MAX];
    if (!realpath(di.dli_fname, real))
        return false;
    snprintf(dir, n, "/tmp/dstack_nomodule_XXXXXX");
    if (!mkdtemp(dir))
        return false;
    char to[PATH_MAX + 64], cmd[3 * PATH_MAX];
    snprintf(to, sizeof to, "%s/libdstack.so.%d", dir, DSTACK_VERSION_MAJOR);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", real, to);
    if (system(cmd) != 0)
        return false;
    lib->handle = dlopen(to, RTLD_NOW | RTLD_LOCAL);
    if (!lib->handle)
        return false;
    *(void **)&lib->create = dlsym(lib->handle, "dstack_create");
    *(void **)&lib->options_init = dlsym(lib->handle, "dstack_options_init");
    *(void **)&lib->destroy = dlsym(lib->handle, "dstack_destroy");
    *(void **)&lib->last_error = dlsym(lib->handle, "dstack_last_error");
    *(void **)&lib->ctx_info_get = dlsym(lib->handle, "dstack_ctx_info_get");
    return lib->create && lib->options_init && lib->destroy && lib->last_error && lib->ctx_info_get;
}

static void test_missing_module_is_no_device_naming_it(void **state)
{
    (void)state;
    if (getenv("LD_LIBRARY_PATH")) {
        printf("# LD_LIBRARY_PATH is set: the module may be found there\n");
        skip();
    }
    char dir[PATH_MAX];
    copied_lib lib = {0};
    assert_true(copy_library_alone(dir, sizeof dir, &lib));
    dstack_options o;
    lib.options_init(&o);
    o.backend = DSTACK_BACKEND_CUDA;
    dstack_ctx *ctx = (dstack_ctx *)0x1;
    dstack_status st = lib.create(&o, &ctx);
    if (st == DSTACK_ERR_UNSUPPORTED) {
        printf("# built without CUDA\n");
    } else {
        printf("# %s\n", lib.last_error());
        assert_int_equal(st, DSTACK_ERR_NO_DEVICE);
        assert_ptr_equal(ctx, (dstack_ctx *)0x1);
        char soname[64];
        snprintf(soname, sizeof soname, "libdstack-cuda.so.%d", DSTACK_VERSION_MAJOR);
        assert_non_null(strstr(lib.last_error(), soname));
    }
    /* auto still gives a working cpu context */
    o.backend = DSTACK_BACKEND_AUTO;
    o.cpu_threads = 1;
    assert_int_equal(lib.create(&o, &ctx), DSTACK_OK);
    dstack_ctx_info info;
    dstack_ctx_info_init(&info);
    assert_int_equal(lib.ctx_info_get(ctx, &info), DSTACK_OK);
    assert_int_equal(info.backend, DSTACK_BACKEND_CPU);
    lib.destroy(ctx);
    dlclose(lib.handle);
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_context_maps_no_cuda_library),
        cmocka_unit_test(test_missing_module_is_no_device_naming_it),
        cmocka_unit_test(test_cuda_backend_loads_the_module_and_its_errors_reach_the_caller),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
