/* exec_nocuda.c - the cuda constructor of a build without CUDA (WITH_CUDA=0). */
#include "exec/exec.h"
#include "util/error.h"

dstack_status ds_exec_cuda_create(const ds_executor_config *cfg, ds_executor **out) {
    (void)cfg;
    if (out) *out = NULL;
    return ds_fail(DSTACK_ERR_UNSUPPORTED, "cuda backend: libdstack was built without CUDA "
                                           "(WITH_CUDA=0)");
}
