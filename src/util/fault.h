/* fault.h - allocation, thread-creation and file-read wrappers with a
 * test-only fault injector (SQLite's "malloc failure" campaign).
 *
 * Every allocation, thread creation and file read of registration and the
 * request path goes through these wrappers instead of the libc calls, so a
 * test can make the n-th such call fail and check that the library answers
 * with a clean status, leaks nothing and loses no request:
 *
 *     ds_fault_arm(n, DS_FAULT_ALL);   // the n-th call of an armed kind fails
 *     ... drive the public API ...
 *     if (!ds_fault_fired()) break;    // nothing left to inject: walk done
 *     ds_fault_disarm();
 *
 * Converting a call site: malloc -> ds_malloc, calloc -> ds_calloc,
 * realloc -> ds_realloc, aligned_alloc -> ds_aligned_alloc, free stays free,
 * pthread_create -> ds_thread_create (same arguments, same return: 0 or an
 * errno value), fopen/fread -> ds_fopen/ds_fread. A failing wrapper behaves
 * exactly like the libc call failing (NULL, EAGAIN, a short read), so the
 * caller's existing error path is what gets tested.
 *
 * Why compiled in always: the cost when disarmed is one relaxed atomic load
 * per call, and the library the tests walk is then the library users run.
 * The state is process-wide (an injector that fails "the n-th call" must see
 * every context's calls); only tests arm it, one walk at a time. */
#ifndef DS_UTIL_FAULT_H
#define DS_UTIL_FAULT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Kinds of call that can be made to fail (a bit mask). */
enum {
    DS_FAULT_ALLOC = 1u << 0,  /* ds_malloc, ds_calloc, ds_realloc, ds_aligned_alloc */
    DS_FAULT_THREAD = 1u << 1, /* ds_thread_create */
    DS_FAULT_IO = 1u << 2,     /* ds_fopen, ds_fread */
    DS_FAULT_ALL = DS_FAULT_ALLOC | DS_FAULT_THREAD | DS_FAULT_IO
};

void *ds_malloc(size_t size);
void *ds_calloc(size_t n, size_t size);
void *ds_realloc(void *ptr, size_t size);
void *ds_aligned_alloc(size_t alignment, size_t size);
int ds_thread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
FILE *ds_fopen(const char *path, const char *mode);
size_t ds_fread(void *buf, size_t size, size_t n, FILE *f);

/* ---- test API (internal: tests link the static library) ---- */

/* Count calls of the kinds in `kinds` from now on; the `nth` (1-based) one
 * fails, and so does every later one when `sticky` (a persistent failure,
 * as a real out-of-memory is). Resets the counter and the fired flag. */
void ds_fault_arm(uint64_t nth, unsigned kinds, bool sticky);
/* Stop injecting; the counters stay readable. */
void ds_fault_disarm(void);
/* Did an armed fault fire since ds_fault_arm? */
bool ds_fault_fired(void);
/* Calls of the armed kinds counted since ds_fault_arm. */
uint64_t ds_fault_calls(void);

#endif
