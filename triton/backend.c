/*
 * backend.c - the life cycle of the dstack Triton backend.
 *
 * One libdstack context per (backend kind, device), shared by every model
 * of the server that runs there, is the point of the backend: D-STACK can
 * only place models side by side if one scheduler sees them all. Triton
 * would otherwise give each model its own executor and time-share the GPU.
 * The contexts live in the backend state, are created by the first model
 * instance that needs one and last until the backend is unloaded (a context
 * with no model costs a sleeping scheduler thread and a poller).
 *
 * A model is registered with the library in TRITONBACKEND_ModelInitialize
 * (the config can only be completed from the ONNX model there), on the
 * context of device 0; instances on other GPUs register it again on their
 * device's context. Unloading waits for every request in flight to be
 * answered before it unregisters, so nothing is cancelled by an unload.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"

void td_log(TRITONSERVER_LogLevel level, int line, const char *fmt, ...)
{
    if (!TRITONSERVER_LogIsEnabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    TRITONSERVER_Error *e = TRITONSERVER_LogMessage(level, "dstack", line, msg);
    if (e)
        TRITONSERVER_ErrorDelete(e);
}

uint64_t td_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static TRITONSERVER_Error *error_new(TRITONSERVER_Error_Code code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static TRITONSERVER_Error *error_new(TRITONSERVER_Error_Code code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return TRITONSERVER_ErrorNew(code, msg);
}

/* A library failure as a Triton error carrying the library's own message. */
static TRITONSERVER_Error *dstack_error(const char *what, dstack_status st)
{
    TRITONSERVER_Error_Code code = TRITONSERVER_ERROR_INTERNAL;
    switch (st) {
    case DSTACK_ERR_INVALID_ARGUMENT: case DSTACK_ERR_SHAPE: case DSTACK_ERR_SIZE_MISMATCH:
    case DSTACK_ERR_PARSE:
        code = TRITONSERVER_ERROR_INVALID_ARG; break;
    case DSTACK_ERR_NOT_FOUND: case DSTACK_ERR_IO:
        code = TRITONSERVER_ERROR_NOT_FOUND; break;
    case DSTACK_ERR_UNSUPPORTED_OP: case DSTACK_ERR_UNSUPPORTED_TYPE:
    case DSTACK_ERR_EXTERNAL_DATA: case DSTACK_ERR_UNSUPPORTED: case DSTACK_ERR_NO_DEVICE:
        code = TRITONSERVER_ERROR_UNSUPPORTED; break;
    default: break;
    }
    return error_new(code, "dstack: %s: %s: %s", what, dstack_strerror(st), dstack_last_error());
}

/* Copy of a Triton message's JSON; NULL on failure (error in *err). */
static char *message_json(TRITONSERVER_Message *msg, size_t *len, TRITONSERVER_Error **err)
{
    const char *base;
    *err = TRITONSERVER_MessageSerializeToJson(msg, &base, len);
    if (*err)
        return NULL;
    char *copy = malloc(*len + 1);
    if (!copy) {
        *err = TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "dstack: out of memory");
        return NULL;
    }
    memcpy(copy, base, *len);
    copy[*len] = 0;
    return copy;
}

/* ------------------------------------------------------------------------ */
/* Backend                                                                   */
/* ------------------------------------------------------------------------ */

TRITONSERVER_Error *TRITONBACKEND_Initialize(TRITONBACKEND_Backend *backend)
{
    uint32_t major = 0, minor = 0;
    TRITONSERVER_Error *err = TRITONBACKEND_ApiVersion(&major, &minor);
    if (err)
        return err;
    if (major != TD_TRITONBACKEND_API_MAJOR || minor < TD_TRITONBACKEND_API_MINOR)
        return error_new(TRITONSERVER_ERROR_UNSUPPORTED,
                         "dstack backend: the server speaks TRITONBACKEND API %u.%u, this "
                         "backend needs %u.%u or a later %u.x (Triton 2.51 or newer)",
                         major, minor, TD_TRITONBACKEND_API_MAJOR, TD_TRITONBACKEND_API_MINOR,
                         TD_TRITONBACKEND_API_MAJOR);
    if (dstack_version() / 100 != DSTACK_VERSION_NUMBER / 100)
        return error_new(TRITONSERVER_ERROR_UNSUPPORTED,
                         "dstack backend: built for libdstack %d.%d, loaded %s",
                         DSTACK_VERSION_MAJOR, DSTACK_VERSION_MINOR, dstack_version_string());

    TRITONSERVER_Message *msg;
    if ((err = TRITONBACKEND_BackendConfig(backend, &msg)))
        return err;
    size_t len;
    char *json = message_json(msg, &len, &err);
    if (!json)
        return err;
    td_backend *b = calloc(1, sizeof *b);
    char why[TD_ERR_LEN];
    if (!b) {
        free(json);
        return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "dstack: out of memory");
    }
    if (td_backend_config_parse(json, len, &b->defaults, &b->default_max_batch, why,
                                sizeof why) < 0) {
        free(json);
        free(b);
        return error_new(TRITONSERVER_ERROR_INVALID_ARG, "dstack backend config: %s", why);
    }
    free(json);
    pthread_mutex_init(&b->lock, NULL);
    b->next_context_id = 1;
    if ((err = TRITONBACKEND_BackendSetState(backend, b))) {
        pthread_mutex_destroy(&b->lock);
        free(b);
        return err;
    }
    TD_LOG(INFO, "dstack backend loaded: libdstack %s, TRITONBACKEND API %u.%u, default "
           "backend %s", dstack_version_string(), major, minor,
           b->defaults.backend_set ? td_backend_name(b->defaults.backend) : "auto");
    return NULL;
}

static void context_close(td_context *c)
{
    dstack_shutdown(c->ctx);
    pthread_join(c->poller, NULL);
    dstack_destroy(c->ctx);
    TD_LOG(INFO, "dstack context #%d closed", c->id);
    free(c);
}

TRITONSERVER_Error *TRITONBACKEND_Finalize(TRITONBACKEND_Backend *backend)
{
    void *state = NULL;
    TRITONSERVER_Error *err = TRITONBACKEND_BackendState(backend, &state);
    if (err)
        return err;
    td_backend *b = state;
    if (!b)
        return NULL;
    while (b->contexts) {
        td_context *c = b->contexts;
        b->contexts = c->next;
        context_close(c);
    }
    pthread_mutex_destroy(&b->lock);
    free(b);
    return NULL;
}

/* The context for (params->backend, device), created on first use. */
static TRITONSERVER_Error *context_get(td_backend *b, const td_ctx_params *params, int device,
                                       td_context **out)
{
    char why[TD_ERR_LEN];
    pthread_mutex_lock(&b->lock);
    for (td_context *c = b->contexts; c; c = c->next) {
        if (c->asked != params->backend || c->device != device)
            continue;
        pthread_mutex_unlock(&b->lock);
        if (td_ctx_params_compatible(&c->params, params, why, sizeof why) < 0)
            return error_new(TRITONSERVER_ERROR_INVALID_ARG, "dstack: context #%d: %s", c->id,
                             why);
        *out = c;
        return NULL;
    }
    td_context *c = calloc(1, sizeof *c);
    if (!c) {
        pthread_mutex_unlock(&b->lock);
        return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "dstack: out of memory");
    }
    dstack_options o;
    dstack_options_init(&o);
    o.backend = params->backend;
    o.device = device;
    if (params->policy_set)
        o.policy = params->policy;
    if (params->partitioning_set)
        o.partitioning = params->partitioning;
    if (params->queue_capacity_set)
        o.queue_capacity = params->queue_capacity;
    if (params->cpu_threads_set)
        o.cpu_threads = params->cpu_threads;
    dstack_status st = dstack_create(&o, &c->ctx);
    if (st != DSTACK_OK) {
        pthread_mutex_unlock(&b->lock);
        free(c);
        return dstack_error("creating the context", st);
    }
    dstack_ctx_info_init(&c->info);
    dstack_ctx_info_get(c->ctx, &c->info);
    c->asked = params->backend;
    c->device = device;
    c->params = *params;
    c->params.policy = o.policy;
    c->params.partitioning = o.partitioning;
    c->params.queue_capacity = o.queue_capacity;
    c->params.cpu_threads = o.cpu_threads;
    c->id = b->next_context_id++;
    if (pthread_create(&c->poller, NULL, td_poller_main, c) != 0) {
        pthread_mutex_unlock(&b->lock);
        dstack_destroy(c->ctx);
        free(c);
        return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL,
                                     "dstack: cannot start the poller thread");
    }
    c->next = b->contexts;
    b->contexts = c;
    TD_LOG(INFO, "dstack context #%d created: device %d, backend %s (asked %s) on %s, policy "
           "%s, %u SMs%s%s", c->id, device, td_backend_name(c->info.backend),
           td_backend_name(params->backend), c->info.device_name, c->info.policy_name,
           c->info.sm_count, c->info.note[0] ? "; " : "", c->info.note);
    pthread_mutex_unlock(&b->lock);
    *out = c;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

static TRITONSERVER_Error *model_register(td_model *m, td_context *c, td_registration *r)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_FILE;
    d.path = m->onnx_path;
    d.name = m->name;
    d.slo_us = m->cfg.slo_us;
    if (m->cfg.lib_max_batch)
        d.max_batch = m->cfg.lib_max_batch;
    d.fixed_sm_count = m->cfg.fixed_sm_count;
    d.fixed_batch = m->cfg.fixed_batch;
    d.precision = m->cfg.precision;
    memset(r, 0, sizeof *r);
    dstack_status st = dstack_register_model(c->ctx, &d, &r->model);
    if (st != DSTACK_OK) {
        char what[4200];
        snprintf(what, sizeof what, "registering %s", m->onnx_path);
        return dstack_error(what, st);
    }
    r->tctx = c;
    dstack_model_info_init(&r->info);
    dstack_model_info_get(c->ctx, r->model, &r->info);
    pthread_mutex_lock(&m->backend->lock);
    uint32_t n = ++c->n_models;
    pthread_mutex_unlock(&m->backend->lock);
    TD_LOG(INFO, "dstack: model %s registered on context #%d (device %d, %s, policy %s), "
           "which now serves %u model%s: batch %u of max %u, knee %u SMs, predicted %llu us, "
           "SLO %llu us", m->name, c->id, c->device, td_backend_name(c->info.backend),
           c->info.policy_name, n, n == 1 ? "" : "s", r->info.batch_size, r->info.max_batch,
           r->info.sm_count, (unsigned long long)r->info.predicted_latency_us,
           (unsigned long long)r->info.slo_us);
    return NULL;
}

static void model_unregister(td_model *m, td_registration *r)
{
    dstack_unregister_model(r->tctx->ctx, r->model);
    pthread_mutex_lock(&m->backend->lock);
    uint32_t n = --r->tctx->n_models;
    pthread_mutex_unlock(&m->backend->lock);
    TD_LOG(INFO, "dstack: model %s unregistered from context #%d, which now serves %u", m->name,
           r->tctx->id, n);
}

/* The model's registration on context c, registering it there if needed. */
static TRITONSERVER_Error *model_registration(td_model *m, td_context *c, td_registration **out)
{
    TRITONSERVER_Error *err = NULL;
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < m->n_regs; i++)
        if (m->regs[i].tctx == c) {
            *out = &m->regs[i];
            goto done;
        }
    if (m->n_regs == TD_MAX_REGISTRATIONS) {
        err = TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_UNSUPPORTED,
                                    "dstack: a model may have instances on 8 devices at most");
        goto done;
    }
    if (!(err = model_register(m, c, &m->regs[m->n_regs])))
        *out = &m->regs[m->n_regs++];
done:
    pthread_mutex_unlock(&m->lock);
    return err;
}

static void model_free(td_model *m)
{
    for (uint32_t i = 0; i < m->n_regs; i++)
        model_unregister(m, &m->regs[i]);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* A model may repeat a context knob the server set (--backend-config) but
 * not contradict it: the server's setting holds for every model. */
static int server_settings_conflict(const td_ctx_params *server, const td_ctx_params *model,
                                    char *why, size_t len)
{
    td_ctx_params have = *model; /* what the server leaves unset cannot conflict */
    if (server->backend_set)
        have.backend = server->backend;
    if (server->policy_set)
        have.policy = server->policy;
    if (server->partitioning_set)
        have.partitioning = server->partitioning;
    if (server->queue_capacity_set)
        have.queue_capacity = server->queue_capacity;
    if (server->cpu_threads_set)
        have.cpu_threads = server->cpu_threads;
    return td_ctx_params_compatible(&have, model, why, len);
}

/* Read the config, complete it from the registered model if Triton lets us,
 * and check what it says against the model. */
static TRITONSERVER_Error *model_configure(td_model *m, TRITONBACKEND_Model *model,
                                           const char *repo)
{
    char why[TD_ERR_LEN];
    TRITONSERVER_Message *msg;
    TRITONSERVER_Error *err = TRITONBACKEND_ModelConfig(model, 1, &msg);
    if (err)
        return err;
    size_t len;
    char *json = message_json(msg, &len, &err);
    TRITONSERVER_MessageDelete(msg);
    if (!json)
        return err;
    if (td_config_parse(json, len, &m->cfg, why, sizeof why) < 0) {
        err = error_new(TRITONSERVER_ERROR_INVALID_ARG, "dstack: model %s: %s", m->name, why);
        goto out;
    }
    if (m->cfg.triton_batcher) {
        err = error_new(TRITONSERVER_ERROR_INVALID_ARG,
                        "dstack: model %s: remove dynamic_batching/sequence_batching from "
                        "config.pbtxt: libdstack forms the batches itself (its batch size "
                        "follows the SLO), and Triton's batcher in front of it would only add "
                        "queueing delay", m->name);
        goto out;
    }
    if (server_settings_conflict(&m->backend->defaults, &m->cfg.ctx, why, sizeof why) < 0) {
        err = error_new(TRITONSERVER_ERROR_INVALID_ARG, "dstack: model %s: %s", m->name, why);
        goto out;
    }
    td_ctx_params_overlay(&m->backend->defaults, &m->cfg.ctx, &m->ctx_params);
    snprintf(m->onnx_path, sizeof m->onnx_path, "%s/%llu/%s", repo,
             (unsigned long long)m->version, m->cfg.model_filename);

    td_context *c;
    td_registration *r;
    if ((err = context_get(m->backend, &m->ctx_params, 0, &c)) ||
        (err = model_registration(m, c, &r)))
        goto out;

    bool auto_complete = false;
    TRITONBACKEND_ModelAutoCompleteConfig(model, &auto_complete);
    if (auto_complete) {
        int changed = 0;
        char *filled = td_config_autocomplete(json, len, &r->info, m->backend->default_max_batch,
                                              &changed, why, sizeof why);
        if (changed && filled) {
            TRITONSERVER_Message *out_msg;
            err = TRITONSERVER_MessageNewFromSerializedJson(&out_msg, filled, strlen(filled));
            if (!err) {
                err = TRITONBACKEND_ModelSetConfig(model, 1, out_msg);
                TRITONSERVER_MessageDelete(out_msg);
            }
            if (!err && td_config_parse(filled, strlen(filled), &m->cfg, why, sizeof why) < 0)
                err = error_new(TRITONSERVER_ERROR_INTERNAL, "dstack: completed config: %s", why);
            if (!err)
                TD_LOG(INFO, "dstack: model %s: config completed from the ONNX model "
                       "(max_batch_size %lld, %u inputs, %u outputs)", m->name,
                       (long long)m->cfg.max_batch_size, m->cfg.n_inputs, m->cfg.n_outputs);
        } else if (changed) {
            err = error_new(TRITONSERVER_ERROR_INTERNAL, "dstack: model %s: %s", m->name, why);
        }
        free(filled);
        if (err)
            goto out;
    }
    if (td_config_check_model(&m->cfg, &r->info, why, sizeof why) < 0)
        err = error_new(TRITONSERVER_ERROR_INVALID_ARG, "dstack: model %s: %s", m->name, why);
out:
    free(json);
    return err;
}

TRITONSERVER_Error *TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model *model)
{
    const char *name, *repo;
    uint64_t version;
    TRITONBACKEND_ArtifactType kind;
    TRITONBACKEND_Backend *backend;
    void *bstate;
    TRITONSERVER_Error *err;
    if ((err = TRITONBACKEND_ModelName(model, &name)) ||
        (err = TRITONBACKEND_ModelVersion(model, &version)) ||
        (err = TRITONBACKEND_ModelRepository(model, &kind, &repo)) ||
        (err = TRITONBACKEND_ModelBackend(model, &backend)) ||
        (err = TRITONBACKEND_BackendState(backend, &bstate)))
        return err;
    if (kind != TRITONBACKEND_ARTIFACT_FILESYSTEM)
        return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_UNSUPPORTED,
                                     "dstack: only model repositories on a file system");
    td_model *m = calloc(1, sizeof *m);
    if (!m)
        return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "dstack: out of memory");
    m->backend = bstate;
    m->version = version;
    snprintf(m->name, sizeof m->name, "%s", name);
    pthread_mutex_init(&m->lock, NULL);
    if ((err = model_configure(m, model, repo)) || (err = TRITONBACKEND_ModelSetState(model, m))) {
        model_free(m);
        return err;
    }
    return NULL;
}

TRITONSERVER_Error *TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model *model)
{
    void *state = NULL;
    TRITONSERVER_Error *err = TRITONBACKEND_ModelState(model, &state);
    if (err)
        return err;
    if (state)
        model_free(state);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Instances                                                                 */
/* ------------------------------------------------------------------------ */

TRITONSERVER_Error *TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance *instance)
{
    const char *name;
    TRITONSERVER_InstanceGroupKind kind;
    int32_t device_id;
    TRITONBACKEND_Model *model;
    void *mstate;
    TRITONSERVER_Error *err;
    if ((err = TRITONBACKEND_ModelInstanceName(instance, &name)) ||
        (err = TRITONBACKEND_ModelInstanceKind(instance, &kind)) ||
        (err = TRITONBACKEND_ModelInstanceDeviceId(instance, &device_id)) ||
        (err = TRITONBACKEND_ModelInstanceModel(instance, &model)) ||
        (err = TRITONBACKEND_ModelState(model, &mstate)))
        return err;
    td_model *m = mstate;
    /* Only a GPU instance names a device; the others use device 0, whose
     * context the model was registered on at load. */
    int device = kind == TRITONSERVER_INSTANCEGROUPKIND_GPU ? device_id : 0;
    td_context *c;
    td_registration *r;
    if ((err = context_get(m->backend, &m->ctx_params, device, &c)) ||
        (err = model_registration(m, c, &r)))
        return err;
    td_instance *inst = calloc(1, sizeof *inst);
    if (!inst)
        return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "dstack: out of memory");
    inst->triton = instance;
    inst->model = m;
    inst->reg = r;
    snprintf(inst->name, sizeof inst->name, "%s", name);
    pthread_mutex_init(&inst->lock, NULL);
    pthread_cond_init(&inst->idle, NULL);
    if ((err = TRITONBACKEND_ModelInstanceSetState(instance, inst))) {
        pthread_cond_destroy(&inst->idle);
        pthread_mutex_destroy(&inst->lock);
        free(inst);
        return err;
    }
    TD_LOG(INFO, "dstack: instance %s of model %s submits to context #%d", inst->name, m->name,
           c->id);
    return NULL;
}

void td_instance_wait_idle(td_instance *inst)
{
    pthread_mutex_lock(&inst->lock);
    while (inst->in_flight > 0)
        pthread_cond_wait(&inst->idle, &inst->lock);
    pthread_mutex_unlock(&inst->lock);
}

TRITONSERVER_Error *TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance *instance)
{
    void *state = NULL;
    TRITONSERVER_Error *err = TRITONBACKEND_ModelInstanceState(instance, &state);
    if (err)
        return err;
    td_instance *inst = state;
    if (!inst)
        return NULL;
    pthread_mutex_lock(&inst->lock);
    uint32_t n = inst->in_flight;
    pthread_mutex_unlock(&inst->lock);
    TD_LOG(INFO, "dstack: instance %s of model %s: waiting for %u request%s in flight", inst->name,
           inst->model->name, n, n == 1 ? "" : "s");
    td_instance_wait_idle(inst);
    pthread_cond_destroy(&inst->idle);
    pthread_mutex_destroy(&inst->lock);
    free(inst);
    return NULL;
}
