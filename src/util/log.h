/* log.h - how library modules report progress through the user's log
 * callback (dstack_options.log_fn; levels documented in dstack.h).
 *
 * A library must not print on its own: every message goes to the callback
 * the user set, or nowhere. The one exception is the user's own request
 * through the environment: with no callback and DSTACK_LOG=debug|info|
 * warn|error set, messages at that level and above go to stderr (resolved
 * once, when the context is created).
 *
 * A module holds a `const ds_logger *` (the context's, from ds_ctx_logger;
 * NULL means silent) and calls ds_log. ds_log formats into a buffer on the
 * stack, DSTACK_LOG_MAX_MESSAGE bytes: no allocation, no lock, safe from any
 * thread and from several at once. A message longer than the buffer is cut
 * at a UTF-8 character boundary and ends in "...". A level below the
 * logger's minimum costs one comparison (no formatting); use ds_log_enabled
 * to skip computing arguments that only a log line needs.
 *
 * The logger itself is immutable after ds_logger_init: readers need no lock.
 */
#ifndef DS_UTIL_LOG_H
#define DS_UTIL_LOG_H

#include <stdbool.h>

#include "dstack.h"
#include "util/error.h" /* DS_PRINTF */

typedef struct ds_logger {
    dstack_log_fn fn;           /* NULL: silent */
    void *user;
    dstack_log_level min_level; /* least severe level passed on */
} ds_logger;

/* The sink for a context: fn at min_level when fn is set; else, when
 * env_value (the caller passes getenv("DSTACK_LOG")) names a level,
 * dstack_log_stderr at that level; else silent. */
void ds_logger_init(ds_logger *lg, dstack_log_fn fn, void *user, dstack_log_level min_level,
                    const char *env_value);

/* "debug", "info", "warn"/"warning", "error", "off", any case; false (and
 * *level untouched) for anything else, NULL included. */
bool ds_log_level_parse(const char *text, dstack_log_level *level);

/* "debug", "info", "warn", "error", "off"; "?" for a value out of range. */
const char *ds_log_level_name(dstack_log_level level);

static inline bool ds_log_enabled(const ds_logger *lg, dstack_log_level level)
{
    return lg && lg->fn && level >= lg->min_level && level < DSTACK_LOG_OFF;
}

/* Format and pass one message to the logger if its level is enabled. */
void ds_log(const ds_logger *lg, dstack_log_level level, const char *fmt, ...) DS_PRINTF(3, 4);

#endif
