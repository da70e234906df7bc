/* checked.h - size and time arithmetic on caller-supplied values that
 * cannot wrap.
 *
 * Every size or duration that comes from a caller (an allocation size, a
 * count times an element size, microseconds turned into nanoseconds) goes
 * through one of these instead of a bare `*` or `+`: a wrapped size gives a
 * tiny buffer that is then overrun, a wrapped deadline one that is already
 * past. Each returns false on overflow and leaves *out unchanged then. */
#ifndef DS_UTIL_CHECKED_H
#define DS_UTIL_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool ds_size_add(size_t a, size_t b, size_t *out)
{
    if (a > SIZE_MAX - b)
        return false;
    *out = a + b;
    return true;
}

static inline bool ds_size_mul(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b)
        return false;
    *out = a * b;
    return true;
}

/* `a` rounded up to a multiple of `align` (> 0). */
static inline bool ds_size_round_up(size_t a, size_t align, size_t *out)
{
    size_t padded;
    if (!ds_size_add(a, align - 1, &padded))
        return false;
    *out = padded / align * align;
    return true;
}

static inline bool ds_u64_mul(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b != 0 && a > UINT64_MAX / b)
        return false;
    *out = a * b;
    return true;
}

#endif
