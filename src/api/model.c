/* model.c - registering models: load (zoo or ONNX), fold, plan, hand to the
 * scheduler. On any failure everything built so far is freed: a model is
 * either fully registered or not at all. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/api_internal.h"
#include "api/sized.h"
#include "batch/batch.h"
#include "profile/cache.h"
#include "sim/sim.h"
#include "util/sha256.h"
#include "util/checked.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/units.h"

#define DEFAULT_MAX_BATCH 32
#define MAX_MAX_BATCH 4096
#define MAX_ONNX_FILE_BYTES ((size_t)4 << 30)

DSTACK_API void dstack_model_desc_init(dstack_model_desc *d)
{
    if (!d)
        return;
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    d->max_batch = DEFAULT_MAX_BATCH;
    d->precision = DSTACK_PRECISION_FP32;
    d->zoo_image_size = 224;
    d->zoo_classes = 1000;
}

DSTACK_API void dstack_model_info_init(dstack_model_info *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
}

static dstack_status read_file(const char *path, void **bytes, size_t *n)
{
    FILE *f = ds_fopen(path, "rb");
    if (!f)
        return ds_fail(errno == ENOENT ? DSTACK_ERR_NOT_FOUND : DSTACK_ERR_IO, "cannot open '%s': %s",
                       path, strerror(errno));
    dstack_status st = DSTACK_OK;
    struct stat sb;
    long size = -1;
    /* fopen succeeds on a directory, and seeking to its end gives LONG_MAX:
     * say what it is instead of a nonsense size. */
    if (fstat(fileno(f), &sb) != 0)
        st = ds_fail(DSTACK_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
    else if (S_ISDIR(sb.st_mode))
        st = ds_fail(DSTACK_ERR_IO, "'%s' is a directory, not an ONNX file", path);
    else if (!S_ISREG(sb.st_mode))
        st = ds_fail(DSTACK_ERR_IO, "'%s' is not a regular file", path);
    if (st == DSTACK_OK && fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (st == DSTACK_OK && (size < 0 || fseek(f, 0, SEEK_SET) != 0))
        st = ds_fail(DSTACK_ERR_IO, "cannot size '%s'", path);
    else if (st == DSTACK_OK && (size_t)size > MAX_ONNX_FILE_BYTES)
        st = ds_fail(DSTACK_ERR_IO, "'%s' is %ld bytes, over the 4 GiB a protobuf can hold", path, size);
    void *buf = NULL;
    if (st == DSTACK_OK && !(buf = ds_malloc(size ? (size_t)size : 1)))
        st = ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory to read '%s' (%ld bytes)", path, size);
    if (st == DSTACK_OK && ds_fread(buf, 1, (size_t)size, f) != (size_t)size)
        st = ds_fail(DSTACK_ERR_IO, "short read of '%s'", path);
    fclose(f);
    if (st != DSTACK_OK) {
        free(buf);
        return st;
    }
    *bytes = buf;
    *n = (size_t)size;
    return DSTACK_OK;
}

/* Loads the graph and, in content[], the model's content hash for the
 * profile cache: SHA-256 of the ONNX bytes, or of "zoo:NAME:SEED:IMAGE:CLASSES". */
static dstack_status load_graph(const dstack_model_desc *d, uint64_t memory_budget, ds_graph **g,
                                uint8_t content[DS_SHA256_BYTES])
{
    switch (d->source) {
    case DSTACK_SOURCE_ZOO: {
        if (!d->path)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "desc.path must name a zoo model");
        ds_zoo_params p = {d->zoo_image_size, d->zoo_classes, d->seed};
        char id[DSTACK_NAME_LEN + 96];
        int n = snprintf(id, sizeof id, "zoo:%s:%llu:%u:%u", d->path, (unsigned long long)d->seed,
                         d->zoo_image_size, d->zoo_classes);
        ds_sha256(id, n > 0 && (size_t)n < sizeof id ? (size_t)n : strlen(id), content);
        return ds_zoo_build(d->path, &p, g);
    }
    case DSTACK_SOURCE_ONNX_FILE: {
        if (!d->path)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "desc.path must name an ONNX file");
        void *bytes = NULL;
        size_t n = 0;
        dstack_status st = read_file(d->path, &bytes, &n);
        if (st != DSTACK_OK)
            return st;
        ds_sha256(bytes, n, content);
        st = ds_onnx_import_budget(bytes, n, memory_budget, g);
        free(bytes);
        if (st != DSTACK_OK)
            ds_fail_prefix(st, "%s: ", d->path);
        return st;
    }
    case DSTACK_SOURCE_ONNX_BYTES:
        if (!d->bytes || d->n_bytes == 0)
            return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "desc.bytes is NULL or desc.n_bytes is 0");
        ds_sha256(d->bytes, d->n_bytes, content);
        return ds_onnx_import_budget(d->bytes, d->n_bytes, memory_budget, g);
    }
    return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "desc.source %d is not a dstack_model_source", (int)d->source);
}

static dstack_status check_desc(const dstack_model_desc *d)
{
    if (d->max_batch == 0 || d->max_batch > MAX_MAX_BATCH)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "desc.max_batch must be 1..%u, got %u", MAX_MAX_BATCH,
                       d->max_batch);
    if (d->fixed_batch > d->max_batch)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "desc.fixed_batch %u exceeds max_batch %u", d->fixed_batch,
                       d->max_batch);
    if ((unsigned)d->precision > DSTACK_PRECISION_FP16)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "desc.precision %d is not a dstack_precision",
                       (int)d->precision);
    /* Refused rather than saturated: an SLO of centuries is a mistake (a
     * unit slip, a -1 cast), and "no SLO" already has its value, 0. The cap
     * keeps slo_ns <= 2^62, so now + slo_ns fits in an int64 for any
     * monotonic time under 146 years. */
    if (d->slo_us > DSTACK_MAX_SLO_US)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT,
                       "desc.slo_us %llu is over DSTACK_MAX_SLO_US (%llu, about 142 years); 0 means no SLO",
                       (unsigned long long)d->slo_us, (unsigned long long)DSTACK_MAX_SLO_US);
    return DSTACK_OK;
}

static dstack_status tensor_info(const ds_tensor *t, dstack_tensor_info *ti)
{
    snprintf(ti->name, sizeof ti->name, "%s", t->name ? t->name : "");
    ti->rank = t->rank;
    for (uint32_t i = 0; i < t->rank; i++)
        ti->dims[i] = t->dims[i];
    int64_t numel = ds_tensor_numel(t);
    if (numel < 0 || !ds_size_mul((size_t)numel, sizeof(float), &ti->bytes))
        return ds_fail(DSTACK_ERR_SHAPE, "tensor '%s' has %lld elements: its buffer size overflows", ti->name,
                       (long long)numel);
    return DSTACK_OK;
}

/* The display name: desc.name, else the zoo name, else the file's stem. */
static void model_name(const dstack_model_desc *d, char *out)
{
    const char *src = d->name;
    char stem[DSTACK_NAME_LEN] = "model";
    if (!src && d->source == DSTACK_SOURCE_ZOO)
        src = d->path;
    if (!src && d->source == DSTACK_SOURCE_ONNX_FILE) {
        const char *base = strrchr(d->path, '/');
        snprintf(stem, sizeof stem, "%s", base ? base + 1 : d->path);
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem)
            *dot = '\0';
    }
    snprintf(out, DSTACK_NAME_LEN, "%s", src ? src : stem);
}

/* ---- the profile cache (src/profile/cache.h) ---- */

/* What the backend's latencies depend on beyond the device's name and SM
 * counts: on sim the fitted constants (a recalibrated simulator must not
 * reuse old tables), on cpu the worker threads, on cuda the library
 * versions the executor reports. */
static void backend_version(const dstack_ctx *ctx, char *out, size_t n)
{
    if (ctx->backend == DSTACK_BACKEND_SIM) {
        const ds_sim_device *sd = ds_sim_exec_device(ctx->exec);
        char consts[256];
        int len = snprintf(consts, sizeof consts, "%.9g %.9g %.9g %.9g %.9g %.9g %.9g", sd->sm_flops,
                           sd->sm_flops_simple, sd->mem_bw, sd->sm_mem_bw, sd->launch_gap_ns, sd->batch_overhead_ns,
                           sd->host_bw);
        uint8_t dig[DS_SHA256_BYTES];
        char hex[DS_SHA256_HEX];
        ds_sha256(consts, len > 0 && (size_t)len < sizeof consts ? (size_t)len : strlen(consts), dig);
        ds_sha256_hex(dig, hex);
        snprintf(out, n, "sim constants %.16s", hex);
    } else if (ctx->backend == DSTACK_BACKEND_CPU) {
        snprintf(out, n, "cpu threads=%u", ctx->exec->device.sm_count);
    } else {
        /* cuda: cuDNN, cuBLAS, runtime and driver versions (a new cuDNN
         * picks other kernels, so its old tables are not trusted) */
        snprintf(out, n, "%s %s", ctx->exec->ops->name, ctx->exec->device.version);
    }
}

/* The key of a model's latency table. max_batch (the profiled grid) and
 * precision (the plans) are folded into the content hash, since the key's
 * fields describe the device, not the registration. */
static void cache_key_for(const dstack_ctx *ctx, const dstack_model_desc *d, const uint8_t content[DS_SHA256_BYTES],
                          ds_cache_key *key)
{
    memset(key, 0, sizeof *key);
    char extra[64];
    int n = snprintf(extra, sizeof extra, ":max_batch=%u:precision=%d", d->max_batch, (int)d->precision);
    ds_sha256_ctx h;
    ds_sha256_init(&h);
    ds_sha256_update(&h, content, DS_SHA256_BYTES);
    ds_sha256_update(&h, extra, (size_t)n);
    ds_sha256_final(&h, key->content_sha256);
    const ds_device_info *dev = &ctx->exec->device;
    snprintf(key->device_name, sizeof key->device_name, "%s", dev->name);
    key->sm_count = dev->sm_count;
    key->unit_sms = dev->unit_sms;
    key->partitioning = (uint32_t)dev->partitioning;
    snprintf(key->lib_version, sizeof key->lib_version, "%s", dstack_version_string());
    backend_version(ctx, key->backend_version, sizeof key->backend_version);
}

/* The cached table for key, or NULL (absent, off, or not trusted: logged at
 * WARN, and the caller profiles and stores over it). */
static ds_latency_model *cache_lookup(const dstack_ctx *ctx, const ds_cache_key *key, const char *name,
                                      uint32_t max_batch)
{
    const ds_logger *lg = ds_ctx_logger(ctx);
    if (!ctx->cache_dir[0])
        return NULL;
    char path[4200] = "";
    ds_cache_entry_path(ctx->cache_dir, key, path, sizeof path);
    void *blob = NULL;
    size_t n = 0;
    char reason[DS_CACHE_REASON_LEN] = "";
    ds_cache_outcome oc = ds_cache_load(ctx->cache_dir, key, &blob, &n, reason);
    if (oc == DS_CACHE_ABSENT) {
        ds_log(lg, DSTACK_LOG_INFO, "profile cache miss for %s (%s)", name, path);
        return NULL;
    }
    if (oc != DS_CACHE_HIT) {
        /* the reason starts with the outcome's name ("corrupt: ...") */
        ds_log(lg, DSTACK_LOG_WARN, "profile cache entry for %s ignored (%s); profiling again: %s", name,
               reason[0] ? reason : ds_cache_outcome_name(oc), path);
        return NULL;
    }
    ds_latency_model *m = NULL;
    dstack_status st = ds_latency_model_decode(blob, n, &m);
    free(blob);
    const ds_device_info *dev = &ctx->exec->device;
    bool cpu = ctx->backend == DSTACK_BACKEND_CPU;
    uint32_t whole = ds_units_whole_sms(dev->partitioning, dev->sm_count, dev->unit_sms, dev->n_units);
    bool other_device = m && (m->n_units != dev->n_units || m->unit_sms != dev->unit_sms || m->sm_count != whole);
    if (st == DSTACK_OK && (m->max_batch != max_batch || (!cpu && m->n_units > 1 && other_device))) {
        st = ds_fail(DSTACK_ERR_PARSE, "table for max_batch %u on %u units of %u SMs (%u in all)", m->max_batch,
                     m->n_units, m->unit_sms, m->sm_count);
        free(m);
        m = NULL;
    }
    if (st != DSTACK_OK) {
        ds_log(lg, DSTACK_LOG_WARN, "profile cache entry for %s ignored (payload: %s); profiling again: %s", name,
               ds_error_message(), path);
        ds_error_clear();
        return NULL;
    }
    ds_log(lg, DSTACK_LOG_INFO, "profile cache hit for %s: %s", name, path);
    return m;
}

static void cache_store(const dstack_ctx *ctx, const ds_cache_key *key, const char *name, const ds_latency_model *m)
{
    if (!ctx->cache_dir[0])
        return;
    void *blob = NULL;
    size_t n = 0;
    dstack_status st = ds_latency_model_encode(m, &blob, &n);
    if (st == DSTACK_OK)
        st = ds_cache_store(ctx->cache_dir, key, blob, n);
    free(blob);
    if (st != DSTACK_OK) {
        ds_log(ds_ctx_logger(ctx), DSTACK_LOG_WARN, "profile cache: could not store %s in %s: %s", name,
               ctx->cache_dir, ds_error_message());
        ds_error_clear(); /* the model registers all the same */
    } else {
        ds_log(ds_ctx_logger(ctx), DSTACK_LOG_DEBUG, "profile cache: stored %s (%zu bytes)", name, n);
    }
}

/* The knee and the batch size (src/batch/latency.h). A model gets its SM
 * share in units (the knee, or fixed_sm_count rounded up to units) and its
 * batch (SLO-aware, or fixed_batch). Until its arrival rate is measured the
 * queue is assumed never empty (the deadline timer of dynamic batching keeps
 * requests within their SLO meanwhile); the planner re-plans with the
 * measured rate. On cpu, a model without an SLO is not profiled at all: its
 * batch is max_batch (the most throughput there is) and nothing is
 * predicted. */
uint32_t ds_api_share_sms(const dstack_ctx *ctx, uint32_t units)
{
    const ds_device_info *dev = &ctx->exec->device;
    if (ctx->backend == DSTACK_BACKEND_CPU)
        return 0;
    uint32_t n = dev->n_units ? dev->n_units : 1, unit_sms = dev->unit_sms ? dev->unit_sms : 1;
    return ds_units_range_sms(dev->partitioning, dev->sm_count, unit_sms, n, units);
}

/* The share a model's batch is planned on: the caller's fixed share, else
 * the whole device under a policy that runs every batch there (temporal,
 * streams, ideal: a new user saw temporal report a knee of 56 SMs while
 * its batches ran on 132), else 0: the planner picks the knee (dstack,
 * static_spatial; the latter's home partition, scaled to fit, is planned
 * in src/api/planner.c). */
uint32_t ds_api_policy_units(const dstack_ctx *ctx, const api_model *am)
{
    if (am->fixed_units)
        return am->fixed_units;
    if (!ctx->policy->partial_shares && ctx->backend != DSTACK_BACKEND_CPU)
        return ctx->exec->device.n_units ? ctx->exec->device.n_units : 1;
    return 0;
}

static dstack_status choose_share_and_batch(dstack_ctx *ctx, const dstack_model_desc *d, api_model *am,
                                           const uint8_t content[DS_SHA256_BYTES], uint32_t *units)
{
    const ds_device_info *dev = &ctx->exec->device;
    bool cpu = ctx->backend == DSTACK_BACKEND_CPU;
    uint32_t unit_sms = dev->unit_sms ? dev->unit_sms : 1;
    uint32_t n_units = dev->n_units ? dev->n_units : 1;
    am->fixed_batch = d->fixed_batch;
    am->fixed_units = 0;
    if (d->fixed_sm_count && !cpu) {
        /* in 64 bits: fixed_sm_count near UINT32_MAX wrapped to a tiny share */
        uint64_t want = ((uint64_t)d->fixed_sm_count + unit_sms - 1) / unit_sms;
        am->fixed_units = want > n_units ? n_units : (uint32_t)want;
    }
    *units = n_units;
    am->info.batch_size = d->fixed_batch ? d->fixed_batch : d->max_batch;
    am->info.sm_count = ds_api_share_sms(ctx, am->fixed_units ? am->fixed_units : n_units);
    if (cpu && d->slo_us == 0) {
        *units = n_units;
        return DSTACK_OK;
    }
    const char *name = am->info.name;
    ds_cache_key key;
    cache_key_for(ctx, d, content, &key);
    dstack_status st = DSTACK_OK;
    if (!(am->lat = cache_lookup(ctx, &key, name, d->max_batch))) {
        st = ds_latency_model_build_logged(ctx->exec, am->plan, am->graph, cpu, d->max_batch, ds_ctx_logger(ctx),
                                           name, &am->lat);
        if (st != DSTACK_OK)
            return st;
        cache_store(ctx, &key, name, am->lat);
    }
    ds_model_plan plan;
    st = ds_plan_model(am->lat, d->slo_us, INFINITY, ds_api_policy_units(ctx, am), d->fixed_batch, &plan);
    if (st != DSTACK_OK)
        return st;
    const ds_logger *lg = ds_ctx_logger(ctx);
    if (cpu)
        ds_log(lg, DSTACK_LOG_INFO, "%s: no SM shares on cpu; batch %u%s, predicted %.3f ms", name, plan.batch,
               d->fixed_batch ? " (fixed)" : "", plan.latency_us / 1e3);
    else
        ds_log(lg, DSTACK_LOG_INFO, "%s: share %u SMs (%u units%s), batch %u%s (its own knee: %u units), "
               "predicted %.3f ms", name, ds_api_share_sms(ctx, plan.units), plan.units, am->fixed_units ? ", fixed" : "",
               plan.batch, d->fixed_batch ? " (fixed)" : "", plan.knee_units, plan.latency_us / 1e3);
    if (plan.flags & DS_BATCH_INFEASIBLE)
        ds_log(lg, DSTACK_LOG_WARN, "%s: no batch size meets the %llu us SLO (batch %u takes %.3f ms)", name,
               (unsigned long long)d->slo_us, plan.batch, plan.latency_us / 1e3);
    *units = cpu ? n_units : plan.units;
    am->info.batch_size = plan.batch;
    am->info.sm_count = ds_api_share_sms(ctx, plan.units);
    am->info.predicted_latency_us = (uint64_t)(plan.latency_us + 0.5);
    return DSTACK_OK;
}

void ds_api_model_free(dstack_ctx *ctx, api_model *am)
{
    if (!am)
        return;
    if (am->plan)
        ctx->exec->ops->plan_destroy(ctx->exec, am->plan);
    ds_graph_free(am->graph);
    free(am->lat);
    free(am);
}

/* The work budget: the sum of every node's counted work against
 * options.max_request_ops, naming the node that costs most. */
static dstack_status check_work(const dstack_options *o, const ds_graph *g, uint64_t work)
{
    if (work <= o->max_request_ops)
        return DSTACK_OK;
    uint32_t worst = 0;
    uint64_t worst_work = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        uint64_t w = ds_graph_node_work(g, &g->nodes[i]);
        if (w > worst_work) {
            worst_work = w;
            worst = i;
        }
    }
    const ds_node *n = &g->nodes[worst];
    return ds_fail(DSTACK_ERR_RESOURCE_LIMIT, "model '%s' needs %.3g ops per request, over "
                   "options.max_request_ops (%.3g); the costliest is node %u '%s' (%s) with %.3g",
                   g->name, (double)work, (double)o->max_request_ops, worst, n->name,
                   ds_op_name(n->op), (double)worst_work);
}

/* The memory budget, before any backend allocates: the weights plus the
 * largest single activation at max_batch are a floor every backend needs.
 * What remains is the plan's budget (the cpu backend checks its exact arena
 * against it before allocating). */
static dstack_status check_memory(const dstack_options *o, const ds_graph *g, uint32_t max_batch,
                                  uint64_t *plan_budget)
{
    uint64_t weights = ds_graph_param_count(g) * sizeof(float);
    uint64_t batch = g->batchable ? max_batch : 1, largest = 0;
    uint32_t at = UINT32_MAX;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        uint64_t b = (uint64_t)ds_tensor_numel(&g->tensors[g->nodes[i].output]) * sizeof(float);
        if (b > largest) {
            largest = b;
            at = i;
        }
    }
    uint64_t limit = o->max_model_memory_bytes;
    if (weights > limit)
        return ds_fail(DSTACK_ERR_RESOURCE_LIMIT, "model '%s' has %llu bytes of weights, over "
                       "options.max_model_memory_bytes (%llu)", g->name,
                       (unsigned long long)weights, (unsigned long long)limit);
    if (at != UINT32_MAX && largest > (limit - weights) / batch) {
        const ds_node *n = &g->nodes[at];
        return ds_fail(DSTACK_ERR_RESOURCE_LIMIT, "model '%s': node %u '%s' (%s) writes %llu bytes "
                       "per request, %llu at batch %llu, which with %llu bytes of weights is over "
                       "options.max_model_memory_bytes (%llu)", g->name, at, n->name,
                       ds_op_name(n->op), (unsigned long long)largest,
                       (unsigned long long)(largest * batch), (unsigned long long)batch,
                       (unsigned long long)weights, (unsigned long long)limit);
    }
    *plan_budget = limit == UINT64_MAX ? 0 : limit - weights;
    if (limit != UINT64_MAX && *plan_budget == 0)
        *plan_budget = 1;
    return DSTACK_OK;
}

static dstack_status build_model(dstack_ctx *ctx, const dstack_model_desc *d, api_model *am, uint32_t *units)
{
    uint8_t content[DS_SHA256_BYTES];
    dstack_status st = load_graph(d, ctx->opts.max_model_memory_bytes, &am->graph, content);
    if (st != DSTACK_OK)
        return st;
    if ((st = ds_graph_fold(am->graph)) != DSTACK_OK)
        return st;
    const ds_graph *g = am->graph;
    dstack_model_info *info = &am->info;
    model_name(d, info->name);
    info->n_inputs = g->n_inputs;
    info->n_outputs = g->n_outputs;
    for (uint32_t i = 0; i < g->n_inputs && st == DSTACK_OK; i++)
        st = tensor_info(&g->tensors[g->inputs[i]], &info->inputs[i]);
    for (uint32_t i = 0; i < g->n_outputs && st == DSTACK_OK; i++)
        st = tensor_info(&g->tensors[g->outputs[i]], &info->outputs[i]);
    if (st != DSTACK_OK)
        return st;
    info->param_count = ds_graph_param_count(g);
    info->flops_per_request = ds_graph_flops(g);
    uint64_t plan_budget = 0;
    if ((st = check_work(&ctx->opts, g, info->flops_per_request)) ||
        (st = check_memory(&ctx->opts, g, d->max_batch, &plan_budget)))
        return st;
    info->max_batch = d->max_batch;
    info->batchable = g->batchable;
    info->slo_us = d->slo_us;
    info->precision = d->precision;
    ds_plan_options po = {d->max_batch, d->precision, plan_budget};
    st = ctx->exec->ops->plan_create(ctx->exec, g, &po, &am->plan);
    if (st != DSTACK_OK)
        return st;
    return choose_share_and_batch(ctx, d, am, content, units);
}

static dstack_status register_model(dstack_ctx *ctx, const dstack_model_desc *desc, dstack_model **model)
{
    if (!ctx || !desc || !model)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx, desc or model is NULL");
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    dstack_status st = ds_copy_sized(&d, sizeof d, desc, "desc");
    if (st == DSTACK_OK)
        st = check_desc(&d);
    if (st != DSTACK_OK)
        return st;
    if (ds_sched_is_shut_down(ctx->sched))
        return ds_fail(DSTACK_ERR_SHUTTING_DOWN, "the context is shutting down");
    api_model *am = ds_calloc(1, sizeof *am);
    if (!am)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "no memory for a model");
    dstack_model_info_init(&am->info);
    pthread_mutex_lock(&ctx->register_lock);
    uint32_t units = 1;
    st = build_model(ctx, &d, am, &units);
    if (st == DSTACK_OK) {
        ds_sched_model_config sc = {0};
        sc.plan = am->plan;
        sc.n_inputs = am->info.n_inputs;
        sc.n_outputs = am->info.n_outputs;
        for (uint32_t i = 0; i < sc.n_inputs; i++)
            sc.input_bytes[i] = am->info.inputs[i].bytes;
        for (uint32_t i = 0; i < sc.n_outputs; i++)
            sc.output_bytes[i] = am->info.outputs[i].bytes;
        sc.batch_size = am->info.batch_size;
        sc.max_batch = am->info.max_batch;
        sc.unit_count = units;
        sc.slo_ns = d.slo_us * 1000u; /* <= 2^62: check_desc capped slo_us */
        sc.latency = am->lat ? ds_latency_sched_ns : NULL;
        sc.latency_arg = am->lat;
        sc.owner = am;
        am->slo_us = d.slo_us;
        am->planned_rate = INFINITY;
        dstack_model *handle = NULL;
        st = ds_sched_add_model(ctx->sched, &sc, &handle);
        if (st == DSTACK_OK) {
            am->handle = handle;
            if ((st = ds_planner_add(ctx, am)) != DSTACK_OK) {
                void *owner;
                ds_sched_remove_model(ctx->sched, handle, &owner);
            } else {
                *model = handle;
            }
        }
    }
    if (st != DSTACK_OK)
        ds_api_model_free(ctx, am);
    pthread_mutex_unlock(&ctx->register_lock);
    return st;
}

/* A failed registration is logged at ERROR (dstack.h): it is rare and slow,
 * unlike a refused submit, whose status says it on the request path. */
DSTACK_API dstack_status dstack_register_model(dstack_ctx *ctx, const dstack_model_desc *desc,
                                               dstack_model **model)
{
    ds_error_clear();
    dstack_status st = register_model(ctx, desc, model);
    if (st != DSTACK_OK && ctx)
        ds_log(ds_ctx_logger(ctx), DSTACK_LOG_ERROR, "dstack_register_model: %s: %s", dstack_strerror(st),
               ds_error_message());
    return st;
}

DSTACK_API dstack_status dstack_unregister_model(dstack_ctx *ctx, dstack_model *model)
{
    ds_error_clear();
    if (!ctx || !model)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx or model is NULL");
    pthread_mutex_lock(&ctx->register_lock);
    void *owner = NULL;
    dstack_status st = ds_sched_remove_model(ctx->sched, model, &owner);
    if (st == DSTACK_OK) {
        ds_planner_remove(ctx, owner);
        /* Once removed, no info read can find the model any more; one that
         * found it before holds models_lock until its copy is done. */
        pthread_mutex_lock(&ctx->models_lock);
        ds_api_model_free(ctx, owner);
        pthread_mutex_unlock(&ctx->models_lock);
    }
    pthread_mutex_unlock(&ctx->register_lock);
    return st;
}

DSTACK_API dstack_status dstack_model_info_get(dstack_ctx *ctx, const dstack_model *model,
                                               dstack_model_info *info)
{
    ds_error_clear();
    if (!ctx || !model || !info)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ctx, model or info is NULL");
    if (info->struct_size < sizeof(size_t))
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "info.struct_size is %zu: call dstack_model_info_init",
                       info->struct_size);
    /* Under models_lock the model cannot be freed while we copy; a
     * registration in progress does not hold it. */
    pthread_mutex_lock(&ctx->models_lock);
    void *owner = NULL;
    dstack_status st = ds_sched_model_owner(ctx->sched, model, &owner);
    if (st == DSTACK_OK) {
        pthread_mutex_lock(&ctx->plan_lock); /* the planner updates batch and share */
        ds_copy_out(info, &((api_model *)owner)->info, sizeof(dstack_model_info));
        pthread_mutex_unlock(&ctx->plan_lock);
    }
    pthread_mutex_unlock(&ctx->models_lock);
    return st;
}

DSTACK_API size_t dstack_zoo_count(void)
{
    size_t n = 0;
    for (const char *const *names = ds_zoo_names(); names[n]; n++)
        ;
    return n;
}

DSTACK_API const char *dstack_zoo_name(size_t index)
{
    return index < dstack_zoo_count() ? ds_zoo_names()[index] : NULL;
}
