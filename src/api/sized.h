/* sized.h - the growable-struct rule of the whole public header.
 *
 * Every struct whose first field is `struct_size` crosses the API through
 * these two copies, so a program built against an older (smaller) or newer
 * (larger) header keeps working: the library reads and writes only the bytes
 * both sides know. Kept apart from the entry points so that every api file
 * can use them without depending on another's internals. */
#ifndef DS_API_SIZED_H
#define DS_API_SIZED_H

#include <stddef.h>

#include "dstack.h"

/* Copy a caller's growable struct over `dst` (already filled by the init
 * function), reading only the bytes the caller's header knew. A newer
 * caller's extra bytes must be zero (UNSUPPORTED otherwise); a struct_size
 * below sizeof(size_t) is INVALID_ARGUMENT. */
dstack_status ds_copy_sized(void *dst, size_t dst_size, const void *src, const char *what);

/* Copy a filled struct out to a caller's growable struct, only as many
 * bytes as the caller's struct_size says it has (at least sizeof(size_t)). */
void ds_copy_out(void *dst, const void *full, size_t full_size);

#endif
