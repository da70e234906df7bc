/*
 * config.h - a Triton model's config.pbtxt (as the JSON Triton hands the
 * backend) read into the knobs of libdstack, checked against the ONNX model
 * the library loaded, and completed from it.
 *
 * No Triton call is made here, so all of it is unit-tested without a server
 * (tests/triton/test_triton_config.c).
 *
 * Parameters (config.pbtxt `parameters { key: ... value: { string_value: ... } }`):
 *   per model:   slo_us, max_batch (largest batch libdstack forms), knee_sms
 *                (fixed SM share), batch (fixed batch size), precision
 *                (fp32|tf32|fp16), deadline_us (default 0: now + slo_us)
 *   per context: backend (auto|cpu|cuda|sim), policy (dstack|temporal|streams|
 *                static_spatial|ideal), partitioning (auto|green_ctx|mps|none),
 *                queue_capacity, cpu_threads. A context serves every model of
 *                one device, so these must agree between the models on it;
 *                the server's --backend-config=dstack,KEY=VALUE sets them for
 *                all models at once.
 * Unknown keys are refused, so that a typo does not silently fall back to a
 * default.
 */
#ifndef TRITON_DSTACK_CONFIG_H
#define TRITON_DSTACK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "dstack.h"

#define TD_NAME_LEN DSTACK_NAME_LEN
#define TD_ERR_LEN 512

/* Knobs of a dstack_ctx; *_set says the value was given explicitly. */
typedef struct td_ctx_params {
    dstack_backend backend;
    dstack_policy policy;
    dstack_partitioning partitioning;
    uint32_t queue_capacity; /* 0: the library's default */
    uint32_t cpu_threads;    /* 0: the library's default */
    unsigned backend_set : 1, policy_set : 1, partitioning_set : 1, queue_capacity_set : 1,
        cpu_threads_set : 1;
} td_ctx_params;

typedef struct td_io_config {
    char name[TD_NAME_LEN];
    int fp32;     /* data_type is TYPE_FP32 */
    uint32_t rank;
    int64_t dims[DSTACK_MAX_RANK]; /* -1: any size */
} td_io_config;

typedef struct td_model_config {
    int64_t max_batch_size;     /* Triton's: samples per request, 0 = no batch dim */
    char model_filename[256];   /* default_model_filename, default model.onnx */
    td_ctx_params ctx;
    uint64_t slo_us;
    uint64_t deadline_us;
    uint32_t lib_max_batch;     /* 0: the library's default */
    uint32_t fixed_sm_count;
    uint32_t fixed_batch;
    dstack_precision precision;
    uint32_t n_inputs, n_outputs;
    td_io_config inputs[DSTACK_MAX_IO];
    td_io_config outputs[DSTACK_MAX_IO];
    int triton_batcher;         /* dynamic_batching or sequence_batching is set */
} td_model_config;

/* Name tables: value for a name, -1 if unknown. */
int td_backend_from_name(const char *name);
int td_policy_from_name(const char *name);
const char *td_backend_name(dstack_backend backend);
const char *td_policy_name(dstack_policy policy);

/* Read a model config (Triton's JSON). 0 on success; -1 with err filled. */
int td_config_parse(const char *json, size_t len, td_model_config *cfg, char *err, size_t errlen);

/* Read the server's backend config ({"cmdline": {...}}): context knobs
 * and Triton's default-max-batch-size. Keys it does not know are Triton's
 * own and are ignored. 0 on success; -1 with err filled. */
int td_backend_config_parse(const char *json, size_t len, td_ctx_params *params,
                            uint32_t *default_max_batch, char *err, size_t errlen);

/* Model-level values override the defaults: out = defaults + model's. */
void td_ctx_params_overlay(const td_ctx_params *defaults, const td_ctx_params *model,
                           td_ctx_params *out);

/* Can a model that asks for `want` run on a context created with `have`?
 * Only what the model set explicitly must match. 0 yes; -1 with err. */
int td_ctx_params_compatible(const td_ctx_params *have, const td_ctx_params *want, char *err,
                             size_t errlen);

/* Check the config's batch size, inputs and outputs against the model the
 * library loaded. 0 if they agree; -1 with err saying what differs. */
int td_config_check_model(const td_model_config *cfg, const dstack_model_info *info, char *err,
                          size_t errlen);

/* Fill what the config leaves out from the model: every input when none is
 * listed, every output when none is listed, and max_batch_size (as
 * default_max_batch) when inputs were filled and the model is batchable.
 * Returns a new JSON string for TRITONBACKEND_ModelSetConfig (free() it), or
 * NULL with *changed 0 when nothing was missing, or NULL with err on error. */
char *td_config_autocomplete(const char *json, size_t len, const dstack_model_info *info,
                             uint32_t default_max_batch, int *changed, char *err, size_t errlen);

#endif /* TRITON_DSTACK_CONFIG_H */
