/* error.h - the thread-local detail message behind dstack_last_error().
 *
 * Every module reports a failure as `return ds_fail(STATUS, "fmt", ...)`:
 * the status goes up the call chain, the message waits in this thread for
 * the caller to read. A message set deep down is kept when an outer layer
 * returns the same status without a message of its own, so the user sees the
 * most specific cause (the node, the op, the reason). */
#ifndef DS_UTIL_ERROR_H
#define DS_UTIL_ERROR_H

#include "dstack.h"

#if defined(__GNUC__)
#define DS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DS_PRINTF(a, b)
#endif

/* Set this thread's message and return `status`. */
dstack_status ds_fail(dstack_status status, const char *fmt, ...) DS_PRINTF(2, 3);

/* Prefix this thread's message with context ("model 'x': ") and return status. */
dstack_status ds_fail_prefix(dstack_status status, const char *fmt, ...) DS_PRINTF(2, 3);

/* Forget this thread's message (at the start of each public call). */
void ds_error_clear(void);

const char *ds_error_message(void);

/* This thread's message buffer (DS_ERROR_LEN bytes). */
#define DS_ERROR_LEN 512
char *ds_error_buffer(void);

/* Send this copy's messages to `buffer` (NULL: back to its own). Only a
 * module that carries its own copy of this file calls it, once, at load:
 * see exec/cuda_module.h. */
void ds_error_use_buffer(char *(*buffer)(void));

#endif
