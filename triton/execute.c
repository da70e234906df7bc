/*
 * execute.c - Triton requests into libdstack, completions back to Triton.
 *
 * TRITONBACKEND_ModelInstanceExecute never waits for the device: each
 * Triton request becomes a td_job, its samples are handed to dstack_submit,
 * and execute returns. The context's poller thread takes the completions
 * (dstack_poll) and, when the last sample of a job is done, sends the
 * response, reports statistics and releases the request. Outputs are not
 * copied: the library writes straight into the response's output buffers,
 * which Triton allocates at execute time.
 *
 * A job's samples: a Triton request of n samples (its batch dimension) is
 * one dstack request of n samples (dstack_request.n_samples) when n fits
 * the model's max_batch and the queue, else chunks of the smaller of the
 * two; its response waits for all of them. Only submit_samples knows this.
 *
 * Nothing is lost: a job holds one reference per submitted library request plus one
 * for execute itself, and whoever drops the last one answers the request,
 * so a submit refused half-way (QUEUE_FULL) still waits for the samples
 * already queued before it sends its error. The first failure wins; its
 * Triton error carries the library's message.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

typedef struct td_job {
    td_instance *inst;
    TRITONBACKEND_Request *request;
    TRITONBACKEND_Response *response;
    atomic_uint pending;          /* library requests outstanding + 1 while execute runs */
    atomic_int failed;            /* set once, by the first failure */
    TRITONSERVER_Error_Code code; /* of that failure, written by whoever set failed */
    char detail[512];
    uint64_t exec_start_ns;       /* Triton's clock (CLOCK_MONOTONIC) */
    uint64_t compute_start_ns;    /* earliest batch start of its samples; poller only */
    uint64_t compute_end_ns;      /* latest batch end */
    uint32_t n_samples;
    const char *in_base[DSTACK_MAX_IO];  /* n_samples consecutive samples each */
    char *out_base[DSTACK_MAX_IO];
    void *owned[2 * DSTACK_MAX_IO];      /* gathered inputs, unrequested outputs */
    uint32_t n_owned;
} td_job;

static void job_fail(td_job *job, TRITONSERVER_Error_Code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_fail(td_job *job, TRITONSERVER_Error_Code code, const char *fmt, ...)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&job->failed, &expected, 1))
        return;
    job->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->detail, sizeof job->detail, fmt, ap);
    va_end(ap);
}

/* Triton's code for a library status: QUEUE_FULL and a shutting-down
 * context are worth retrying (UNAVAILABLE), as is a missed deadline, which
 * Triton itself reports as UNAVAILABLE when its own queue times out. */
static TRITONSERVER_Error_Code triton_code(dstack_status st)
{
    switch (st) {
    case DSTACK_ERR_QUEUE_FULL: case DSTACK_ERR_SHUTTING_DOWN: case DSTACK_ERR_DEADLINE_MISSED:
        return TRITONSERVER_ERROR_UNAVAILABLE;
    case DSTACK_ERR_CANCELLED:
        return TRITONSERVER_ERROR_CANCELLED;
    case DSTACK_ERR_INVALID_ARGUMENT: case DSTACK_ERR_SIZE_MISMATCH: case DSTACK_ERR_SHAPE:
        return TRITONSERVER_ERROR_INVALID_ARG;
    case DSTACK_ERR_NOT_FOUND:
        return TRITONSERVER_ERROR_NOT_FOUND;
    case DSTACK_ERR_UNSUPPORTED: case DSTACK_ERR_NO_DEVICE:
        return TRITONSERVER_ERROR_UNSUPPORTED;
    default:
        return TRITONSERVER_ERROR_INTERNAL;
    }
}

static void job_finish(td_job *job)
{
    td_instance *inst = job->inst;
    uint64_t end = td_monotonic_ns();
    int ok = !atomic_load(&job->failed);
    TRITONSERVER_Error *err = ok ? NULL : TRITONSERVER_ErrorNew(job->code, job->detail);
    /* statistics first: a client that has its response finds it counted
     * (sent first, a statistics query right after the response could miss
     * it: seen once in tests/triton, 47 successes of 48) */
    uint64_t cstart = job->compute_start_ns ? job->compute_start_ns : job->exec_start_ns;
    uint64_t cend = job->compute_end_ns ? job->compute_end_ns : cstart;
    TRITONSERVER_Error *e = TRITONBACKEND_ModelInstanceReportStatistics(
        inst->triton, job->request, ok, job->exec_start_ns, cstart, cend, end);
    if (e)
        TRITONSERVER_ErrorDelete(e);
    if (job->response) {
        e = TRITONBACKEND_ResponseSend(job->response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
        if (e) {
            TD_LOG(ERROR, "dstack: model %s: sending a response: %s", inst->model->name,
                   TRITONSERVER_ErrorMessage(e));
            TRITONSERVER_ErrorDelete(e);
        }
    }
    e = TRITONBACKEND_RequestRelease(job->request, TRITONSERVER_REQUEST_RELEASE_ALL);
    if (e)
        TRITONSERVER_ErrorDelete(e);
    if (err)
        TRITONSERVER_ErrorDelete(err);
    for (uint32_t i = 0; i < job->n_owned; i++)
        free(job->owned[i]);
    free(job);
    pthread_mutex_lock(&inst->lock);
    if (--inst->in_flight == 0)
        pthread_cond_broadcast(&inst->idle);
    pthread_mutex_unlock(&inst->lock);
}

static void job_release(td_job *job)
{
    if (atomic_fetch_sub_explicit(&job->pending, 1, memory_order_acq_rel) == 1)
        job_finish(job);
}

static void *job_alloc(td_job *job, size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (p)
        job->owned[job->n_owned++] = p;
    return p;
}

/* Point job->in_base[i] at the request's data for every model input, in
 * the model's order, and find the number of samples. 0 or -1 (job failed). */
static int job_inputs(td_job *job, const dstack_model_info *info, int batched)
{
    for (uint32_t i = 0; i < info->n_inputs; i++) {
        const dstack_tensor_info *t = &info->inputs[i];
        TRITONBACKEND_Input *in;
        const char *name;
        TRITONSERVER_DataType type;
        const int64_t *shape;
        uint32_t rank, n_buffers;
        uint64_t bytes;
        TRITONSERVER_Error *e = TRITONBACKEND_RequestInput(job->request, t->name, &in);
        if (!e)
            e = TRITONBACKEND_InputProperties(in, &name, &type, &shape, &rank, &bytes, &n_buffers);
        if (e) {
            job_fail(job, TRITONSERVER_ERROR_INVALID_ARG, "dstack: input '%s': %s", t->name,
                     TRITONSERVER_ErrorMessage(e));
            TRITONSERVER_ErrorDelete(e);
            return -1;
        }
        if (type != TRITONSERVER_TYPE_FP32) {
            job_fail(job, TRITONSERVER_ERROR_INVALID_ARG, "dstack: input '%s' must be FP32",
                     t->name);
            return -1;
        }
        uint32_t n = batched && rank > 0 ? (uint32_t)shape[0] : 1;
        if (i == 0)
            job->n_samples = n;
        if (n == 0 || n != job->n_samples || bytes != (uint64_t)n * t->bytes) {
            job_fail(job, TRITONSERVER_ERROR_INVALID_ARG,
                     "dstack: input '%s': %llu bytes for %u sample%s, the model takes %zu "
                     "bytes per sample%s", t->name, (unsigned long long)bytes, n,
                     n == 1 ? "" : "s", t->bytes,
                     n != job->n_samples ? " (and inputs disagree on the sample count)" : "");
            return -1;
        }
        char *gathered = NULL;
        uint64_t at = 0;
        for (uint32_t b = 0; b < n_buffers; b++) {
            const void *buf;
            uint64_t len;
            TRITONSERVER_MemoryType mt = TRITONSERVER_MEMORY_CPU;
            int64_t mt_id = 0;
            if ((e = TRITONBACKEND_InputBuffer(in, b, &buf, &len, &mt, &mt_id))) {
                job_fail(job, TRITONSERVER_ERROR_INTERNAL, "dstack: input '%s': %s", t->name,
                         TRITONSERVER_ErrorMessage(e));
                TRITONSERVER_ErrorDelete(e);
                return -1;
            }
            if (mt == TRITONSERVER_MEMORY_GPU || at + len > bytes) {
                job_fail(job, TRITONSERVER_ERROR_UNSUPPORTED, "dstack: input '%s': %s", t->name,
                         mt == TRITONSERVER_MEMORY_GPU ? "GPU memory inputs are not supported, "
                         "send them in system memory" : "more data than its byte size");
                return -1;
            }
            if (n_buffers == 1) {
                job->in_base[i] = buf;
                break;
            }
            if (!gathered && !(gathered = job_alloc(job, bytes))) {
                job_fail(job, TRITONSERVER_ERROR_INTERNAL, "dstack: out of memory");
                return -1;
            }
            memcpy(gathered + at, buf, len);
            at += len;
            job->in_base[i] = gathered;
        }
    }
    return 0;
}

static int requested(TRITONBACKEND_Request *request, const char *name)
{
    uint32_t n = 0;
    TRITONSERVER_Error *e = TRITONBACKEND_RequestOutputCount(request, &n);
    if (e) {
        TRITONSERVER_ErrorDelete(e);
        return 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *out;
        if ((e = TRITONBACKEND_RequestOutputName(request, i, &out))) {
            TRITONSERVER_ErrorDelete(e);
            continue;
        }
        if (strcmp(out, name) == 0)
            return 1;
    }
    return 0;
}

/* Create the response and point job->out_base[k] at its output buffers
 * (requested outputs) or at scratch memory (the others, which the library
 * computes anyway). 0 or -1 (job failed). */
static int job_outputs(td_job *job, const dstack_model_info *info, int batched)
{
    TRITONSERVER_Error *e = TRITONBACKEND_ResponseNew(&job->response, job->request);
    if (e) {
        job->response = NULL;
        job_fail(job, TRITONSERVER_ERROR_INTERNAL, "dstack: %s", TRITONSERVER_ErrorMessage(e));
        TRITONSERVER_ErrorDelete(e);
        return -1;
    }
    for (uint32_t k = 0; k < info->n_outputs; k++) {
        const dstack_tensor_info *t = &info->outputs[k];
        uint64_t bytes = (uint64_t)job->n_samples * t->bytes;
        if (!requested(job->request, t->name)) {
            if (!(job->out_base[k] = job_alloc(job, bytes))) {
                job_fail(job, TRITONSERVER_ERROR_INTERNAL, "dstack: out of memory");
                return -1;
            }
            continue;
        }
        int64_t shape[DSTACK_MAX_RANK];
        for (uint32_t d = 0; d < t->rank; d++)
            shape[d] = t->dims[d];
        if (batched)
            shape[0] = job->n_samples;
        TRITONBACKEND_Output *out;
        void *buf;
        TRITONSERVER_MemoryType mt = TRITONSERVER_MEMORY_CPU;
        int64_t mt_id = 0;
        if ((e = TRITONBACKEND_ResponseOutput(job->response, &out, t->name,
                                              TRITONSERVER_TYPE_FP32, shape, t->rank)) ||
            (e = TRITONBACKEND_OutputBuffer(out, &buf, bytes, &mt, &mt_id))) {
            job_fail(job, TRITONSERVER_ERROR_INTERNAL, "dstack: output '%s': %s", t->name,
                     TRITONSERVER_ErrorMessage(e));
            TRITONSERVER_ErrorDelete(e);
            return -1;
        }
        if (mt == TRITONSERVER_MEMORY_GPU) {
            job_fail(job, TRITONSERVER_ERROR_UNSUPPORTED, "dstack: output '%s': GPU memory "
                     "outputs are not supported, receive them in system memory", t->name);
            return -1;
        }
        job->out_base[k] = buf;
    }
    return 0;
}

/* Samples one dstack request may carry: up to the model's max_batch
 * (dstack_request.n_samples), so a Triton request of n <= max_batch samples
 * is one library request, answered in one batch; and no more than the
 * model's queue ever holds (queue_capacity), which the library refuses as
 * INVALID_ARGUMENT: in chunks that fit, a request larger than the queue is
 * queued as far as there is room and fails UNAVAILABLE (retry) after. */
static uint32_t samples_per_request(const dstack_model_info *info, uint32_t queue_capacity)
{
    uint32_t most = info->max_batch ? info->max_batch : 1;
    return queue_capacity && queue_capacity < most ? queue_capacity : most;
}

/* Hand the job's samples to the library in chunks of samples_per_request. */
static void submit_samples(td_job *job, td_registration *reg, uint64_t deadline_us)
{
    const dstack_model_info *info = &reg->info;
    dstack_ctx *ctx = reg->tctx->ctx;
    dstack_buffer in[DSTACK_MAX_IO], out[DSTACK_MAX_IO];
    dstack_request rq;
    dstack_request_init(&rq);
    rq.inputs = in;
    rq.n_inputs = info->n_inputs;
    rq.outputs = out;
    rq.n_outputs = info->n_outputs;
    rq.user_data = job;
    uint32_t most = samples_per_request(info, reg->tctx->params.queue_capacity);
    for (uint32_t s = 0; s < job->n_samples; s += most) {
        uint32_t chunk = job->n_samples - s < most ? job->n_samples - s : most;
        for (uint32_t i = 0; i < info->n_inputs; i++)
            in[i] = (dstack_buffer){(void *)(job->in_base[i] + (size_t)s * info->inputs[i].bytes),
                                    chunk * info->inputs[i].bytes};
        for (uint32_t k = 0; k < info->n_outputs; k++)
            out[k] = (dstack_buffer){job->out_base[k] + (size_t)s * info->outputs[k].bytes,
                                     chunk * info->outputs[k].bytes};
        rq.deadline_ns = deadline_us ? dstack_now_ns(ctx) + deadline_us * 1000u : 0;
        rq.n_samples = chunk;
        dstack_ticket ticket;
        atomic_fetch_add_explicit(&job->pending, 1, memory_order_relaxed);
        dstack_status st = dstack_submit(ctx, reg->model, &rq, &ticket);
        if (st != DSTACK_OK) {
            atomic_fetch_sub_explicit(&job->pending, 1, memory_order_relaxed);
            job_fail(job, triton_code(st), "dstack: model %s: %s: %s%s",
                     job->inst->model->name, dstack_strerror(st), dstack_last_error(),
                     st == DSTACK_ERR_QUEUE_FULL ? " (retry later)" : "");
            return;
        }
    }
}

/* The request's own deadline: its parameter deadline_us (an integer, or a
 * decimal string), else the model's. 0 when neither is set (the library then
 * uses submit time + SLO). -1 with the job failed on a bad value. */
static int64_t request_deadline_us(td_job *job, uint64_t model_deadline_us)
{
    uint32_t n = 0;
    TRITONSERVER_Error *e = TRITONBACKEND_RequestParameterCount(job->request, &n);
    if (e) {
        TRITONSERVER_ErrorDelete(e);
        n = 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        TRITONSERVER_ParameterType type;
        const void *value;
        if ((e = TRITONBACKEND_RequestParameter(job->request, i, &key, &type, &value))) {
            TRITONSERVER_ErrorDelete(e);
            continue;
        }
        if (strcmp(key, "deadline_us") != 0)
            continue;
        long long us = -1;
        if (type == TRITONSERVER_PARAMETER_INT) {
            us = (long long)*(const int64_t *)value;
        } else if (type == TRITONSERVER_PARAMETER_STRING) {
            char *end;
            us = strtoll(value, &end, 10);
            if (end == (const char *)value || *end)
                us = -1;
        }
        if (us <= 0 || us > (long long)(UINT64_MAX / 4000u)) {
            job_fail(job, TRITONSERVER_ERROR_INVALID_ARG, "dstack: request parameter deadline_us "
                     "must be a positive number of microseconds");
            return -1;
        }
        return us;
    }
    return (int64_t)model_deadline_us;
}

static void execute_one(td_instance *inst, TRITONBACKEND_Request *request, uint64_t now)
{
    td_job *job = calloc(1, sizeof *job);
    if (!job) {
        /* Nothing to answer with: release it, Triton reports the request as
         * failed rather than leaving the client waiting. */
        TD_LOG(ERROR, "dstack: out of memory for a request of %s", inst->model->name);
        TRITONSERVER_Error *e = TRITONBACKEND_RequestRelease(request,
                                                             TRITONSERVER_REQUEST_RELEASE_ALL);
        if (e)
            TRITONSERVER_ErrorDelete(e);
        return;
    }
    job->inst = inst;
    job->request = request;
    job->exec_start_ns = now;
    atomic_init(&job->pending, 1);
    atomic_init(&job->failed, 0);
    pthread_mutex_lock(&inst->lock);
    inst->in_flight++;
    pthread_mutex_unlock(&inst->lock);

    const td_model *m = inst->model;
    int batched = m->cfg.max_batch_size > 0;
    bool cancelled = false;
    TRITONSERVER_Error *e = TRITONBACKEND_RequestIsCancelled(request, &cancelled);
    if (e)
        TRITONSERVER_ErrorDelete(e);
    if (cancelled)
        job_fail(job, TRITONSERVER_ERROR_CANCELLED, "dstack: request cancelled before it ran");
    else {
        int64_t deadline_us = request_deadline_us(job, m->cfg.deadline_us);
        if (deadline_us >= 0 && job_inputs(job, &inst->reg->info, batched) == 0 &&
            job_outputs(job, &inst->reg->info, batched) == 0)
            submit_samples(job, inst->reg, (uint64_t)deadline_us);
    }
    if (!job->response) /* an early failure: an error response needs one */
        TRITONBACKEND_ResponseNew(&job->response, request);
    job_release(job);
}

TRITONSERVER_Error *TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance *instance,
                                                       TRITONBACKEND_Request **requests,
                                                       const uint32_t request_count)
{
    void *state = NULL;
    TRITONSERVER_Error *err = TRITONBACKEND_ModelInstanceState(instance, &state);
    if (err)
        return err;
    uint64_t now = td_monotonic_ns();
    for (uint32_t r = 0; r < request_count; r++)
        execute_one(state, requests[r], now);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Poller                                                                    */
/* ------------------------------------------------------------------------ */

/* Report a batch to Triton once, by the first of its samples seen. The
 * library names no batch, so a batch is told apart by its start time. */
static void report_batch(td_registration *reg, td_instance *inst, const dstack_completion *c,
                         int64_t to_triton)
{
    for (uint32_t i = 0; i < TD_BATCH_RING; i++)
        if (reg->batch_starts[i] == c->start_ns)
            return;
    reg->batch_starts[reg->batch_next] = c->start_ns;
    reg->batch_next = (reg->batch_next + 1) % TD_BATCH_RING;
    uint64_t start = (uint64_t)((int64_t)c->start_ns + to_triton);
    uint64_t end = (uint64_t)((int64_t)c->end_ns + to_triton);
    TRITONSERVER_Error *e = TRITONBACKEND_ModelInstanceReportBatchStatistics(
        inst->triton, c->batch_size, start, start, end, end);
    if (e)
        TRITONSERVER_ErrorDelete(e);
}

static void complete_one(const dstack_completion *c, int64_t to_triton)
{
    td_job *job = c->user_data;
    td_instance *inst = job->inst;
    if (c->status == DSTACK_OK) {
        uint64_t start = (uint64_t)((int64_t)c->start_ns + to_triton);
        uint64_t end = (uint64_t)((int64_t)c->end_ns + to_triton);
        if (!job->compute_start_ns || start < job->compute_start_ns)
            job->compute_start_ns = start;
        if (end > job->compute_end_ns)
            job->compute_end_ns = end;
        report_batch(inst->reg, inst, c, to_triton);
    } else {
        unsigned long long waited_us = (c->end_ns - c->submit_ns) / 1000u;
        if (c->status == DSTACK_ERR_DEADLINE_MISSED)
            job_fail(job, triton_code(c->status), "dstack: model %s: deadline missed: still "
                     "queued %llu us after it arrived, %lld us past its deadline (SLO %llu us)",
                     inst->model->name, waited_us,
                     ((long long)c->end_ns - (long long)c->deadline_ns) / 1000,
                     (unsigned long long)inst->reg->info.slo_us);
        else
            job_fail(job, triton_code(c->status), "dstack: model %s: %s (after %llu us)",
                     inst->model->name, dstack_strerror(c->status), waited_us);
    }
    job_release(job);
}

void *td_poller_main(void *arg)
{
    td_context *tc = arg;
    dstack_completion done[64];
    for (;;) {
        size_t n = 0;
        dstack_status st = dstack_poll(tc->ctx, done, 64, -1, &n);
        int64_t to_triton = (int64_t)(td_monotonic_ns() - dstack_now_ns(tc->ctx));
        for (size_t i = 0; i < n; i++)
            complete_one(&done[i], to_triton);
        if (st != DSTACK_OK) {
            if (st != DSTACK_ERR_SHUTTING_DOWN)
                TD_LOG(ERROR, "dstack context #%d: poll: %s: %s", tc->id, dstack_strerror(st),
                       dstack_last_error());
            break;
        }
    }
    return NULL;
}
