/* sized.c - copying growable structs in and out (see sized.h). */
#include "api/sized.h"

#include <string.h>

#include "util/error.h"

void ds_copy_out(void *dst, const void *full, size_t full_size)
{
    size_t dst_size = *(const size_t *)dst;
    memcpy(dst, full, dst_size < full_size ? dst_size : full_size);
    *(size_t *)dst = dst_size;
}

dstack_status ds_copy_sized(void *dst, size_t dst_size, const void *src, const char *what)
{
    size_t src_size = *(const size_t *)src;
    if (src_size < sizeof(size_t))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "%s.struct_size is %zu: fill the struct with its _init function first", what,
                       src_size);
    if (src_size > dst_size) {
        /* Built against a newer header: fine as long as the fields this
         * version does not know are left at their zero defaults. */
        const unsigned char *extra = (const unsigned char *)src + dst_size;
        for (size_t i = 0; i < src_size - dst_size; i++)
            if (extra[i])
                return ds_fail(DSTACK_ERR_UNSUPPORTED,
                               "%s sets fields unknown to libdstack %s", what, dstack_version_string());
        src_size = dst_size;
    }
    memcpy(dst, src, src_size);
    *(size_t *)dst = dst_size;
    return DSTACK_OK;
}
