/* status.c - status strings, the last-error message, versions. */
#include <stddef.h>

#include "dstack.h"
#include "util/error.h"

#define STR2(x) #x
#define STR(x) STR2(x)

static const char *const status_strings[] = {
    [DSTACK_OK] = "ok",
    [DSTACK_ERR_INVALID_ARGUMENT] = "invalid argument",
    [DSTACK_ERR_OUT_OF_MEMORY] = "out of memory",
    [DSTACK_ERR_NOT_FOUND] = "not found",
    [DSTACK_ERR_IO] = "i/o error",
    [DSTACK_ERR_PARSE] = "malformed model file",
    [DSTACK_ERR_UNSUPPORTED_OP] = "unsupported operator or attribute",
    [DSTACK_ERR_UNSUPPORTED_TYPE] = "unsupported tensor type (float32 only)",
    [DSTACK_ERR_SHAPE] = "shape error",
    [DSTACK_ERR_EXTERNAL_DATA] = "external tensor data is not supported",
    [DSTACK_ERR_SIZE_MISMATCH] = "buffer count or size does not match the model",
    [DSTACK_ERR_QUEUE_FULL] = "queue full",
    [DSTACK_ERR_SHUTTING_DOWN] = "shutting down",
    [DSTACK_ERR_NO_DEVICE] = "no usable CUDA device or driver",
    [DSTACK_ERR_DEVICE] = "device error (CUDA, cuDNN or cuBLAS)",
    [DSTACK_ERR_UNSUPPORTED] = "not supported by this build or backend",
    [DSTACK_ERR_DEADLINE_MISSED] = "deadline missed",
    [DSTACK_ERR_CANCELLED] = "cancelled",
    [DSTACK_ERR_INTERNAL] = "internal error",
    [DSTACK_ERR_RESOURCE_LIMIT] = "over a budget of the options or a limit of the policy",
};

DSTACK_API const char *dstack_strerror(dstack_status status)
{
    size_t i = (size_t)status;
    if (i >= sizeof status_strings / sizeof status_strings[0] || !status_strings[i])
        return "unknown status";
    return status_strings[i];
}

DSTACK_API const char *dstack_last_error(void) { return ds_error_message(); }

DSTACK_API unsigned dstack_version(void) { return DSTACK_VERSION_NUMBER; }

DSTACK_API const char *dstack_version_string(void)
{
    return STR(DSTACK_VERSION_MAJOR) "." STR(DSTACK_VERSION_MINOR) "." STR(DSTACK_VERSION_PATCH);
}
