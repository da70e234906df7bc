/* cuda_loader.c - the cuda constructor of libdstack.so: opens
 * libdstack-cuda.so on first use and calls the real one there (see
 * exec/cuda_module.h). Built into the shared library only. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "exec/cuda_module.h"
#include "util/error.h"

/* Once loaded, the module stays for the life of the process: the CUDA
 * runtime and cuBLAS do not survive being unloaded and loaded again. A
 * failed load is tried again next time (a library may have been installed
 * since); it is cheap. */
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static const ds_cuda_module *loaded;

/* The directory libdstack.so itself was loaded from, with a '/' at the end;
 * "" if unknown. */
static void own_directory(char *dir, size_t n)
{
    Dl_info di;
    dir[0] = '\0';
    if (!dladdr((void *)&own_directory, &di) || !di.dli_fname)
        return;
    const char *slash = strrchr(di.dli_fname, '/');
    if (slash && (size_t)(slash - di.dli_fname) + 1 < n)
        snprintf(dir, n, "%.*s", (int)(slash - di.dli_fname) + 1, di.dli_fname);
}

/* Beside libdstack.so first, so a build tree or an install prefix uses its
 * own module; then wherever the dynamic loader looks. When the module is
 * there but will not load (cuDNN missing, say), that reason wins: it names
 * the library to install. */
static void *open_module(char *why, size_t n)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    own_directory(dir, sizeof dir);
    if (dir[0]) {
        snprintf(path, sizeof path, "%s%s", dir, DS_CUDA_MODULE_SONAME);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
        if (access(path, F_OK) == 0) {
            snprintf(why, n, "%s", dlerror());
            return NULL;
        }
    }
    void *h = dlopen(DS_CUDA_MODULE_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        snprintf(why, n, "%s (looked in %.400s and on the library search path)", dlerror(),
                 dir[0] ? dir : "(libdstack.so's directory unknown)");
    return h;
}

static dstack_status load_module(const ds_cuda_module **out)
{
    char why[1024] = "";
    void *h = open_module(why, sizeof why);
    if (!h)
        return ds_fail(DSTACK_ERR_NO_DEVICE, "cuda backend: cannot load %s: %s", DS_CUDA_MODULE_SONAME, why);
    ds_cuda_module_open_fn open_fn;
    *(void **)&open_fn = dlsym(h, DS_CUDA_MODULE_ENTRY);
    if (!open_fn) {
        dlclose(h);
        return ds_fail(DSTACK_ERR_NO_DEVICE, "cuda backend: %s has no %s: not a libdstack module",
                       DS_CUDA_MODULE_SONAME, DS_CUDA_MODULE_ENTRY);
    }
    ds_cuda_module_host host = {DS_CUDA_MODULE_ABI, DS_CUDA_MODULE_VERSION, ds_error_buffer};
    ds_error_clear();
    const ds_cuda_module *m = open_fn(&host);
    if (!m) {
        dlclose(h);
        if (!ds_error_message()[0])
            ds_fail(DSTACK_ERR_NO_DEVICE, "cuda backend: %s is of another libdstack version",
                    DS_CUDA_MODULE_SONAME);
        return DSTACK_ERR_NO_DEVICE;
    }
    *out = m; /* h is never closed: see load_lock */
    return DSTACK_OK;
}

/* Without libcuda.so.1 no GPU can be used, and loading the module would
 * map cuDNN and cuBLAS for nothing: auto asks this first. */
static dstack_status driver_present(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!h)
        return ds_fail(DSTACK_ERR_NO_DEVICE, "no CUDA driver: %s", dlerror());
    dlclose(h);
    return DSTACK_OK;
}

dstack_status ds_exec_cuda_create(const ds_executor_config *cfg, ds_executor **out)
{
    if (cfg && cfg->driver_first) {
        dstack_status st = driver_present();
        if (st != DSTACK_OK)
            return st;
    }
    pthread_mutex_lock(&load_lock);
    dstack_status st = loaded ? DSTACK_OK : load_module(&loaded);
    const ds_cuda_module *m = loaded;
    pthread_mutex_unlock(&load_lock);
    if (st != DSTACK_OK)
        return st;
    return m->exec_create(cfg, out);
}
