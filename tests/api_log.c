/* api_log.c - the log callback through the public header: silent by
 * default, the callback gets the levels asked for and no others, stderr only
 * when the user asks (DSTACK_LOG or dstack_log_stderr). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dstack.h"

typedef struct log_capture {
    pthread_mutex_t lock;
    int n, n_below_min;
    dstack_log_level min;
    char first[DSTACK_LOG_MAX_MESSAGE];
    const char *want; /* a substring to look for in every message */
    char found[DSTACK_LOG_MAX_MESSAGE];
} log_capture;

static void capture_fn(void *user, dstack_log_level level, const char *msg)
{
    log_capture *c = user;
    pthread_mutex_lock(&c->lock);
    if (level < c->min)
        c->n_below_min++;
    if (c->n++ == 0)
        snprintf(c->first, sizeof c->first, "%s", msg);
    if (c->want && !c->found[0] && strstr(msg, c->want))
        snprintf(c->found, sizeof c->found, "%s", msg);
    pthread_mutex_unlock(&c->lock);
}

static dstack_status create_cpu(dstack_options *o, dstack_ctx **ctx)
{
    o->backend = DSTACK_BACKEND_CPU;
    o->cpu_threads = 1;
    return dstack_create(o, ctx);
}

/* Runs create + destroy with fd 2 sent to a file; returns the bytes written
 * to stderr meanwhile. */
static long stderr_bytes_during_create(dstack_options *o)
{
    char path[] = "/tmp/dstack_api_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    dstack_ctx *ctx = NULL;
    dstack_status st = create_cpu(o, &ctx);
    dstack_destroy(ctx);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    struct stat sb;
    fstat(fd, &sb);
    close(fd);
    unlink(path);
    assert_int_equal(st, DSTACK_OK);
    return (long)sb.st_size;
}

/* Default options whose log goes to c at `level`. */
static dstack_options capture_options(log_capture *c, dstack_log_level level)
{
    dstack_options o;
    dstack_options_init(&o);
    o.log_fn = capture_fn;
    o.log_user = c;
    o.log_level = level;
    return o;
}

static void test_log_defaults_are_silent(void **unused)
{
    (void)unused;
    dstack_options o;
    dstack_options_init(&o);
    assert_null(o.log_fn);
    assert_null(o.log_user);
    assert_int_equal(o.log_level, DSTACK_LOG_INFO);
    unsetenv("DSTACK_LOG");
    assert_int_equal(stderr_bytes_during_create(&o), 0);
}

static void test_log_callback_gets_the_backend_choice_at_info(void **unused)
{
    (void)unused;
    log_capture c = {.lock = PTHREAD_MUTEX_INITIALIZER, .min = DSTACK_LOG_INFO};
    dstack_options o = capture_options(&c, DSTACK_LOG_INFO);
    dstack_ctx *ctx = NULL;
    assert_int_equal(create_cpu(&o, &ctx), DSTACK_OK);
    dstack_destroy(ctx);
    assert_true(c.n >= 1);
    assert_int_equal(c.n_below_min, 0);
    assert_non_null(strstr(c.first, "backend cpu"));
}

static void test_log_callback_gets_nothing_below_its_level(void **unused)
{
    (void)unused;
    for (int min = DSTACK_LOG_WARN; min <= DSTACK_LOG_OFF; min++) {
        log_capture c = {.lock = PTHREAD_MUTEX_INITIALIZER, .min = (dstack_log_level)min};
        dstack_options o = capture_options(&c, (dstack_log_level)min);
        dstack_ctx *ctx = NULL;
        assert_int_equal(create_cpu(&o, &ctx), DSTACK_OK);
        dstack_destroy(ctx);
        assert_int_equal(c.n, 0); /* a healthy cpu context warns about nothing */
    }
    /* DEBUG passes INFO too. */
    log_capture d = {.lock = PTHREAD_MUTEX_INITIALIZER, .min = DSTACK_LOG_DEBUG};
    dstack_options o = capture_options(&d, DSTACK_LOG_DEBUG);
    dstack_ctx *ctx = NULL;
    assert_int_equal(create_cpu(&o, &ctx), DSTACK_OK);
    dstack_destroy(ctx);
    assert_true(d.n >= 1);
}

static void test_log_failed_create_logs_an_error(void **unused)
{
    (void)unused;
    log_capture c = {.lock = PTHREAD_MUTEX_INITIALIZER, .min = DSTACK_LOG_ERROR};
    dstack_options o = capture_options(&c, DSTACK_LOG_ERROR);
    o.policy = DSTACK_POLICY_IDEAL; /* refused: ideal exists only on sim */
    dstack_ctx *ctx = NULL;
    assert_int_equal(create_cpu(&o, &ctx), DSTACK_ERR_UNSUPPORTED);
    assert_int_equal(c.n, 1);
    assert_non_null(strstr(c.first, dstack_last_error()));
}

/* A failed registration is logged at ERROR with dstack_last_error's text
 * (found by a new user: it logged nothing at any level). */
static void test_log_failed_register_logs_an_error(void **unused)
{
    (void)unused;
    log_capture c = {.lock = PTHREAD_MUTEX_INITIALIZER, .min = DSTACK_LOG_ERROR};
    dstack_options o = capture_options(&c, DSTACK_LOG_ERROR);
    dstack_ctx *ctx = NULL;
    assert_int_equal(create_cpu(&o, &ctx), DSTACK_OK);
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = "no_such_net";
    dstack_model *m = NULL;
    assert_int_equal(dstack_register_model(ctx, &d, &m), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(c.n, 1);
    assert_non_null(strstr(c.first, "dstack_register_model"));
    assert_non_null(strstr(c.first, dstack_last_error()));
    dstack_destroy(ctx);
}

/* A partitioning mode the backend does not have falls back, and says so at
 * WARN and in the context's note. */
static void test_partitioning_fallback_is_noted(void **unused)
{
    (void)unused;
    log_capture c = {.lock = PTHREAD_MUTEX_INITIALIZER, .min = DSTACK_LOG_WARN, .want = "partitioning"};
    dstack_options o = capture_options(&c, DSTACK_LOG_WARN);
    o.partitioning = DSTACK_PARTITION_GREEN_CTX;
    dstack_ctx *ctx = NULL;
    assert_int_equal(create_cpu(&o, &ctx), DSTACK_OK);
    assert_non_null(strstr(c.found, "green contexts unavailable on backend cpu"));
    dstack_ctx_info ci;
    dstack_ctx_info_init(&ci);
    assert_int_equal(dstack_ctx_info_get(ctx, &ci), DSTACK_OK);
    assert_non_null(strstr(ci.note, "partitioning green contexts unavailable on backend cpu: using none"));
    dstack_destroy(ctx);
    /* asked for what it has: no note */
    o.partitioning = DSTACK_PARTITION_NONE;
    assert_int_equal(create_cpu(&o, &ctx), DSTACK_OK);
    dstack_ctx_info_init(&ci);
    assert_int_equal(dstack_ctx_info_get(ctx, &ci), DSTACK_OK);
    assert_null(strstr(ci.note, "partitioning"));
    dstack_destroy(ctx);
}

static void test_log_level_out_of_range_is_refused(void **unused)
{
    (void)unused;
    dstack_options o;
    dstack_options_init(&o);
    o.log_level = (dstack_log_level)(DSTACK_LOG_OFF + 1);
    dstack_ctx *ctx = NULL;
    assert_int_equal(create_cpu(&o, &ctx), DSTACK_ERR_INVALID_ARGUMENT);
    assert_null(ctx);
}

static void test_log_env_var_sends_to_stderr_when_asked(void **unused)
{
    (void)unused;
    dstack_options o;
    dstack_options_init(&o);
    setenv("DSTACK_LOG", "info", 1);
    long with_env = stderr_bytes_during_create(&o);
    setenv("DSTACK_LOG", "error", 1);
    long error_only = stderr_bytes_during_create(&o);
    unsetenv("DSTACK_LOG");
    assert_true(with_env > 0);
    assert_int_equal(error_only, 0);
    /* The ready-made sink, chosen in the options. */
    o.log_fn = dstack_log_stderr;
    assert_true(stderr_bytes_during_create(&o) > 0);
}

/* Policies that hand out partitions get every range made before serving
 * (on cuda each is a green context with its handles; made on the request
 * path they stalled the device): 15 units -> 120 ranges, said at INFO.
 * Policies that use only the whole device make none. */
static void test_partitions_made_ahead_for_partitioning_policies(void **unused)
{
    (void)unused;
    const dstack_policy pols[] = {DSTACK_POLICY_DSTACK, DSTACK_POLICY_STATIC_SPATIAL, DSTACK_POLICY_TEMPORAL,
                                  DSTACK_POLICY_STREAMS};
    for (size_t i = 0; i < sizeof pols / sizeof pols[0]; i++) {
        log_capture c = {.lock = PTHREAD_MUTEX_INITIALIZER, .min = DSTACK_LOG_INFO, .want = "made ahead"};
        dstack_options o = capture_options(&c, DSTACK_LOG_INFO);
        o.backend = DSTACK_BACKEND_SIM;
        o.policy = pols[i];
        dstack_ctx *ctx = NULL;
        assert_int_equal(dstack_create(&o, &ctx), DSTACK_OK);
        dstack_destroy(ctx);
        if (pols[i] == DSTACK_POLICY_DSTACK || pols[i] == DSTACK_POLICY_STATIC_SPATIAL)
            assert_non_null(strstr(c.found, "120 partitions made ahead"));
        else
            assert_int_equal(c.found[0], 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_defaults_are_silent),
        cmocka_unit_test(test_log_callback_gets_the_backend_choice_at_info),
        cmocka_unit_test(test_log_callback_gets_nothing_below_its_level),
        cmocka_unit_test(test_log_failed_create_logs_an_error),
        cmocka_unit_test(test_log_failed_register_logs_an_error),
        cmocka_unit_test(test_partitioning_fallback_is_noted),
        cmocka_unit_test(test_log_level_out_of_range_is_refused),
        cmocka_unit_test(test_log_env_var_sends_to_stderr_when_asked),
        cmocka_unit_test(test_partitions_made_ahead_for_partitioning_policies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
