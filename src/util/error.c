#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DS_ERROR_LEN 512

static _Thread_local char tls_message[DS_ERROR_LEN];

dstack_status ds_fail(dstack_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_message, sizeof tls_message, fmt, ap);
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
    size_t lo = strlen(tls_message);
    if (lp + lo > DS_ERROR_LEN - 1)
        lo = DS_ERROR_LEN - 1 - lp;
    memmove(tls_message + lp, tls_message, lo);
    memcpy(tls_message, prefix, lp);
    tls_message[lp + lo] = '\0';
    return status;
}

void ds_error_clear(void) { tls_message[0] = '\0'; }

const char *ds_error_message(void) { return tls_message; }
