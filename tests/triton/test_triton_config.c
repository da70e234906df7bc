/* test_triton_config.c - the Triton backend's config handling (triton/config.c):
 * parameters, refusals, checks against the model and auto-completion, on
 * the JSON Triton hands a backend, without a server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

/* The model of tests/triton/make_models.py's mlp2: a, b [1,16] -> logits [1,4], hidden [1,32]. */
static dstack_model_info mlp2_info(void)
{
    dstack_model_info info;
    memset(&info, 0, sizeof info);
    info.n_inputs = 2;
    info.n_outputs = 2;
    const char *names[4] = {"a", "b", "logits", "hidden"};
    int64_t widths[4] = {16, 16, 4, 32};
    for (int i = 0; i < 4; i++) {
        dstack_tensor_info *t = i < 2 ? &info.inputs[i] : &info.outputs[i - 2];
        strcpy(t->name, names[i]);
        t->rank = 2;
        t->dims[0] = 1;
        t->dims[1] = widths[i];
        t->bytes = (size_t)widths[i] * 4;
    }
    return info;
}

static int parse(const char *json, td_model_config *cfg, char *err)
{
    return td_config_parse(json, strlen(json), cfg, err, TD_ERR_LEN);
}

static void test_parameters_set_model_and_context_knobs(void **state)
{
    (void)state;
    td_model_config cfg;
    char err[TD_ERR_LEN];
    const char *json =
        "{\"name\":\"m\",\"max_batch_size\":8,\"default_model_filename\":\"net.onnx\","
        "\"parameters\":{\"slo_us\":{\"string_value\":\"5000\"},"
        "\"policy\":{\"string_value\":\"temporal\"},\"precision\":{\"string_value\":\"fp16\"},"
        "\"knee_sms\":{\"string_value\":\"32\"},\"batch\":{\"string_value\":\"4\"},"
        "\"max_batch\":{\"string_value\":\"16\"},\"backend\":{\"string_value\":\"cpu\"}}}";
    assert_int_equal(parse(json, &cfg, err), 0);
    assert_int_equal(cfg.max_batch_size, 8);
    assert_string_equal(cfg.model_filename, "net.onnx");
    assert_int_equal(cfg.slo_us, 5000);
    assert_int_equal(cfg.precision, DSTACK_PRECISION_FP16);
    assert_int_equal(cfg.fixed_sm_count, 32);
    assert_int_equal(cfg.fixed_batch, 4);
    assert_int_equal(cfg.lib_max_batch, 16);
    assert_true(cfg.ctx.policy_set);
    assert_int_equal(cfg.ctx.policy, DSTACK_POLICY_TEMPORAL);
    assert_true(cfg.ctx.backend_set);
    assert_int_equal(cfg.ctx.backend, DSTACK_BACKEND_CPU);
    assert_false(cfg.ctx.queue_capacity_set);
    assert_false(cfg.triton_batcher);
}

static void test_unknown_parameter_is_refused_by_name(void **state)
{
    (void)state;
    td_model_config cfg;
    char err[TD_ERR_LEN];
    assert_int_equal(parse("{\"parameters\":{\"slo\":{\"string_value\":\"5\"}}}", &cfg, err), -1);
    assert_non_null(strstr(err, "'slo'"));
    assert_int_equal(parse("{\"parameters\":{\"policy\":{\"string_value\":\"fast\"}}}", &cfg, err),
                     -1);
    assert_non_null(strstr(err, "'fast'"));
    assert_int_equal(parse("{\"parameters\":{\"slo_us\":{\"string_value\":\"-3\"}}}", &cfg, err),
                     -1);
}

static void test_dims_as_strings_and_batcher_detected(void **state)
{
    (void)state;
    td_model_config cfg;
    char err[TD_ERR_LEN];
    const char *json = "{\"max_batch_size\":\"4\",\"dynamic_batching\":{},"
                       "\"input\":[{\"name\":\"a\",\"data_type\":\"TYPE_FP32\",\"dims\":[\"16\"]}]}";
    assert_int_equal(parse(json, &cfg, err), 0);
    assert_int_equal(cfg.max_batch_size, 4);
    assert_true(cfg.triton_batcher);
    assert_int_equal(cfg.n_inputs, 1);
    assert_int_equal(cfg.inputs[0].rank, 1);
    assert_int_equal(cfg.inputs[0].dims[0], 16);
}

static void test_non_fp32_input_is_refused(void **state)
{
    (void)state;
    td_model_config cfg;
    char err[TD_ERR_LEN];
    const char *json = "{\"input\":[{\"name\":\"a\",\"data_type\":\"TYPE_INT64\",\"dims\":[16]}]}";
    assert_int_equal(parse(json, &cfg, err), -1);
    assert_non_null(strstr(err, "TYPE_FP32"));
}

static void test_check_accepts_matching_config(void **state)
{
    (void)state;
    dstack_model_info info = mlp2_info();
    td_model_config cfg;
    char err[TD_ERR_LEN];
    const char *json = "{\"max_batch_size\":8,"
                       "\"input\":[{\"name\":\"b\",\"data_type\":\"TYPE_FP32\",\"dims\":[\"16\"]},"
                       "{\"name\":\"a\",\"data_type\":\"TYPE_FP32\",\"dims\":[\"-1\"]}],"
                       "\"output\":[{\"name\":\"hidden\",\"data_type\":\"TYPE_FP32\",\"dims\":[32]}]}";
    assert_int_equal(parse(json, &cfg, err), 0);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), 0);
}

static void test_check_names_the_wrong_dims(void **state)
{
    (void)state;
    dstack_model_info info = mlp2_info();
    td_model_config cfg;
    char err[TD_ERR_LEN];
    const char *json = "{\"max_batch_size\":8,"
                       "\"input\":[{\"name\":\"a\",\"dims\":[15]},{\"name\":\"b\",\"dims\":[16]}]}";
    assert_int_equal(parse(json, &cfg, err), 0);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), -1);
    assert_non_null(strstr(err, "'a'"));
    assert_non_null(strstr(err, "[15]"));
    assert_non_null(strstr(err, "[16]"));
}

static void test_check_without_batching_wants_the_batch_dim(void **state)
{
    (void)state;
    dstack_model_info info = mlp2_info();
    td_model_config cfg;
    char err[TD_ERR_LEN];
    const char *bad = "{\"input\":[{\"name\":\"a\",\"dims\":[16]},{\"name\":\"b\",\"dims\":[16]}]}";
    assert_int_equal(parse(bad, &cfg, err), 0);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), -1);
    const char *good =
        "{\"input\":[{\"name\":\"a\",\"dims\":[1,16]},{\"name\":\"b\",\"dims\":[1,16]}]}";
    assert_int_equal(parse(good, &cfg, err), 0);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), 0);
}

static void test_check_refuses_missing_input_and_unknown_output(void **state)
{
    (void)state;
    dstack_model_info info = mlp2_info();
    td_model_config cfg;
    char err[TD_ERR_LEN];
    assert_int_equal(parse("{\"max_batch_size\":2,\"input\":[{\"name\":\"a\",\"dims\":[16]}]}",
                           &cfg, err), 0);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), -1);
    assert_non_null(strstr(err, "1 inputs"));
    assert_int_equal(parse("{\"max_batch_size\":2,\"input\":[{\"name\":\"a\",\"dims\":[16]},"
                           "{\"name\":\"b\",\"dims\":[16]}],\"output\":[{\"name\":\"probs\","
                           "\"dims\":[4]}]}", &cfg, err), 0);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), -1);
    assert_non_null(strstr(err, "'probs'"));
}

static void test_check_refuses_batching_a_model_without_batch_dim(void **state)
{
    (void)state;
    dstack_model_info info = mlp2_info();
    info.inputs[0].dims[0] = 2;
    td_model_config cfg;
    char err[TD_ERR_LEN];
    assert_int_equal(parse("{\"max_batch_size\":2}", &cfg, err), 0);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), -1);
    assert_non_null(strstr(err, "max_batch_size 0"));
}

static void test_autocomplete_fills_inputs_outputs_and_batch(void **state)
{
    (void)state;
    dstack_model_info info = mlp2_info();
    int changed = 0;
    char err[TD_ERR_LEN];
    const char *json = "{\"name\":\"mlp2\",\"backend\":\"dstack\"}";
    char *filled = td_config_autocomplete(json, strlen(json), &info, 8, &changed, err, sizeof err);
    assert_non_null(filled);
    assert_true(changed);
    td_model_config cfg;
    assert_int_equal(parse(filled, &cfg, err), 0);
    assert_int_equal(cfg.max_batch_size, 8);
    assert_int_equal(cfg.n_inputs, 2);
    assert_int_equal(cfg.n_outputs, 2);
    assert_string_equal(cfg.outputs[1].name, "hidden");
    assert_int_equal(cfg.outputs[1].rank, 1);
    assert_int_equal(cfg.outputs[1].dims[0], 32);
    assert_int_equal(td_config_check_model(&cfg, &info, err, sizeof err), 0);
    free(filled);
}

static void test_autocomplete_leaves_a_complete_config_alone(void **state)
{
    (void)state;
    dstack_model_info info = mlp2_info();
    int changed = 1;
    char err[TD_ERR_LEN];
    const char *json = "{\"max_batch_size\":2,\"input\":[{\"name\":\"a\",\"dims\":[16]},"
                       "{\"name\":\"b\",\"dims\":[16]}],\"output\":[{\"name\":\"logits\","
                       "\"dims\":[4]}]}";
    assert_null(td_config_autocomplete(json, strlen(json), &info, 8, &changed, err, sizeof err));
    assert_false(changed);
}

static void test_backend_config_reads_knobs_and_ignores_tritons_keys(void **state)
{
    (void)state;
    td_ctx_params p;
    uint32_t mbs = 0;
    char err[TD_ERR_LEN];
    const char *json = "{\"cmdline\":{\"backend-directory\":\"/x\",\"default-max-batch-size\":\"6\","
                       "\"policy\":\"temporal\",\"queue_capacity\":\"64\"}}";
    assert_int_equal(td_backend_config_parse(json, strlen(json), &p, &mbs, err, sizeof err), 0);
    assert_int_equal(mbs, 6);
    assert_true(p.policy_set);
    assert_int_equal(p.policy, DSTACK_POLICY_TEMPORAL);
    assert_int_equal(p.queue_capacity, 64);
    const char *bad = "{\"cmdline\":{\"policy\":\"nope\"}}";
    assert_int_equal(td_backend_config_parse(bad, strlen(bad), &p, &mbs, err, sizeof err), -1);
}

static void test_context_params_conflict_only_when_set(void **state)
{
    (void)state;
    td_ctx_params have, want, defaults, merged;
    memset(&have, 0, sizeof have);
    memset(&want, 0, sizeof want);
    memset(&defaults, 0, sizeof defaults);
    char err[TD_ERR_LEN];
    have.policy = DSTACK_POLICY_TEMPORAL;
    assert_int_equal(td_ctx_params_compatible(&have, &want, err, sizeof err), 0);
    want.policy = DSTACK_POLICY_DSTACK;
    want.policy_set = 1;
    assert_int_equal(td_ctx_params_compatible(&have, &want, err, sizeof err), -1);
    assert_non_null(strstr(err, "temporal"));
    defaults.queue_capacity = 7;
    defaults.queue_capacity_set = 1;
    td_ctx_params_overlay(&defaults, &want, &merged);
    assert_int_equal(merged.queue_capacity, 7);
    assert_int_equal(merged.policy, DSTACK_POLICY_DSTACK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parameters_set_model_and_context_knobs),
        cmocka_unit_test(test_unknown_parameter_is_refused_by_name),
        cmocka_unit_test(test_dims_as_strings_and_batcher_detected),
        cmocka_unit_test(test_non_fp32_input_is_refused),
        cmocka_unit_test(test_check_accepts_matching_config),
        cmocka_unit_test(test_check_names_the_wrong_dims),
        cmocka_unit_test(test_check_without_batching_wants_the_batch_dim),
        cmocka_unit_test(test_check_refuses_missing_input_and_unknown_output),
        cmocka_unit_test(test_check_refuses_batching_a_model_without_batch_dim),
        cmocka_unit_test(test_autocomplete_fills_inputs_outputs_and_batch),
        cmocka_unit_test(test_autocomplete_leaves_a_complete_config_alone),
        cmocka_unit_test(test_backend_config_reads_knobs_and_ignores_tritons_keys),
        cmocka_unit_test(test_context_params_conflict_only_when_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
