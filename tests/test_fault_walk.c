/* test_fault_walk.c - SQLite-style fault injection through the public API.
 *
 * One scenario - create a context, register a model from a file and one
 * from bytes, submit, poll, unregister, shut down, destroy - is run again
 * and again with the n-th allocation / thread creation / file read made to
 * fail (src/util/fault.h), n = 1, 2, ... until a run completes with no fault
 * left to inject. Each run must end with clean statuses, every accepted
 * ticket answered exactly once and, under make sanitize, no leak (LSan
 * checks at exit). A second walk makes every call from the n-th on fail
 * (a persistent out-of-memory), which exercises the cleanup paths of the
 * cleanup paths.
 *
 * The scheduler (src/sched: the core, the real-time driver, the policies)
 * and the planner thread use the wrappers too, so their allocation and
 * thread-creation sites are in the walk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_common.h"
#include "hostile_models.h"
#include "util/fault.h"

#define REQUESTS 6

typedef struct walk_stats {
    uint64_t runs, faults, ok_registers, accepted, answered;
    uint64_t max_calls;
} walk_stats;

static int allowed(dstack_status st)
{
    return st == DSTACK_OK || st == DSTACK_ERR_OUT_OF_MEMORY || st == DSTACK_ERR_IO ||
           st == DSTACK_ERR_PARSE || st == DSTACK_ERR_NOT_FOUND;
}

#define CHECK_CLEAN(st)                                                                            \
    do {                                                                                           \
        if (!allowed(st))                                                                          \
            fail_msg("run %llu: status %s (%s)", (unsigned long long)n, dstack_strerror(st),       \
                     dstack_last_error());                                                         \
    } while (0)

static float in_data[REQUESTS][TINY_IN_FLOATS], out_data[REQUESTS][TINY_OUT_FLOATS];

/* One scenario with the n-th call failing; returns whether a fault fired. */
static int run_scenario(uint64_t n, bool sticky, const pbuf *chain, walk_stats *ws)
{
    ds_fault_arm(n, DS_FAULT_ALL, sticky);
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.cpu_threads = 2; /* one pool thread to fail to start */
    o.queue_capacity = 4;
    dstack_ctx *ctx = NULL;
    dstack_status st = dstack_create(&o, &ctx);
    CHECK_CLEAN(st);
    if (st != DSTACK_OK) {
        assert_null(ctx);
        goto out;
    }
    dstack_model *tiny = NULL, *bytes_model = NULL;
    st = register_tiny(ctx, 4, 0, &tiny);
    CHECK_CLEAN(st);
    ws->ok_registers += st == DSTACK_OK;
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_BYTES;
    d.bytes = chain->p;
    d.n_bytes = chain->n;
    d.max_batch = 2;
    st = dstack_register_model(ctx, &d, &bytes_model);
    CHECK_CLEAN(st);
    dstack_model *zoo = NULL;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ZOO;
    d.path = "squeezenet1_1";
    d.zoo_image_size = 64;
    d.zoo_classes = 10;
    d.max_batch = 2;
    st = dstack_register_model(ctx, &d, &zoo);
    CHECK_CLEAN(st);
    void *host = NULL;
    st = dstack_host_alloc(ctx, 4096, &host);
    CHECK_CLEAN(st);
    dstack_host_free(ctx, host);
    int answered[REQUESTS] = {0}, accepted = 0;
    dstack_ticket tickets[REQUESTS];
    dstack_buffer ib[REQUESTS], ob[REQUESTS];
    for (int i = 0; tiny && i < REQUESTS; i++) {
        ib[i] = (dstack_buffer){in_data[i], sizeof in_data[i]};
        ob[i] = (dstack_buffer){out_data[i], sizeof out_data[i]};
        dstack_request r;
        dstack_request_init(&r);
        r.inputs = &ib[i];
        r.n_inputs = 1;
        r.outputs = &ob[i];
        r.n_outputs = 1;
        r.user_data = &answered[i];
        st = dstack_submit(ctx, tiny, &r, &tickets[i]);
        if (st == DSTACK_OK)
            accepted++;
        else if (st == DSTACK_ERR_QUEUE_FULL)
            answered[i] = -1; /* never accepted */
        else
            fail_msg("run %llu: submit gave %s", (unsigned long long)n, dstack_strerror(st));
        if (i == REQUESTS / 2) { /* drain some while the rest are queued */
            dstack_completion c[REQUESTS];
            size_t got = 0;
            assert_int_equal(dstack_poll(ctx, c, REQUESTS, 100000, &got), DSTACK_OK);
            for (size_t k = 0; k < got; k++)
                (*(int *)c[k].user_data)++;
        }
    }
    if (bytes_model)
        assert_int_equal(dstack_unregister_model(ctx, bytes_model), DSTACK_OK);
    if (zoo && n % 3 == 0)
        assert_int_equal(dstack_unregister_model(ctx, zoo), DSTACK_OK);
    if (tiny && n % 2) /* half the runs unregister, half leave it to shutdown */
        assert_int_equal(dstack_unregister_model(ctx, tiny), DSTACK_OK);
    assert_int_equal(dstack_shutdown(ctx), DSTACK_OK);
    dstack_completion c[REQUESTS];
    size_t got = 0;
    while ((st = dstack_poll(ctx, c, REQUESTS, 1000000, &got)) == DSTACK_OK)
        for (size_t k = 0; k < got; k++)
            (*(int *)c[k].user_data)++;
    assert_int_equal(st, DSTACK_ERR_SHUTTING_DOWN);
    for (int i = 0; tiny && i < REQUESTS; i++)
        if (answered[i] != -1 && answered[i] != 1)
            fail_msg("run %llu: ticket of request %d answered %d times", (unsigned long long)n, i,
                     answered[i]);
    ws->accepted += (uint64_t)accepted;
    ws->answered += (uint64_t)accepted;
    dstack_destroy(ctx);
out:
    ds_fault_disarm();
    if (ds_fault_calls() > ws->max_calls)
        ws->max_calls = ds_fault_calls();
    ws->runs++;
    int fired = ds_fault_fired();
    ws->faults += fired;
    return fired;
}

static void walk(bool sticky)
{
    pbuf chain = hm_chain(8, "Relu", 0);
    walk_stats ws = {0};
    uint64_t n = 1;
    while (run_scenario(n, sticky, &chain, &ws))
        n++;
    hm_free(&chain);
    print_message("%s walk: %llu runs, %llu faults injected, %llu wrapped calls in a clean run, "
                  "%llu models registered, %llu tickets accepted, all answered once\n",
                  sticky ? "persistent" : "single", (unsigned long long)ws.runs,
                  (unsigned long long)ws.faults, (unsigned long long)ws.max_calls,
                  (unsigned long long)ws.ok_registers, (unsigned long long)ws.accepted);
    assert_true(ws.faults > 100); /* the walk really reached the library */
    assert_int_equal(ws.faults, ws.runs - 1);
}

static void test_each_single_fault_gives_a_clean_status_and_loses_nothing(void **state)
{
    (void)state;
    walk(false);
}

static void test_persistent_faults_from_each_point_on_clean_up(void **state)
{
    (void)state;
    walk(true);
}

int main(void)
{
    (void)open_cpu; /* api_common.h helpers this file does not need */
    (void)load_tiny_reference;
    (void)max_rel_err;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_single_fault_gives_a_clean_status_and_loses_nothing),
        cmocka_unit_test(test_persistent_faults_from_each_point_on_clean_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
