/* test_log.c - ds_log (src/util/log.h): the level filter, safe truncation,
 * the DSTACK_LOG fallback and the level names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "util/log.h"

typedef struct capture {
    int n;
    dstack_log_level levels[16];
    char last[DSTACK_LOG_MAX_MESSAGE + 8];
} capture;

static void capture_fn(void *user, dstack_log_level level, const char *msg)
{
    capture *c = user;
    if (c->n < 16)
        c->levels[c->n] = level;
    c->n++;
    strncpy(c->last, msg, sizeof c->last - 1);
}

static void log_all_levels(const ds_logger *lg)
{
    ds_log(lg, DSTACK_LOG_DEBUG, "debug %d", 0);
    ds_log(lg, DSTACK_LOG_INFO, "info %d", 1);
    ds_log(lg, DSTACK_LOG_WARN, "warn %d", 2);
    ds_log(lg, DSTACK_LOG_ERROR, "error %d", 3);
    ds_log(lg, DSTACK_LOG_OFF, "never"); /* OFF is not a message level */
}

static void test_log_passes_levels_at_and_above_the_minimum(void **unused)
{
    (void)unused;
    for (int min = DSTACK_LOG_DEBUG; min <= DSTACK_LOG_OFF; min++) {
        capture c = {0};
        ds_logger lg;
        ds_logger_init(&lg, capture_fn, &c, (dstack_log_level)min, NULL);
        log_all_levels(&lg);
        assert_int_equal(c.n, DSTACK_LOG_OFF - min);
        for (int i = 0; i < c.n; i++)
            assert_int_equal(c.levels[i], min + i);
    }
}

static void test_log_message_is_formatted(void **unused)
{
    (void)unused;
    capture c = {0};
    ds_logger lg;
    ds_logger_init(&lg, capture_fn, &c, DSTACK_LOG_INFO, NULL);
    ds_log(&lg, DSTACK_LOG_INFO, "knee %u SMs for '%s'", 56u, "resnet50");
    assert_string_equal(c.last, "knee 56 SMs for 'resnet50'");
}

static void test_log_without_a_sink_is_silent(void **unused)
{
    (void)unused;
    ds_logger lg;
    ds_logger_init(&lg, NULL, NULL, DSTACK_LOG_DEBUG, NULL);
    assert_false(ds_log_enabled(&lg, DSTACK_LOG_ERROR));
    log_all_levels(&lg); /* nothing to call: must not crash */
    log_all_levels(NULL);
    ds_logger_init(&lg, NULL, NULL, DSTACK_LOG_DEBUG, "nonsense");
    assert_null(lg.fn);
}

static void test_log_env_value_selects_stderr_only_without_a_callback(void **unused)
{
    (void)unused;
    ds_logger lg;
    ds_logger_init(&lg, NULL, NULL, DSTACK_LOG_INFO, "WARN");
    assert_ptr_equal(lg.fn, dstack_log_stderr);
    assert_int_equal(lg.min_level, DSTACK_LOG_WARN);
    capture c = {0};
    ds_logger_init(&lg, capture_fn, &c, DSTACK_LOG_ERROR, "debug"); /* the callback wins */
    assert_ptr_equal(lg.fn, capture_fn);
    assert_int_equal(lg.min_level, DSTACK_LOG_ERROR);
}

static void test_log_long_message_is_cut_with_dots(void **unused)
{
    (void)unused;
    capture c = {0};
    ds_logger lg;
    ds_logger_init(&lg, capture_fn, &c, DSTACK_LOG_DEBUG, NULL);
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ds_log(&lg, DSTACK_LOG_INFO, "%s", big);
    size_t len = strlen(c.last);
    assert_true(len < DSTACK_LOG_MAX_MESSAGE);
    assert_true(len >= DSTACK_LOG_MAX_MESSAGE - 4);
    assert_string_equal(c.last + len - 3, "...");
    /* Multi-byte characters (e-acute, 2 bytes) are never split. */
    char utf[2000] = "";
    for (int i = 0; i < 600; i++)
        strcat(utf, "\xc3\xa9");
    ds_log(&lg, DSTACK_LOG_INFO, "%s", utf);
    len = strlen(c.last);
    assert_string_equal(c.last + len - 3, "...");
    assert_int_equal((len - 3) % 2, 0);
    for (size_t i = 0; i + 3 < len; i += 2)
        assert_memory_equal(c.last + i, "\xc3\xa9", 2);
}

static void test_log_level_names_parse_both_ways(void **unused)
{
    (void)unused;
    dstack_log_level l = DSTACK_LOG_OFF;
    assert_true(ds_log_level_parse("Debug", &l));
    assert_int_equal(l, DSTACK_LOG_DEBUG);
    assert_true(ds_log_level_parse("warning", &l));
    assert_int_equal(l, DSTACK_LOG_WARN);
    assert_true(ds_log_level_parse("off", &l));
    assert_int_equal(l, DSTACK_LOG_OFF);
    assert_false(ds_log_level_parse("loud", &l));
    assert_false(ds_log_level_parse(NULL, &l));
    assert_int_equal(l, DSTACK_LOG_OFF);
    for (int i = DSTACK_LOG_DEBUG; i <= DSTACK_LOG_OFF; i++) {
        assert_true(ds_log_level_parse(ds_log_level_name((dstack_log_level)i), &l));
        assert_int_equal(l, i);
    }
    assert_string_equal(ds_log_level_name((dstack_log_level)42), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_passes_levels_at_and_above_the_minimum),
        cmocka_unit_test(test_log_message_is_formatted),
        cmocka_unit_test(test_log_without_a_sink_is_silent),
        cmocka_unit_test(test_log_env_value_selects_stderr_only_without_a_callback),
        cmocka_unit_test(test_log_long_message_is_cut_with_dots),
        cmocka_unit_test(test_log_level_names_parse_both_ways),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
