#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char tls_message[DS_ERROR_LEN];

/* Where messages go: this thread's own buffer, unless this copy of the file
 * lives in a module (libdstack-cuda.so) whose messages must land in
 * libdstack.so's buffer for dstack_last_error to see them. Set once, before
 * any of the module's code runs. */
static char *own_buffer(void) { return tls_message; }
static char *(*message_buffer)(void) = own_buffer;

char *ds_error_buffer(void) { return message_buffer(); }

void ds_error_use_buffer(char *(*buffer)(void)) { message_buffer = buffer ? buffer : own_buffer; }

dstack_status ds_fail(dstack_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ds_error_buffer(), DS_ERROR_LEN, fmt, ap);
    va_end(ap);
    return status;
}

dstack_status ds_fail_prefix(dstack_status status, const char *fmt, ...)
{
    char prefix[DS_ERROR_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t lp = n < 0 ? 0 : (size_t)n;
    if (lp > DS_ERROR_LEN - 1)
        lp = DS_ERROR_LEN - 1;
    char *message = ds_error_buffer();
    size_t lo = strlen(message);
    if (lp + lo > DS_ERROR_LEN - 1)
        lo = DS_ERROR_LEN - 1 - lp;
    memmove(message + lp, message, lo);
    memcpy(message, prefix, lp);
    message[lp + lo] = '\0';
    return status;
}

void ds_error_clear(void) { ds_error_buffer()[0] = '\0'; }

const char *ds_error_message(void) { return ds_error_buffer(); }
