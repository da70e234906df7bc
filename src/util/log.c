/* log.c - level filter, bounded formatting, the stderr sink (see log.h). */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

const char *ds_log_level_name(dstack_log_level level)
{
    return (unsigned)level <= DSTACK_LOG_OFF ? level_names[level] : "?";
}

bool ds_log_level_parse(const char *text, dstack_log_level *level)
{
    if (!text || !level)
        return false;
    for (unsigned i = 0; i <= DSTACK_LOG_OFF; i++)
        if (strcasecmp(text, level_names[i]) == 0) {
            *level = (dstack_log_level)i;
            return true;
        }
    if (strcasecmp(text, "warning") == 0) {
        *level = DSTACK_LOG_WARN;
        return true;
    }
    return false;
}

DSTACK_API void dstack_log_stderr(void *user, dstack_log_level level, const char *msg)
{
    (void)user;
    /* One fprintf: stdio locks the stream per call, so lines do not mix. */
    fprintf(stderr, "libdstack: %s: %s\n", ds_log_level_name(level), msg ? msg : "");
}

void ds_logger_init(ds_logger *lg, dstack_log_fn fn, void *user, dstack_log_level min_level,
                    const char *env_value)
{
    dstack_log_level env_level;
    if (fn)
        *lg = (ds_logger){fn, user, min_level};
    else if (ds_log_level_parse(env_value, &env_level))
        *lg = (ds_logger){dstack_log_stderr, NULL, env_level};
    else
        *lg = (ds_logger){NULL, NULL, DSTACK_LOG_OFF};
}

/* Cut a full buffer so it ends in "..." without splitting a UTF-8 sequence. */
static void mark_truncated(char *buf, size_t size)
{
    size_t end = size - 4; /* room for "..." and the NUL */
    while (end > 0 && ((unsigned char)buf[end] & 0xC0) == 0x80)
        end--; /* buf[end] is a continuation byte: back to the lead byte */
    memcpy(buf + end, "...", 4);
}

void ds_log(const ds_logger *lg, dstack_log_level level, const char *fmt, ...)
{
    if (!ds_log_enabled(lg, level))
        return;
    char buf[DSTACK_LOG_MAX_MESSAGE];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (len < 0)
        snprintf(buf, sizeof buf, "(unformattable log message: %s)", fmt);
    else if ((size_t)len >= sizeof buf)
        mark_truncated(buf, sizeof buf);
    lg->fn(lg->user, level, buf);
}
