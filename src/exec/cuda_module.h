/* cuda_module.h - the cuda backend as a module of its own.
 *
 * Linking cuDNN, cuBLAS and the CUDA runtime into libdstack.so loaded them
 * into every program before main: 150 MB of resident memory for a program
 * that only uses the cpu backend, valgrind reports from cuBLAS's
 * initialisation, and a library that would not load at all on a host
 * without cuDNN. So the shared library carries no CUDA code: src/exec/cuda,
 * src/gpu and every .cu file form libdstack-cuda.so.MAJOR, linked against
 * cuDNN/cuBLAS/cudart, which libdstack.so opens with dlopen the first time
 * a context asks for cuda (as ONNX Runtime loads its CUDA provider). It is
 * looked for beside libdstack.so first (dladdr), then on the ordinary
 * library search path. libdstack.a has no loader: static programs link the
 * cuda objects directly (pkg-config --static lists the CUDA libraries).
 *
 * The module carries its own copies of the few core objects it uses
 * (util/error, graph queries); its error messages are sent to libdstack.so's
 * thread-local buffer (ds_error_use_buffer), so dstack_last_error shows
 * them. Everything else crosses as the executor interface of exec.h: both
 * sides are built from one tree, and the module refuses a libdstack.so of
 * another version.
 */
#ifndef DS_EXEC_CUDA_MODULE_H
#define DS_EXEC_CUDA_MODULE_H

#include "exec/exec.h"

#define DS_STR2_(x) #x
#define DS_STR_(x) DS_STR2_(x)
#define DS_CUDA_MODULE_SONAME "libdstack-cuda.so." DS_STR_(DSTACK_VERSION_MAJOR)
#define DS_CUDA_MODULE_VERSION \
    DS_STR_(DSTACK_VERSION_MAJOR) "." DS_STR_(DSTACK_VERSION_MINOR) "." DS_STR_(DSTACK_VERSION_PATCH)
/* The one symbol the module exports. */
#define DS_CUDA_MODULE_ENTRY "ds_cuda_module_open"
/* Bumped whenever this struct or exec.h changes shape. */
#define DS_CUDA_MODULE_ABI 1u

typedef struct ds_cuda_module_host {
    unsigned abi;          /* DS_CUDA_MODULE_ABI */
    const char *version;   /* DS_CUDA_MODULE_VERSION of libdstack.so */
    char *(*error_buffer)(void); /* libdstack.so's ds_error_buffer */
} ds_cuda_module_host;

typedef struct ds_cuda_module {
    dstack_status (*exec_create)(const ds_executor_config *cfg, ds_executor **out);
} ds_cuda_module;

/* The entry point: NULL when `host` does not match this module (abi or
 * version), with the reason in the host's error buffer when it has one. */
typedef const ds_cuda_module *(*ds_cuda_module_open_fn)(const ds_cuda_module_host *host);

#endif
