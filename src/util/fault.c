/* fault.c - see fault.h. */
#include "util/fault.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

static atomic_uint armed_kinds;     /* 0: inert */
static atomic_uint_fast64_t calls;  /* calls of armed kinds since arm */
static atomic_uint_fast64_t fail_at;
static atomic_bool sticky_fail;
static atomic_bool fired;

/* True when this call (of kind `kind`) must fail. */
static bool should_fail(unsigned kind)
{
    if (!(atomic_load_explicit(&armed_kinds, memory_order_relaxed) & kind))
        return false;
    uint64_t n = atomic_fetch_add(&calls, 1) + 1;
    uint64_t at = atomic_load(&fail_at);
    if (n == at || (n > at && atomic_load(&sticky_fail))) {
        atomic_store(&fired, true);
        return true;
    }
    return false;
}

void ds_fault_arm(uint64_t nth, unsigned kinds, bool sticky)
{
    atomic_store(&armed_kinds, 0u);
    atomic_store(&calls, 0);
    atomic_store(&fail_at, nth);
    atomic_store(&sticky_fail, sticky);
    atomic_store(&fired, false);
    atomic_store(&armed_kinds, kinds);
}

void ds_fault_disarm(void) { atomic_store(&armed_kinds, 0u); }
bool ds_fault_fired(void) { return atomic_load(&fired); }
uint64_t ds_fault_calls(void) { return atomic_load(&calls); }

void *ds_malloc(size_t size) { return should_fail(DS_FAULT_ALLOC) ? NULL : malloc(size); }

void *ds_calloc(size_t n, size_t size) { return should_fail(DS_FAULT_ALLOC) ? NULL : calloc(n, size); }

void *ds_realloc(void *ptr, size_t size)
{
    return should_fail(DS_FAULT_ALLOC) ? NULL : realloc(ptr, size);
}

void *ds_aligned_alloc(size_t alignment, size_t size)
{
    return should_fail(DS_FAULT_ALLOC) ? NULL : aligned_alloc(alignment, size);
}

int ds_thread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    if (should_fail(DS_FAULT_THREAD))
        return EAGAIN;
    return pthread_create(thread, attr, fn, arg);
}

FILE *ds_fopen(const char *path, const char *mode)
{
    if (should_fail(DS_FAULT_IO)) {
        errno = EIO;
        return NULL;
    }
    return fopen(path, mode);
}

size_t ds_fread(void *buf, size_t size, size_t n, FILE *f)
{
    if (should_fail(DS_FAULT_IO)) {
        errno = EIO;
        return 0;
    }
    return fread(buf, size, n, f);
}
