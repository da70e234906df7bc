/* cupti.h - per-kernel launch records through CUPTI's activity API, loaded
 * at run time.
 *
 * libcupti is never linked: ds_cupti_begin opens it with dlopen (the soname
 * of the CUDA major the module was built against, then plain libcupti.so;
 * DSTACK_CUPTI_LIBRARY names another file) the first time it is needed, so
 * the library loads and serves where CUPTI is absent, and tracing there says
 * UNSUPPORTED with the reason.
 *
 * A trace is CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL (plain KERNEL would
 * serialize kernels) between ds_cupti_begin and ds_cupti_end: CUPTI hands
 * full buffers to a callback on its own thread, ds_cupti_end flushes
 * (FLUSH_FORCED) after the caller synchronized and returns the records in
 * start order. CUPTI is process-wide, so one trace runs at a time: begin
 * takes a process lock that end releases (same thread). Records are read by
 * the prefix that CUpti_ActivityKernel4..10 share (grid, block, registers,
 * shared memory, start/end, name); a library whose API version is older
 * than the kernel-9 layout is refused.
 */
#ifndef DS_GPU_CUPTI_H
#define DS_GPU_CUPTI_H

#include <stddef.h>

#include "dstack.h"
#include "exec/exec.h"

/* Start tracing kernels. UNSUPPORTED when libcupti cannot be opened or
 * lacks an entry point; DEVICE with CUPTI's message when it refuses.
 * On success the caller must call ds_cupti_end. */
dstack_status ds_cupti_begin(void);

/* Stop tracing and hand back the kernels launched since ds_cupti_begin
 * (the caller synchronized its streams first). *out is malloc'ed (caller
 * frees), sorted by start time. DEVICE when a record has no end (its
 * kernel had not finished). Releases the trace lock on every path. */
dstack_status ds_cupti_end(ds_kernel_record **out, size_t *n);

#endif
