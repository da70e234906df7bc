/*
 * config.c - config.pbtxt (Triton's JSON form) to libdstack knobs; see
 * config.h. Parsed with cJSON: Triton writes protobuf's JSON mapping, where
 * int64 fields (dims, max_batch_size in some versions) may come as strings,
 * so every integer is read through json_int, which accepts both.
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct name_value {
    const char *name;
    int value;
} name_value;

static const name_value BACKENDS[] = {
    {"auto", DSTACK_BACKEND_AUTO}, {"cpu", DSTACK_BACKEND_CPU},
    {"cuda", DSTACK_BACKEND_CUDA}, {"sim", DSTACK_BACKEND_SIM}, {NULL, 0}};
static const name_value POLICIES[] = {
    {"dstack", DSTACK_POLICY_DSTACK},     {"temporal", DSTACK_POLICY_TEMPORAL},
    {"streams", DSTACK_POLICY_STREAMS},   {"static_spatial", DSTACK_POLICY_STATIC_SPATIAL},
    {"ideal", DSTACK_POLICY_IDEAL},       {NULL, 0}};
static const name_value PARTITIONINGS[] = {
    {"auto", DSTACK_PARTITION_AUTO}, {"green_ctx", DSTACK_PARTITION_GREEN_CTX},
    {"mps", DSTACK_PARTITION_MPS},   {"none", DSTACK_PARTITION_NONE}, {NULL, 0}};
static const name_value PRECISIONS[] = {
    {"fp32", DSTACK_PRECISION_FP32}, {"tf32", DSTACK_PRECISION_TF32},
    {"fp16", DSTACK_PRECISION_FP16}, {NULL, 0}};

static int lookup(const name_value *table, const char *name)
{
    for (; table->name; table++)
        if (strcmp(table->name, name) == 0)
            return table->value;
    return -1;
}

static const char *reverse(const name_value *table, int value)
{
    for (; table->name; table++)
        if (table->value == value)
            return table->name;
    return "?";
}

int td_backend_from_name(const char *name) { return lookup(BACKENDS, name); }
int td_policy_from_name(const char *name) { return lookup(POLICIES, name); }
const char *td_backend_name(dstack_backend backend) { return reverse(BACKENDS, (int)backend); }
const char *td_policy_name(dstack_policy policy) { return reverse(POLICIES, (int)policy); }

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* An integer given as a JSON number or a decimal string. */
static int json_int(const cJSON *item, int64_t *out)
{
    if (cJSON_IsNumber(item)) {
        *out = (int64_t)item->valuedouble;
        return 0;
    }
    if (cJSON_IsString(item) && item->valuestring[0]) {
        char *end;
        errno = 0;
        long long v = strtoll(item->valuestring, &end, 10);
        if (errno || *end)
            return -1;
        *out = v;
        return 0;
    }
    return -1;
}

static int parse_u64(const char *text, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!text[0] || text[0] == '-')
        return -1;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* One parameter: a context knob (into ctx) or a model knob (into cfg). */
static int set_param(const char *key, const char *value, td_ctx_params *ctx,
                     td_model_config *cfg, char *err, size_t errlen)
{
    uint64_t v = 0;
    int e;
    if (strcmp(key, "backend") == 0) {
        if ((e = lookup(BACKENDS, value)) < 0)
            return fail(err, errlen, "parameter backend: '%s' is not auto, cpu, cuda or sim", value);
        ctx->backend = (dstack_backend)e;
        ctx->backend_set = 1;
    } else if (strcmp(key, "policy") == 0) {
        if ((e = lookup(POLICIES, value)) < 0)
            return fail(err, errlen, "parameter policy: '%s' is not dstack, temporal, streams, "
                        "static_spatial or ideal", value);
        ctx->policy = (dstack_policy)e;
        ctx->policy_set = 1;
    } else if (strcmp(key, "partitioning") == 0) {
        if ((e = lookup(PARTITIONINGS, value)) < 0)
            return fail(err, errlen, "parameter partitioning: '%s' is not auto, green_ctx, mps "
                        "or none", value);
        ctx->partitioning = (dstack_partitioning)e;
        ctx->partitioning_set = 1;
    } else if (strcmp(key, "queue_capacity") == 0 || strcmp(key, "cpu_threads") == 0) {
        if (parse_u64(value, UINT32_MAX, &v) < 0)
            return fail(err, errlen, "parameter %s: '%s' is not a count", key, value);
        if (key[0] == 'q') {
            ctx->queue_capacity = (uint32_t)v;
            ctx->queue_capacity_set = 1;
        } else {
            ctx->cpu_threads = (uint32_t)v;
            ctx->cpu_threads_set = 1;
        }
    } else if (!cfg) {
        return 1; /* a backend-config key that is Triton's own */
    } else if (strcmp(key, "precision") == 0) {
        if ((e = lookup(PRECISIONS, value)) < 0)
            return fail(err, errlen, "parameter precision: '%s' is not fp32, tf32 or fp16", value);
        cfg->precision = (dstack_precision)e;
    } else if (strcmp(key, "slo_us") == 0 || strcmp(key, "deadline_us") == 0) {
        if (parse_u64(value, UINT64_MAX / 1000, &v) < 0)
            return fail(err, errlen, "parameter %s: '%s' is not a number of microseconds", key,
                        value);
        *(key[0] == 's' ? &cfg->slo_us : &cfg->deadline_us) = v;
    } else if (strcmp(key, "max_batch") == 0 || strcmp(key, "knee_sms") == 0 ||
               strcmp(key, "batch") == 0) {
        if (parse_u64(value, UINT32_MAX, &v) < 0)
            return fail(err, errlen, "parameter %s: '%s' is not a count", key, value);
        uint32_t *dst = strcmp(key, "max_batch") == 0  ? &cfg->lib_max_batch
                        : strcmp(key, "knee_sms") == 0 ? &cfg->fixed_sm_count
                                                       : &cfg->fixed_batch;
        *dst = (uint32_t)v;
    } else {
        return fail(err, errlen, "unknown parameter '%s' (known: slo_us, deadline_us, max_batch, "
                    "knee_sms, batch, precision, backend, policy, partitioning, queue_capacity, "
                    "cpu_threads)", key);
    }
    return 0;
}

static int parse_io(const cJSON *list, const char *what, td_io_config *out, uint32_t *n,
                    char *err, size_t errlen)
{
    *n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list) {
        if (*n == DSTACK_MAX_IO)
            return fail(err, errlen, "more than %d %ss", DSTACK_MAX_IO, what);
        td_io_config *io = &out[(*n)++];
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "data_type");
        const cJSON *dims = cJSON_GetObjectItemCaseSensitive(item, "dims");
        if (!cJSON_IsString(name) || strlen(name->valuestring) >= TD_NAME_LEN)
            return fail(err, errlen, "%s %u: missing or too long name", what, *n - 1);
        snprintf(io->name, sizeof io->name, "%s", name->valuestring);
        io->fp32 = !type || (cJSON_IsString(type) && strcmp(type->valuestring, "TYPE_FP32") == 0);
        if (!io->fp32)
            return fail(err, errlen, "%s '%s': data_type %s, but libdstack serves TYPE_FP32 only",
                        what, io->name, cJSON_IsString(type) ? type->valuestring : "?");
        io->rank = 0;
        const cJSON *d;
        cJSON_ArrayForEach(d, dims) {
            if (io->rank == DSTACK_MAX_RANK)
                return fail(err, errlen, "%s '%s': more than %d dims", what, io->name,
                            DSTACK_MAX_RANK);
            if (json_int(d, &io->dims[io->rank]) < 0)
                return fail(err, errlen, "%s '%s': dims are not integers", what, io->name);
            io->rank++;
        }
    }
    return 0;
}

int td_config_parse(const char *json, size_t len, td_model_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->model_filename, sizeof cfg->model_filename, "model.onnx");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(err, errlen, "model config is not a JSON object");
    }
    int rc = -1;
    const cJSON *mbs = cJSON_GetObjectItemCaseSensitive(root, "max_batch_size");
    if (mbs && (json_int(mbs, &cfg->max_batch_size) < 0 || cfg->max_batch_size < 0)) {
        fail(err, errlen, "max_batch_size is not a count");
        goto out;
    }
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(root, "default_model_filename");
    if (cJSON_IsString(file) && file->valuestring[0]) {
        if (strchr(file->valuestring, '/') || strlen(file->valuestring) >= sizeof cfg->model_filename) {
            fail(err, errlen, "default_model_filename '%s' must be a plain file name",
                 file->valuestring);
            goto out;
        }
        snprintf(cfg->model_filename, sizeof cfg->model_filename, "%s", file->valuestring);
    }
    cfg->triton_batcher = cJSON_GetObjectItemCaseSensitive(root, "dynamic_batching") != NULL ||
                          cJSON_GetObjectItemCaseSensitive(root, "sequence_batching") != NULL;
    const cJSON *param;
    cJSON_ArrayForEach(param, cJSON_GetObjectItemCaseSensitive(root, "parameters")) {
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(param, "string_value");
        if (!cJSON_IsString(sv)) {
            fail(err, errlen, "parameter '%s' has no string_value", param->string);
            goto out;
        }
        if (set_param(param->string, sv->valuestring, &cfg->ctx, cfg, err, errlen) < 0)
            goto out;
    }
    if (parse_io(cJSON_GetObjectItemCaseSensitive(root, "input"), "input", cfg->inputs,
                 &cfg->n_inputs, err, errlen) < 0 ||
        parse_io(cJSON_GetObjectItemCaseSensitive(root, "output"), "output", cfg->outputs,
                 &cfg->n_outputs, err, errlen) < 0)
        goto out;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int td_backend_config_parse(const char *json, size_t len, td_ctx_params *params,
                            uint32_t *default_max_batch, char *err, size_t errlen)
{
    memset(params, 0, sizeof *params);
    *default_max_batch = 4; /* Triton's own default for --backend-config default-max-batch-size */
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(err, errlen, "backend config is not a JSON object");
    }
    int rc = 0;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(root, "cmdline")) {
        if (!cJSON_IsString(kv))
            continue;
        if (strcmp(kv->string, "default-max-batch-size") == 0) {
            uint64_t v;
            if (parse_u64(kv->valuestring, UINT32_MAX, &v) == 0)
                *default_max_batch = (uint32_t)v;
            continue;
        }
        if (set_param(kv->string, kv->valuestring, params, NULL, err, errlen) < 0) {
            rc = -1;
            break;
        }
    }
    cJSON_Delete(root);
    return rc;
}

void td_ctx_params_overlay(const td_ctx_params *defaults, const td_ctx_params *model,
                           td_ctx_params *out)
{
    *out = *defaults;
    if (model->backend_set) {
        out->backend = model->backend;
        out->backend_set = 1;
    }
    if (model->policy_set) {
        out->policy = model->policy;
        out->policy_set = 1;
    }
    if (model->partitioning_set) {
        out->partitioning = model->partitioning;
        out->partitioning_set = 1;
    }
    if (model->queue_capacity_set) {
        out->queue_capacity = model->queue_capacity;
        out->queue_capacity_set = 1;
    }
    if (model->cpu_threads_set) {
        out->cpu_threads = model->cpu_threads;
        out->cpu_threads_set = 1;
    }
}

int td_ctx_params_compatible(const td_ctx_params *have, const td_ctx_params *want, char *err,
                             size_t errlen)
{
    if (want->backend_set && want->backend != have->backend)
        return fail(err, errlen, "the server runs libdstack's %s backend, the model asks for %s",
                    td_backend_name(have->backend), td_backend_name(want->backend));
    if (want->policy_set && want->policy != have->policy)
        return fail(err, errlen, "the device's libdstack context runs policy %s, the model asks "
                    "for %s: models on one device share one scheduler, so set the policy once "
                    "(--backend-config=dstack,policy=NAME)",
                    td_policy_name(have->policy), td_policy_name(want->policy));
    if (want->partitioning_set && want->partitioning != have->partitioning)
        return fail(err, errlen, "the device's libdstack context uses another partitioning than "
                    "the model asks for");
    if (want->queue_capacity_set && want->queue_capacity != have->queue_capacity)
        return fail(err, errlen, "the device's libdstack context has queue_capacity %u, the "
                    "model asks for %u", have->queue_capacity, want->queue_capacity);
    if (want->cpu_threads_set && want->cpu_threads != have->cpu_threads)
        return fail(err, errlen, "the device's libdstack context has cpu_threads %u, the model "
                    "asks for %u", have->cpu_threads, want->cpu_threads);
    return 0;
}

static void format_dims(const int64_t *dims, uint32_t rank, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    at += (size_t)snprintf(buf, len, "[");
    for (uint32_t i = 0; i < rank && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

/* The dims a config must list for tensor t: without the batch dim when
 * Triton batches (max_batch_size > 0), all of them otherwise. */
static void expected_dims(const dstack_tensor_info *t, int batched, int64_t *dims, uint32_t *rank)
{
    uint32_t skip = batched ? 1 : 0;
    *rank = t->rank - skip;
    for (uint32_t i = 0; i < *rank; i++)
        dims[i] = t->dims[i + skip];
}

static const dstack_tensor_info *find_tensor(const dstack_tensor_info *ts, uint32_t n,
                                             const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0)
            return &ts[i];
    return NULL;
}

static int check_io(const td_io_config *io, uint32_t n, const dstack_tensor_info *ts,
                    uint32_t n_model, int batched, const char *what, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < n; i++) {
        const dstack_tensor_info *t = find_tensor(ts, n_model, io[i].name);
        if (!t)
            return fail(err, errlen, "config %s '%s' is not a%s %s of the ONNX model", what,
                        io[i].name, what[0] == 'i' ? "n" : "", what);
        int64_t want[DSTACK_MAX_RANK];
        uint32_t rank;
        expected_dims(t, batched, want, &rank);
        int same = rank == io[i].rank;
        for (uint32_t d = 0; same && d < rank; d++)
            same = io[i].dims[d] == -1 || io[i].dims[d] == want[d];
        if (!same) {
            char got_s[128], want_s[128];
            format_dims(io[i].dims, io[i].rank, got_s, sizeof got_s);
            format_dims(want, rank, want_s, sizeof want_s);
            return fail(err, errlen, "config %s '%s' has dims %s, the ONNX model has %s%s", what,
                        io[i].name, got_s, want_s,
                        batched ? " (without the batch dimension, since max_batch_size > 0)"
                                : " (with the batch dimension, since max_batch_size is 0)");
        }
    }
    return 0;
}

int td_config_check_model(const td_model_config *cfg, const dstack_model_info *info, char *err,
                          size_t errlen)
{
    int batched = cfg->max_batch_size > 0;
    if (batched) {
        for (uint32_t i = 0; i < info->n_inputs + info->n_outputs; i++) {
            const dstack_tensor_info *t =
                i < info->n_inputs ? &info->inputs[i] : &info->outputs[i - info->n_inputs];
            if (t->rank < 1 || t->dims[0] != 1)
                return fail(err, errlen, "max_batch_size %lld, but the ONNX model's tensor '%s' "
                            "has no batch dimension of 1 to batch along: set max_batch_size 0",
                            (long long)cfg->max_batch_size, t->name);
        }
    }
    if (cfg->n_inputs != info->n_inputs)
        return fail(err, errlen, "config lists %u inputs, the ONNX model has %u", cfg->n_inputs,
                    info->n_inputs);
    if (check_io(cfg->inputs, cfg->n_inputs, info->inputs, info->n_inputs, batched, "input", err,
                 errlen) < 0)
        return -1;
    return check_io(cfg->outputs, cfg->n_outputs, info->outputs, info->n_outputs, batched,
                    "output", err, errlen);
}

static cJSON *io_json(const dstack_tensor_info *t, int batched)
{
    cJSON *io = cJSON_CreateObject();
    cJSON_AddStringToObject(io, "name", t->name);
    cJSON_AddStringToObject(io, "data_type", "TYPE_FP32");
    cJSON *dims = cJSON_AddArrayToObject(io, "dims");
    for (uint32_t d = batched ? 1 : 0; d < t->rank; d++)
        cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)t->dims[d]));
    return io;
}

static int batchable(const dstack_model_info *info)
{
    for (uint32_t i = 0; i < info->n_inputs + info->n_outputs; i++) {
        const dstack_tensor_info *t =
            i < info->n_inputs ? &info->inputs[i] : &info->outputs[i - info->n_inputs];
        if (t->rank < 1 || t->dims[0] != 1)
            return 0;
    }
    return 1;
}

static int empty_list(const cJSON *list) { return !list || cJSON_GetArraySize(list) == 0; }

char *td_config_autocomplete(const char *json, size_t len, const dstack_model_info *info,
                             uint32_t default_max_batch, int *changed, char *err, size_t errlen)
{
    *changed = 0;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        fail(err, errlen, "model config is not a JSON object");
        return NULL;
    }
    int64_t mbs = 0;
    const cJSON *mbs_item = cJSON_GetObjectItemCaseSensitive(root, "max_batch_size");
    if (mbs_item)
        json_int(mbs_item, &mbs);
    int fill_in = empty_list(cJSON_GetObjectItemCaseSensitive(root, "input"));
    int fill_out = empty_list(cJSON_GetObjectItemCaseSensitive(root, "output"));
    if (fill_in && mbs == 0 && batchable(info) && default_max_batch > 0) {
        mbs = default_max_batch;
        cJSON_DeleteItemFromObjectCaseSensitive(root, "max_batch_size");
        cJSON_AddNumberToObject(root, "max_batch_size", (double)mbs);
        *changed = 1;
    }
    const struct {
        int fill;
        const char *key;
        const dstack_tensor_info *ts;
        uint32_t n;
    } lists[2] = {{fill_in, "input", info->inputs, info->n_inputs},
                  {fill_out, "output", info->outputs, info->n_outputs}};
    for (int l = 0; l < 2; l++) {
        if (!lists[l].fill)
            continue;
        cJSON_DeleteItemFromObjectCaseSensitive(root, lists[l].key);
        cJSON *arr = cJSON_AddArrayToObject(root, lists[l].key);
        for (uint32_t i = 0; i < lists[l].n; i++)
            cJSON_AddItemToArray(arr, io_json(&lists[l].ts[i], mbs > 0));
        *changed = 1;
    }
    char *out = *changed ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (*changed && !out)
        fail(err, errlen, "out of memory writing the completed config");
    return out;
}
