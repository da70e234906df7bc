/* test_triton_backend.c - the dstack Triton backend (the files under triton/) driven
 * through a stand-in for the server: this file defines the TRITONSERVER_*
 * and TRITONBACKEND_* functions the backend calls, with just enough
 * behaviour to load models, execute requests and record the responses.
 *
 * It reaches what a real server cannot be made to do on demand: an older
 * backend API version, a request cancelled before it runs, inputs in GPU
 * memory or split over several buffers, a request bigger than the queue.
 * The real server is tests/triton/test_triton.py. Runs from the repository
 * root (it reads tests/data/tiny_cnn.*).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend.h"

/* ------------------------------------------------------------------------ */
/* The stand-in server                                                       */
/* ------------------------------------------------------------------------ */

struct TRITONSERVER_Error {
    TRITONSERVER_Error_Code code;
    char msg[1024];
};
struct TRITONSERVER_Message {
    char *json;
};
struct TRITONBACKEND_Backend {
    void *state;
    const char *config;
};
struct TRITONBACKEND_Model {
    const char *name;
    const char *repo;
    const char *config;
    char *set_config; /* what ModelSetConfig stored */
    void *state;
    TRITONBACKEND_Backend *backend;
};
struct TRITONBACKEND_ModelInstance {
    const char *name;
    TRITONSERVER_InstanceGroupKind kind;
    int32_t device;
    TRITONBACKEND_Model *model;
    void *state;
    int stats_ok, stats_failed, batches, batch_samples;
};
struct TRITONBACKEND_Input {
    const char *name;
    int64_t shape[4];
    uint32_t rank;
    TRITONSERVER_DataType type;
    const float *data;
    uint64_t bytes;
    uint32_t n_buffers; /* the data split in this many equal parts */
    TRITONSERVER_MemoryType memory;
};
struct TRITONBACKEND_Output {
    char name[64];
    void *buffer;
    uint64_t bytes;
};
struct TRITONBACKEND_Response {
    TRITONBACKEND_Output outputs[4];
    uint32_t n_outputs;
    int sent;
    TRITONSERVER_Error_Code code; /* valid when failed */
    int failed;
    char msg[1024];
};
struct TRITONBACKEND_Request {
    TRITONBACKEND_Input inputs[4];
    uint32_t n_inputs;
    const char *outputs[4];
    uint32_t n_outputs;
    int cancelled;
    const char *param_key; /* one request parameter, when set */
    TRITONSERVER_ParameterType param_type;
    int64_t param_int;
    const char *param_string;
    TRITONBACKEND_Response *response;
    volatile int released;
};

static uint32_t api_major = 1, api_minor = 19;
static pthread_mutex_t server_lock = PTHREAD_MUTEX_INITIALIZER;

TRITONSERVER_Error *TRITONSERVER_ErrorNew(TRITONSERVER_Error_Code code, const char *msg)
{
    TRITONSERVER_Error *e = calloc(1, sizeof *e);
    e->code = code;
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    return e;
}
void TRITONSERVER_ErrorDelete(TRITONSERVER_Error *error) { free(error); }
TRITONSERVER_Error_Code TRITONSERVER_ErrorCode(TRITONSERVER_Error *error) { return error->code; }
const char *TRITONSERVER_ErrorMessage(TRITONSERVER_Error *error) { return error->msg; }

TRITONSERVER_Error *TRITONSERVER_MessageNewFromSerializedJson(TRITONSERVER_Message **message,
                                                              const char *base, size_t byte_size)
{
    *message = calloc(1, sizeof **message);
    (*message)->json = strndup(base, byte_size);
    return NULL;
}
TRITONSERVER_Error *TRITONSERVER_MessageDelete(TRITONSERVER_Message *message)
{
    free(message->json);
    free(message);
    return NULL;
}
TRITONSERVER_Error *TRITONSERVER_MessageSerializeToJson(TRITONSERVER_Message *message,
                                                        const char **base, size_t *byte_size)
{
    *base = message->json;
    *byte_size = strlen(message->json);
    return NULL;
}
bool TRITONSERVER_LogIsEnabled(TRITONSERVER_LogLevel level)
{
    return getenv("TD_TEST_VERBOSE") != NULL || level == TRITONSERVER_LOG_ERROR;
}
TRITONSERVER_Error *TRITONSERVER_LogMessage(TRITONSERVER_LogLevel level, const char *filename,
                                            const int line, const char *msg)
{
    fprintf(stderr, "[%d %s:%d] %s\n", (int)level, filename, line, msg);
    return NULL;
}

TRITONSERVER_Error *TRITONBACKEND_ApiVersion(uint32_t *major, uint32_t *minor)
{
    *major = api_major;
    *minor = api_minor;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_BackendName(TRITONBACKEND_Backend *backend, const char **name)
{
    (void)backend;
    *name = "dstack";
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_BackendConfig(TRITONBACKEND_Backend *backend,
                                                TRITONSERVER_Message **backend_config)
{
    /* Triton keeps ownership of this message; leak-free because freed at
     * the end of the test through a list would be overkill: it is static. */
    static TRITONSERVER_Message msg;
    msg.json = (char *)backend->config;
    *backend_config = &msg;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_BackendState(TRITONBACKEND_Backend *backend, void **state)
{
    *state = backend->state;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_BackendSetState(TRITONBACKEND_Backend *backend, void *state)
{
    backend->state = state;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelName(TRITONBACKEND_Model *model, const char **name)
{
    *name = model->name;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelVersion(TRITONBACKEND_Model *model, uint64_t *version)
{
    (void)model;
    *version = 1;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelRepository(TRITONBACKEND_Model *model,
                                                  TRITONBACKEND_ArtifactType *artifact_type,
                                                  const char **location)
{
    *artifact_type = TRITONBACKEND_ARTIFACT_FILESYSTEM;
    *location = model->repo;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelConfig(TRITONBACKEND_Model *model,
                                              const uint32_t config_version,
                                              TRITONSERVER_Message **model_config)
{
    (void)config_version;
    return TRITONSERVER_MessageNewFromSerializedJson(model_config, model->config,
                                                     strlen(model->config));
}
TRITONSERVER_Error *TRITONBACKEND_ModelAutoCompleteConfig(TRITONBACKEND_Model *model,
                                                          bool *auto_complete_config)
{
    (void)model;
    *auto_complete_config = true;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelSetConfig(TRITONBACKEND_Model *model,
                                                 const uint32_t config_version,
                                                 TRITONSERVER_Message *model_config)
{
    (void)config_version;
    free(model->set_config);
    model->set_config = strdup(model_config->json);
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelBackend(TRITONBACKEND_Model *model,
                                               TRITONBACKEND_Backend **backend)
{
    *backend = model->backend;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelState(TRITONBACKEND_Model *model, void **state)
{
    *state = model->state;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelSetState(TRITONBACKEND_Model *model, void *state)
{
    model->state = state;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceName(TRITONBACKEND_ModelInstance *instance,
                                                    const char **name)
{
    *name = instance->name;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceKind(TRITONBACKEND_ModelInstance *instance,
                                                    TRITONSERVER_InstanceGroupKind *kind)
{
    *kind = instance->kind;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceDeviceId(TRITONBACKEND_ModelInstance *instance,
                                                        int32_t *device_id)
{
    *device_id = instance->device;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceModel(TRITONBACKEND_ModelInstance *instance,
                                                     TRITONBACKEND_Model **model)
{
    *model = instance->model;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceState(TRITONBACKEND_ModelInstance *instance,
                                                     void **state)
{
    *state = instance->state;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceSetState(TRITONBACKEND_ModelInstance *instance,
                                                        void *state)
{
    instance->state = state;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceReportStatistics(
    TRITONBACKEND_ModelInstance *instance, TRITONBACKEND_Request *request, const bool success,
    const uint64_t exec_start_ns, const uint64_t compute_start_ns,
    const uint64_t compute_end_ns, const uint64_t exec_end_ns)
{
    (void)request;
    /* The four times must be in order, or Triton's durations go negative. */
    assert_true(exec_start_ns <= compute_start_ns || !success);
    assert_true(compute_start_ns <= compute_end_ns);
    assert_true(compute_end_ns <= exec_end_ns);
    pthread_mutex_lock(&server_lock);
    *(success ? &instance->stats_ok : &instance->stats_failed) += 1;
    pthread_mutex_unlock(&server_lock);
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceReportBatchStatistics(
    TRITONBACKEND_ModelInstance *instance, const uint64_t batch_size,
    const uint64_t exec_start_ns, const uint64_t compute_start_ns,
    const uint64_t compute_end_ns, const uint64_t exec_end_ns)
{
    assert_true(exec_start_ns <= compute_start_ns && compute_start_ns <= compute_end_ns &&
                compute_end_ns <= exec_end_ns);
    pthread_mutex_lock(&server_lock);
    instance->batches++;
    instance->batch_samples += (int)batch_size;
    pthread_mutex_unlock(&server_lock);
    return NULL;
}

TRITONSERVER_Error *TRITONBACKEND_RequestId(TRITONBACKEND_Request *request, const char **id)
{
    (void)request;
    *id = "";
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_RequestIsCancelled(TRITONBACKEND_Request *request,
                                                     bool *is_cancelled)
{
    *is_cancelled = request->cancelled;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_RequestParameterCount(TRITONBACKEND_Request *request,
                                                        uint32_t *count)
{
    *count = request->param_key ? 1 : 0;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_RequestParameter(TRITONBACKEND_Request *request,
                                                   const uint32_t index, const char **key,
                                                   TRITONSERVER_ParameterType *type,
                                                   const void **vvalue)
{
    assert_int_equal(index, 0);
    *key = request->param_key;
    *type = request->param_type;
    *vvalue = request->param_type == TRITONSERVER_PARAMETER_INT ? (const void *)&request->param_int
                                                                : request->param_string;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_RequestInput(TRITONBACKEND_Request *request, const char *name,
                                               TRITONBACKEND_Input **input)
{
    for (uint32_t i = 0; i < request->n_inputs; i++)
        if (strcmp(request->inputs[i].name, name) == 0) {
            *input = &request->inputs[i];
            return NULL;
        }
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INVALID_ARG, "no such input");
}
TRITONSERVER_Error *TRITONBACKEND_RequestInputCount(TRITONBACKEND_Request *request,
                                                    uint32_t *count)
{
    *count = request->n_inputs;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_RequestOutputCount(TRITONBACKEND_Request *request,
                                                     uint32_t *count)
{
    *count = request->n_outputs;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_RequestOutputName(TRITONBACKEND_Request *request,
                                                    const uint32_t index,
                                                    const char **output_name)
{
    *output_name = request->outputs[index];
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_RequestRelease(TRITONBACKEND_Request *request,
                                                 uint32_t release_flags)
{
    assert_int_equal(release_flags, TRITONSERVER_REQUEST_RELEASE_ALL);
    assert_false(request->released);
    __atomic_store_n(&request->released, 1, __ATOMIC_RELEASE);
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_InputProperties(TRITONBACKEND_Input *input, const char **name,
                                                  TRITONSERVER_DataType *datatype,
                                                  const int64_t **shape, uint32_t *dims_count,
                                                  uint64_t *byte_size, uint32_t *buffer_count)
{
    *name = input->name;
    *datatype = input->type;
    *shape = input->shape;
    *dims_count = input->rank;
    *byte_size = input->bytes;
    *buffer_count = input->n_buffers;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_InputBuffer(TRITONBACKEND_Input *input, const uint32_t index,
                                              const void **buffer, uint64_t *buffer_byte_size,
                                              TRITONSERVER_MemoryType *memory_type,
                                              int64_t *memory_type_id)
{
    uint64_t part = input->bytes / input->n_buffers;
    *buffer = (const char *)input->data + index * part;
    *buffer_byte_size = index + 1 == input->n_buffers ? input->bytes - index * part : part;
    *memory_type = input->memory;
    *memory_type_id = 0;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ResponseNew(TRITONBACKEND_Response **response,
                                              TRITONBACKEND_Request *request)
{
    assert_null(request->response);
    request->response = calloc(1, sizeof **response);
    *response = request->response;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ResponseDelete(TRITONBACKEND_Response *response)
{
    (void)response;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ResponseOutput(TRITONBACKEND_Response *response,
                                                 TRITONBACKEND_Output **output, const char *name,
                                                 const TRITONSERVER_DataType datatype,
                                                 const int64_t *shape, const uint32_t dims_count)
{
    assert_int_equal(datatype, TRITONSERVER_TYPE_FP32);
    (void)shape;
    (void)dims_count;
    TRITONBACKEND_Output *o = &response->outputs[response->n_outputs++];
    snprintf(o->name, sizeof o->name, "%s", name);
    *output = o;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_OutputBuffer(TRITONBACKEND_Output *output, void **buffer,
                                               const uint64_t buffer_byte_size,
                                               TRITONSERVER_MemoryType *memory_type,
                                               int64_t *memory_type_id)
{
    output->buffer = calloc(1, buffer_byte_size);
    output->bytes = buffer_byte_size;
    *buffer = output->buffer;
    *memory_type = TRITONSERVER_MEMORY_CPU;
    *memory_type_id = 0;
    return NULL;
}
TRITONSERVER_Error *TRITONBACKEND_ResponseSend(TRITONBACKEND_Response *response,
                                               const uint32_t send_flags,
                                               TRITONSERVER_Error *error)
{
    assert_int_equal(send_flags, TRITONSERVER_RESPONSE_COMPLETE_FINAL);
    assert_false(response->sent);
    if (error) {
        response->failed = 1;
        response->code = error->code;
        snprintf(response->msg, sizeof response->msg, "%s", error->msg);
    }
    response->sent = 1;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static const char *TINY_CONFIG =
    "{\"name\":\"tiny\",\"backend\":\"dstack\",\"max_batch_size\":8,"
    "\"input\":[{\"name\":\"input\",\"data_type\":\"TYPE_FP32\",\"dims\":[\"3\",\"8\",\"8\"]}],"
    "\"output\":[{\"name\":\"probs\",\"data_type\":\"TYPE_FP32\",\"dims\":[\"5\"]}]}";

static float samples_in[4 * 192], samples_out[4 * 5];
static char repo[512];

static void read_file(const char *path, void *buf, size_t bytes)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, bytes, f), bytes);
    fclose(f);
}

static int setup_files(void **state)
{
    (void)state;
    read_file("tests/data/tiny_cnn.input.bin", samples_in, sizeof samples_in);
    read_file("tests/data/tiny_cnn.output.bin", samples_out, sizeof samples_out);
    snprintf(repo, sizeof repo, "/tmp/td-test-%d", (int)getpid());
    char dir[600], link[700], target[4096];
    snprintf(dir, sizeof dir, "%s/1", repo);
    snprintf(link, sizeof link, "%s/model.onnx", dir);
    assert_non_null(getcwd(target, sizeof target - 40));
    strcat(target, "/tests/data/tiny_cnn.onnx");
    char cmd[6000];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && ln -sf %s %s", dir, target, link);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int teardown_files(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", repo);
    return system(cmd);
}

typedef struct fixture {
    TRITONBACKEND_Backend backend;
    TRITONBACKEND_Model model;
    TRITONBACKEND_ModelInstance instance;
} fixture;

static void expect_ok(TRITONSERVER_Error *e)
{
    if (e) {
        fprintf(stderr, "unexpected error: %s\n", e->msg);
        TRITONSERVER_ErrorDelete(e);
        fail();
    }
}

static void load(fixture *f, const char *backend_config, const char *config)
{
    memset(f, 0, sizeof *f);
    f->backend.config = backend_config;
    expect_ok(TRITONBACKEND_Initialize(&f->backend));
    f->model = (TRITONBACKEND_Model){.name = "tiny", .repo = repo, .config = config,
                                     .backend = &f->backend};
    expect_ok(TRITONBACKEND_ModelInitialize(&f->model));
    f->instance = (TRITONBACKEND_ModelInstance){.name = "tiny_0",
                                                .kind = TRITONSERVER_INSTANCEGROUPKIND_CPU,
                                                .model = &f->model};
    expect_ok(TRITONBACKEND_ModelInstanceInitialize(&f->instance));
}

static void unload(fixture *f)
{
    expect_ok(TRITONBACKEND_ModelInstanceFinalize(&f->instance));
    expect_ok(TRITONBACKEND_ModelFinalize(&f->model));
    expect_ok(TRITONBACKEND_Finalize(&f->backend));
    free(f->model.set_config);
}

/* A request for samples [first, first + n) of tests/data's inputs. */
static TRITONBACKEND_Request *request_new(uint32_t first, uint32_t n, uint32_t n_buffers)
{
    TRITONBACKEND_Request *r = calloc(1, sizeof *r);
    r->n_inputs = 1;
    r->inputs[0] = (TRITONBACKEND_Input){.name = "input", .shape = {n, 3, 8, 8}, .rank = 4,
                                         .type = TRITONSERVER_TYPE_FP32,
                                         .data = samples_in + first * 192,
                                         .bytes = (uint64_t)n * 192 * 4, .n_buffers = n_buffers,
                                         .memory = TRITONSERVER_MEMORY_CPU};
    r->n_outputs = 1;
    r->outputs[0] = "probs";
    return r;
}

static void wait_released(TRITONBACKEND_Request **rs, int n)
{
    for (int waited_ms = 0; waited_ms < 20000; waited_ms++) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= __atomic_load_n(&rs[i]->released, __ATOMIC_ACQUIRE);
        if (all)
            return;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    fail_msg("requests not released within 20 s");
}

static void request_free(TRITONBACKEND_Request *r)
{
    if (r->response) {
        for (uint32_t i = 0; i < r->response->n_outputs; i++)
            free(r->response->outputs[i].buffer);
        free(r->response);
    }
    free(r);
}

static void expect_outputs(TRITONBACKEND_Request *r, uint32_t first, uint32_t n)
{
    assert_non_null(r->response);
    assert_true(r->response->sent);
    if (r->response->failed)
        fail_msg("response failed: %s", r->response->msg);
    assert_int_equal(r->response->n_outputs, 1);
    assert_int_equal(r->response->outputs[0].bytes, n * 5 * 4);
    const float *y = r->response->outputs[0].buffer;
    for (uint32_t i = 0; i < n * 5; i++)
        assert_float_equal(y[i], samples_out[first * 5 + i], 1e-5);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static void test_server_api_older_minor_or_other_major_is_refused(void **state)
{
    (void)state;
    TRITONBACKEND_Backend b = {.config = "{\"cmdline\":{}}"};
    api_minor = 18;
    TRITONSERVER_Error *e = TRITONBACKEND_Initialize(&b);
    assert_non_null(e);
    assert_int_equal(e->code, TRITONSERVER_ERROR_UNSUPPORTED);
    assert_non_null(strstr(e->msg, "1.18"));
    TRITONSERVER_ErrorDelete(e);
    api_minor = 19;
    api_major = 2;
    assert_non_null(e = TRITONBACKEND_Initialize(&b));
    TRITONSERVER_ErrorDelete(e);
    api_major = 1;
    assert_null(b.state);
}

static void test_requests_answered_with_library_outputs(void **state)
{
    (void)state;
    fixture f;
    load(&f, "{\"cmdline\":{\"backend\":\"cpu\"}}", TINY_CONFIG);
    TRITONBACKEND_Request *rs[3] = {request_new(0, 1, 1), request_new(1, 3, 1),
                                    request_new(0, 4, 3)};
    expect_ok(TRITONBACKEND_ModelInstanceExecute(&f.instance, rs, 3));
    wait_released(rs, 3);
    expect_outputs(rs[0], 0, 1);
    expect_outputs(rs[1], 1, 3);
    expect_outputs(rs[2], 0, 4); /* input gathered from 3 buffers */
    assert_int_equal(f.instance.stats_ok, 3);
    assert_int_equal(f.instance.batch_samples, 8);
    for (int i = 0; i < 3; i++)
        request_free(rs[i]);
    unload(&f);
}

static void test_cancelled_and_gpu_memory_requests_get_errors(void **state)
{
    (void)state;
    fixture f;
    load(&f, "{\"cmdline\":{\"backend\":\"cpu\"}}", TINY_CONFIG);
    TRITONBACKEND_Request *rs[3] = {request_new(0, 2, 1), request_new(0, 1, 1),
                                    request_new(2, 2, 1)};
    rs[0]->cancelled = 1;
    rs[1]->inputs[0].memory = TRITONSERVER_MEMORY_GPU;
    expect_ok(TRITONBACKEND_ModelInstanceExecute(&f.instance, rs, 3));
    wait_released(rs, 3);
    assert_true(rs[0]->response->failed);
    assert_int_equal(rs[0]->response->code, TRITONSERVER_ERROR_CANCELLED);
    assert_true(rs[1]->response->failed);
    assert_int_equal(rs[1]->response->code, TRITONSERVER_ERROR_UNSUPPORTED);
    assert_non_null(strstr(rs[1]->response->msg, "GPU memory"));
    expect_outputs(rs[2], 2, 2);
    assert_int_equal(f.instance.stats_failed, 2);
    assert_int_equal(f.instance.stats_ok, 1);
    for (int i = 0; i < 3; i++)
        request_free(rs[i]);
    unload(&f);
}

static void test_request_deadline_parameter(void **state)
{
    (void)state;
    fixture f;
    load(&f, "{\"cmdline\":{\"backend\":\"cpu\"}}", TINY_CONFIG);
    TRITONBACKEND_Request *rs[3] = {request_new(0, 2, 1), request_new(0, 2, 1),
                                    request_new(0, 2, 1)};
    rs[0]->param_key = rs[1]->param_key = rs[2]->param_key = "deadline_us";
    rs[0]->param_type = TRITONSERVER_PARAMETER_INT;
    rs[0]->param_int = 1; /* gone before any batch can start */
    rs[1]->param_type = TRITONSERVER_PARAMETER_STRING;
    rs[1]->param_string = "soon";
    rs[2]->param_type = TRITONSERVER_PARAMETER_STRING;
    rs[2]->param_string = "60000000";
    expect_ok(TRITONBACKEND_ModelInstanceExecute(&f.instance, rs, 3));
    wait_released(rs, 3);
    assert_true(rs[0]->response->failed);
    assert_int_equal(rs[0]->response->code, TRITONSERVER_ERROR_UNAVAILABLE);
    assert_non_null(strstr(rs[0]->response->msg, "deadline missed"));
    assert_true(rs[1]->response->failed);
    assert_int_equal(rs[1]->response->code, TRITONSERVER_ERROR_INVALID_ARG);
    expect_outputs(rs[2], 0, 2);
    for (int i = 0; i < 3; i++)
        request_free(rs[i]);
    unload(&f);
}

static void test_request_bigger_than_queue_is_unavailable_after_its_queued_samples(void **state)
{
    (void)state;
    fixture f;
    load(&f, "{\"cmdline\":{\"backend\":\"cpu\",\"queue_capacity\":\"2\"}}", TINY_CONFIG);
    enum { N = 10 };
    TRITONBACKEND_Request *rs[N];
    for (int i = 0; i < N; i++)
        rs[i] = request_new(0, 4, 1);
    /* 40 samples back to back into a queue of 2: some requests cannot fit. */
    expect_ok(TRITONBACKEND_ModelInstanceExecute(&f.instance, rs, N));
    wait_released(rs, N);
    int full = 0;
    for (int i = 0; i < N; i++) {
        if (!rs[i]->response->failed) {
            expect_outputs(rs[i], 0, 4);
            continue;
        }
        assert_int_equal(rs[i]->response->code, TRITONSERVER_ERROR_UNAVAILABLE);
        assert_non_null(strstr(rs[i]->response->msg, "queue full"));
        full++;
    }
    assert_true(full > 0);
    assert_int_equal(f.instance.stats_failed, full);
    assert_int_equal(f.instance.stats_ok, N - full);
    for (int i = 0; i < N; i++)
        request_free(rs[i]);
    unload(&f);
}

static void test_two_models_share_one_context(void **state)
{
    (void)state;
    fixture f, g;
    load(&f, "{\"cmdline\":{\"backend\":\"cpu\"}}", TINY_CONFIG);
    g = f;
    g.model = (TRITONBACKEND_Model){.name = "tiny2", .repo = repo,
                                    .config = "{\"backend\":\"dstack\"}", .backend = &f.backend};
    expect_ok(TRITONBACKEND_ModelInitialize(&g.model));
    g.instance = (TRITONBACKEND_ModelInstance){.name = "tiny2_0",
                                               .kind = TRITONSERVER_INSTANCEGROUPKIND_CPU,
                                               .model = &g.model};
    expect_ok(TRITONBACKEND_ModelInstanceInitialize(&g.instance));
    td_backend *b = f.backend.state;
    assert_non_null(b->contexts);
    assert_null(b->contexts->next);
    assert_int_equal(b->contexts->n_models, 2);
    /* The second config said nothing: it was completed from the ONNX model. */
    assert_non_null(g.model.set_config);
    assert_non_null(strstr(g.model.set_config, "\"probs\""));
    TRITONBACKEND_Request *r = request_new(0, 4, 1);
    expect_ok(TRITONBACKEND_ModelInstanceExecute(&g.instance, &r, 1));
    wait_released(&r, 1);
    expect_outputs(r, 0, 4);
    request_free(r);
    expect_ok(TRITONBACKEND_ModelInstanceFinalize(&g.instance));
    expect_ok(TRITONBACKEND_ModelFinalize(&g.model));
    assert_int_equal(b->contexts->n_models, 1);
    free(g.model.set_config);
    unload(&f);
}

static void test_model_config_refusals(void **state)
{
    (void)state;
    TRITONBACKEND_Backend b = {.config = "{\"cmdline\":{\"backend\":\"cpu\",\"policy\":\"temporal\"}}"};
    expect_ok(TRITONBACKEND_Initialize(&b));
    const struct {
        const char *config, *needle;
    } cases[] = {
        {"{\"dynamic_batching\":{}}", "dynamic_batching"},
        {"{\"parameters\":{\"policy\":{\"string_value\":\"streams\"}}}", "policy temporal"},
        {"{\"parameters\":{\"backend\":{\"string_value\":\"sim\"}}}", "cpu backend"},
        {"{\"default_model_filename\":\"missing.onnx\"}", "missing.onnx"},
        {"{\"max_batch_size\":4,\"input\":[{\"name\":\"x\",\"dims\":[3,8,8]}]}", "'x'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TRITONBACKEND_Model m = {.name = "bad", .repo = repo, .config = cases[i].config,
                                 .backend = &b};
        TRITONSERVER_Error *e = TRITONBACKEND_ModelInitialize(&m);
        assert_non_null(e);
        if (!strstr(e->msg, cases[i].needle))
            fail_msg("case %zu: '%s' lacks '%s'", i, e->msg, cases[i].needle);
        TRITONSERVER_ErrorDelete(e);
        assert_null(m.state);
        free(m.set_config);
    }
    td_backend *tb = b.state;
    for (td_context *c = tb->contexts; c; c = c->next)
        assert_int_equal(c->n_models, 0); /* nothing stays registered */
    expect_ok(TRITONBACKEND_Finalize(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_api_older_minor_or_other_major_is_refused),
        cmocka_unit_test(test_requests_answered_with_library_outputs),
        cmocka_unit_test(test_cancelled_and_gpu_memory_requests_get_errors),
        cmocka_unit_test(test_request_deadline_parameter),
        cmocka_unit_test(test_request_bigger_than_queue_is_unavailable_after_its_queued_samples),
        cmocka_unit_test(test_two_models_share_one_context),
        cmocka_unit_test(test_model_config_refusals),
    };
    return cmocka_run_group_tests(tests, setup_files, teardown_files);
}
