/* cuda_module.c - the entry point of libdstack-cuda.so (see
 * exec/cuda_module.h). In libdstack.a it is linked with everything else
 * (one relocatable object) but nothing calls it, and its symbol is made
 * local there (Makefile). */
#include <string.h>

#include "exec/cuda_module.h"
#include "util/error.h"

static const ds_cuda_module module = {ds_exec_cuda_create};

__attribute__((visibility("default"))) const ds_cuda_module *ds_cuda_module_open(const ds_cuda_module_host *host);

const ds_cuda_module *ds_cuda_module_open(const ds_cuda_module_host *host)
{
    if (!host || host->abi != DS_CUDA_MODULE_ABI)
        return NULL; /* layout unknown: not even the error buffer is safe to use */
    ds_error_use_buffer(host->error_buffer);
    if (!host->version || strcmp(host->version, DS_CUDA_MODULE_VERSION) != 0) {
        ds_fail(DSTACK_ERR_NO_DEVICE, "%s is from libdstack %s, but libdstack.so is %s", DS_CUDA_MODULE_SONAME,
                DS_CUDA_MODULE_VERSION, host->version ? host->version : "(unknown)");
        return NULL;
    }
    return &module;
}
