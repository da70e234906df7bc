/*
 * dstack.h - libdstack, several DNN models served on one GPU at once.
 *
 * Each model runs on the share of SMs it can really use (its knee), with an
 * SLO-aware batch size, under a spatio-temporal scheduler (D-STACK,
 * arXiv 2304.13541). Backends: cuda (cuDNN/cuBLAS on green-context SM
 * partitions), cpu (the reference executor), sim (a simulated GPU).
 *
 * Conventions that hold for every function below unless its comment says
 * otherwise:
 *  - Functions return a dstack_status. On failure the detail of the cause is
 *    available from dstack_last_error() in the same thread, and every output
 *    parameter is left untouched.
 *  - Pointers passed in are borrowed for the duration of the call only.
 *  - Structs whose first field is `struct_size` must be filled by their
 *    *_init() function first; the library reads only the fields that fit in
 *    struct_size, so a program built against an older header keeps working.
 *  - Times are nanoseconds on the context's monotonic clock (dstack_now_ns),
 *    durations carry their unit in their name (_ns, _us).
 */
#ifndef DSTACK_H
#define DSTACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSTACK_VERSION_MAJOR 0
#define DSTACK_VERSION_MINOR 1
#define DSTACK_VERSION_PATCH 0
#define DSTACK_VERSION_NUMBER \
    (DSTACK_VERSION_MAJOR * 10000 + DSTACK_VERSION_MINOR * 100 + DSTACK_VERSION_PATCH)

#if defined(DSTACK_BUILDING_LIBRARY) && defined(__GNUC__)
#define DSTACK_API __attribute__((visibility("default")))
#else
#define DSTACK_API
#endif

/* Most inputs or outputs a model may have. */
#define DSTACK_MAX_IO 16
/* Most dimensions of a tensor. */
#define DSTACK_MAX_RANK 8
/* Length of the fixed name buffers in the info structs, NUL included. */
#define DSTACK_NAME_LEN 64

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

typedef enum dstack_status {
    DSTACK_OK = 0,
    DSTACK_ERR_INVALID_ARGUMENT = 1, /* NULL, zero or out-of-range argument */
    DSTACK_ERR_OUT_OF_MEMORY = 2,    /* host allocation failed */
    DSTACK_ERR_NOT_FOUND = 3,        /* unknown model handle, zoo name, file */
    DSTACK_ERR_IO = 4,               /* a file could not be read */
    DSTACK_ERR_PARSE = 5,            /* malformed, truncated or corrupt ONNX */
    DSTACK_ERR_UNSUPPORTED_OP = 6,   /* an op or attribute the IR cannot run */
    DSTACK_ERR_UNSUPPORTED_TYPE = 7, /* a tensor that is not float32 */
    DSTACK_ERR_SHAPE = 8,            /* shapes do not infer or do not match */
    DSTACK_ERR_EXTERNAL_DATA = 9,    /* ONNX tensor stored in an external file */
    DSTACK_ERR_SIZE_MISMATCH = 10,   /* a request buffer has the wrong size */
    DSTACK_ERR_QUEUE_FULL = 11,      /* the model's queue is full: retry later */
    DSTACK_ERR_SHUTTING_DOWN = 12,   /* the context or model is shutting down */
    DSTACK_ERR_NO_DEVICE = 13,       /* no CUDA driver or no usable GPU */
    DSTACK_ERR_DEVICE = 14,          /* a CUDA, cuDNN or cuBLAS call failed */
    DSTACK_ERR_UNSUPPORTED = 15,     /* option not available in this build/backend */
    DSTACK_ERR_DEADLINE_MISSED = 16, /* completion: not run, its deadline could no longer
                                        be met (less time left than the fastest run) */
    DSTACK_ERR_CANCELLED = 17,       /* completion: cancelled by shutdown/unregister */
    DSTACK_ERR_INTERNAL = 18,        /* a bug in libdstack: please report it */
    DSTACK_ERR_RESOURCE_LIMIT = 19   /* a model over a budget of dstack_options (work or
                                        memory per request/model, nesting): raise the
                                        budget or fix the model; or over a limit of the
                                        policy (static_spatial: one model per unit) */
} dstack_status;

/* A fixed English string for a status; never NULL, never to be freed.
 * Thread-safe. Unknown codes give "unknown status". */
DSTACK_API const char *dstack_strerror(dstack_status status);

/* The detail message of the last failure of a dstack_ call made by this
 * thread ("input 0 expects 602112 bytes, got 150528"), or "" if none.
 * Thread-local: valid until this thread's next dstack_ call. */
DSTACK_API const char *dstack_last_error(void);

/* The run-time version, DSTACK_VERSION_NUMBER of the library actually
 * loaded, and its "MAJOR.MINOR.PATCH" string. Thread-safe. */
DSTACK_API unsigned dstack_version(void);
DSTACK_API const char *dstack_version_string(void);

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct dstack_ctx dstack_ctx;     /* opaque: one scheduler, one device */
typedef struct dstack_model dstack_model; /* opaque: a registered model */

typedef enum dstack_backend {
    DSTACK_BACKEND_AUTO = 0, /* cuda when a usable GPU is there, else cpu */
    DSTACK_BACKEND_CPU = 1,  /* reference executor, plain C */
    DSTACK_BACKEND_CUDA = 2, /* cuDNN and cuBLAS on SM partitions */
    DSTACK_BACKEND_SIM = 3   /* simulated GPU, virtual SMs and clock: for the
                                scheduler and its timing only; it computes no
                                results (outputs are written as zeros) */
} dstack_backend;

typedef enum dstack_partitioning {
    DSTACK_PARTITION_AUTO = 0,      /* green contexts if the driver has them, else none */
    DSTACK_PARTITION_GREEN_CTX = 1, /* CUDA green contexts, one process */
    DSTACK_PARTITION_MPS = 2,       /* CUDA MPS: the daemon must already run */
    DSTACK_PARTITION_NONE = 3       /* ordinary streams, no SM limits */
} dstack_partitioning;

typedef enum dstack_policy {
    DSTACK_POLICY_DSTACK = 0,         /* default: knee + SLO batch + fair cycle */
    DSTACK_POLICY_TEMPORAL = 1,       /* one batch at a time on the whole GPU, FCFS */
    DSTACK_POLICY_STREAMS = 2,        /* every model on its own stream, no limits */
    DSTACK_POLICY_STATIC_SPATIAL = 3, /* fixed disjoint partitions, no time sharing: at
                                         most one model per partition unit (1 on cpu,
                                         15 on an H100); register refuses more with
                                         RESOURCE_LIMIT */
    DSTACK_POLICY_IDEAL = 4           /* sim only: each kernel gets exactly its SMs */
} dstack_policy;

/* Log levels, least to most severe. What the library logs at each:
 *   DEBUG  detail for whoever debugs libdstack: every profiling measurement
 *          (model, batch, share, latency), cache keys and paths, per-layer
 *          plan and algorithm choices.
 *   INFO   one line per notable step: the backend, device and policy chosen
 *          by dstack_create; a model's registration progress (plans built,
 *          profiling step n of m, profile cache hit or miss); its knee,
 *          batch size and predicted latency; a re-plan after the arrival
 *          rate changed.
 *   WARN   degraded but working: a fallback (auto chose cpu, a partitioning
 *          mode unavailable), a cache entry ignored (stale, corrupt) or not
 *          written, an SLO that no batch size can meet.
 *   ERROR  dstack_create or dstack_register_model is about to fail: the
 *          same text dstack_last_error() gives. Calls on the request path
 *          (submit, poll, the info and stats reads) are not logged when
 *          they fail: their status and dstack_last_error() say it.
 *   OFF    as a minimum level: nothing. */
typedef enum dstack_log_level {
    DSTACK_LOG_DEBUG = 0,
    DSTACK_LOG_INFO = 1,
    DSTACK_LOG_WARN = 2,
    DSTACK_LOG_ERROR = 3,
    DSTACK_LOG_OFF = 4
} dstack_log_level;

/* Longest message passed to a log callback, NUL included; longer ones are
 * cut and end in "...". */
#define DSTACK_LOG_MAX_MESSAGE 512

/* A log sink: `msg` is one line without a newline, valid during the call
 * only. Called from whichever library thread logs, possibly several at once:
 * it must be thread-safe, return quickly and not call into libdstack. */
typedef void (*dstack_log_fn)(void *user, dstack_log_level level, const char *msg);

/* A ready-made sink: "libdstack: LEVEL: msg" and a newline on stderr. */
DSTACK_API void dstack_log_stderr(void *user, dstack_log_level level, const char *msg);

typedef struct dstack_options {
    size_t struct_size;               /* set by dstack_options_init */
    dstack_backend backend;           /* default AUTO */
    int device;                       /* CUDA device ordinal, default 0 */
    dstack_partitioning partitioning; /* default AUTO */
    dstack_policy policy;             /* default DSTACK */
    uint32_t queue_capacity;          /* samples per model accepted and not yet polled
                                         (queued, running, or done and waiting for
                                         dstack_poll); beyond it submit gives QUEUE_FULL.
                                         1..1048576, default 1024 */
    uint32_t cpu_threads;             /* cpu backend worker threads, 0 = one per core */
    uint32_t sim_sm_count;            /* sim backend: SMs of the virtual GPU, default 132 */
    /* Budgets checked at dstack_register_model, which refuses a model over
     * one with RESOURCE_LIMIT and a message naming the op; UINT64_MAX turns
     * one off. They keep a hostile or mistaken model file from taking the
     * host's memory or holding the device for minutes per request. */
    uint64_t max_model_memory_bytes;  /* host memory of one model: weights, activations
                                         at max_batch, scratch, and the unpacked ONNX
                                         while importing. Default 4 GiB (VGG-19 at
                                         batch 32 needs about 1.5 GiB) */
    uint64_t max_request_ops;         /* work of one request, counted as in
                                         dstack_model_info.flops_per_request (pool
                                         windows included). Default 10^12 (VGG-19 at
                                         224x224 is 4 x 10^10) */
    /* Logging. The library never prints on its own: with log_fn NULL (the
     * default) it is silent, unless the environment variable DSTACK_LOG is
     * set to debug, info, warn or error when the context is created, which
     * sends that level and above to stderr (dstack_log_stderr). */
    dstack_log_fn log_fn;             /* default NULL */
    void *log_user;                   /* passed to log_fn as is */
    dstack_log_level log_level;       /* least severe level passed to log_fn, default INFO */
    /* Profile cache: where dstack_register_model keeps each model's measured
     * latency table, so registering it again skips profiling. Keyed by the
     * model's content (SHA-256 of the ONNX bytes, or the zoo name and its
     * parameters), max_batch, the device (name, SMs, partition unit,
     * partitioning), the library and backend versions; an entry that does
     * not match or fails its checksum is ignored (logged at WARN) and
     * rebuilt. Written atomically (temporary file + rename), so processes
     * may share a directory. NULL (the default): $XDG_CACHE_HOME/dstack,
     * else $HOME/.cache/dstack; "" turns the cache off. The string is
     * copied by dstack_create. */
    const char *profile_cache_dir;
} dstack_options;

/* Fill *options with the defaults above. */
DSTACK_API void dstack_options_init(dstack_options *options);

/* Create a context: picks the backend, opens the device, starts the
 * scheduler and planner threads. `options` may be NULL for all defaults.
 * Fails with INVALID_ARGUMENT (bad option value or ctx NULL), NO_DEVICE
 * (backend CUDA without driver or GPU, or libdstack-cuda.so missing),
 * UNSUPPORTED (backend not built in; policy IDEAL on a backend other than
 * sim), DEVICE, OUT_OF_MEMORY.
 * Thread-safe; contexts are independent of each other. */
DSTACK_API dstack_status dstack_create(const dstack_options *options, dstack_ctx **ctx);

/* Stop accepting requests: later submits fail with SHUTTING_DOWN, every
 * queued request completes as CANCELLED, batches already running finish.
 * All those completions stay available to dstack_poll, which returns
 * SHUTTING_DOWN once the last one has been taken. Idempotent, thread-safe;
 * blocks until running batches have finished. */
DSTACK_API dstack_status dstack_shutdown(dstack_ctx *ctx);

/* Shut down (as above), then free the context, its models and every
 * completion not yet polled. After it returns the library touches no
 * request buffer again. Must not run concurrently with any other call on
 * the same context. NULL is a no-op. */
DSTACK_API void dstack_destroy(dstack_ctx *ctx);

/* The context's clock, in ns: the time base of deadlines and timestamps.
 * The same CLOCK_MONOTONIC for every context (NULL too), so times of two
 * contexts compare. Thread-safe. */
DSTACK_API uint64_t dstack_now_ns(const dstack_ctx *ctx);

typedef struct dstack_ctx_info {
    size_t struct_size;             /* set by dstack_ctx_info_init */
    dstack_backend backend;         /* the backend in use (never AUTO) */
    dstack_partitioning partitioning; /* the mechanism in use (never AUTO) */
    dstack_policy policy;           /* the policy in use */
    char policy_name[DSTACK_NAME_LEN];
    char device_name[DSTACK_NAME_LEN]; /* "NVIDIA H100 80GB HBM3", "cpu", "sim H100 SXM (132 SMs, ...)" */
    uint32_t sm_count;              /* SMs of the device (cpu: cores used) */
    uint32_t partition_unit_sms;    /* SMs per partition unit (granularity) */
    uint32_t partition_units;       /* units the scheduler can hand out */
    uint32_t n_models;              /* models registered now */
    char note[256];                 /* why AUTO chose what it chose, fallbacks */
} dstack_ctx_info;

DSTACK_API void dstack_ctx_info_init(dstack_ctx_info *info);

/* Describe the context. Thread-safe. INVALID_ARGUMENT on NULL or a
 * struct_size that does not reach past `policy` (the smallest
 * dstack_ctx_info there will ever be); a struct_size between that and
 * sizeof(dstack_ctx_info) gets only the fields that fit. */
DSTACK_API dstack_status dstack_ctx_info_get(dstack_ctx *ctx, dstack_ctx_info *info);

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum dstack_model_source {
    DSTACK_SOURCE_ONNX_FILE = 1,  /* desc.path is an .onnx file */
    DSTACK_SOURCE_ONNX_BYTES = 2, /* desc.bytes/n_bytes hold an ONNX model */
    DSTACK_SOURCE_ZOO = 3         /* desc.path is a zoo name ("resnet50"), below */
} dstack_model_source;

/* The built-in zoo: torchvision architectures built by code with generated
 * weights (seeded by desc.seed), one input (1, 3, S, S), S =
 * desc.zoo_image_size, and one output (1, desc.zoo_classes). Names:
 *   resnet18 resnet34 resnet50 resnet101 resnet152 mobilenet_v2 vgg16 vgg19
 *   alexnet squeezenet1_0 squeezenet1_1 googlenet densenet121
 * and the aliases squeezenet (= squeezenet1_1) and inception (= googlenet).
 * dstack_zoo_name(i) for i in 0..dstack_zoo_count()-1 gives every name this
 * library knows, aliases included; NULL past the end. The strings are
 * static: never to be freed. Thread-safe. */
DSTACK_API size_t dstack_zoo_count(void);
DSTACK_API const char *dstack_zoo_name(size_t index);

/* The largest desc.slo_us accepted (2^52 us, about 142 years): register
 * refuses a larger one with INVALID_ARGUMENT rather than let a deadline of
 * now + SLO wrap around. For no SLO at all, use 0. */
#define DSTACK_MAX_SLO_US (UINT64_C(1) << 52)

typedef enum dstack_precision {
    DSTACK_PRECISION_FP32 = 0, /* float32 everywhere: matches the cpu backend */
    DSTACK_PRECISION_TF32 = 1, /* cuda: tensor cores with TF32 inputs */
    DSTACK_PRECISION_FP16 = 2  /* cuda: half storage and math, float32 I/O */
} dstack_precision;

typedef struct dstack_model_desc {
    size_t struct_size;         /* set by dstack_model_desc_init */
    dstack_model_source source; /* required */
    const char *path;           /* ONNX_FILE: file path; ZOO: model name */
    const void *bytes;          /* ONNX_BYTES: the model, copied at register */
    size_t n_bytes;
    const char *name;           /* display name; default: zoo name or file stem */
    uint64_t slo_us;            /* latency objective per request; 0 = none;
                                   at most DSTACK_MAX_SLO_US */
    uint32_t max_batch;         /* largest batch ever formed, default 32 */
    uint32_t fixed_sm_count;    /* 0: the library picks the knee; else SMs,
                                   rounded up to partition units, and more
                                   than the device has means all of it; all
                                   the units are the whole device (132 SMs
                                   on an H100, not 15 x 8). It is the planned
                                   share, not a cap: dstack hands idle units
                                   to a model with work */
    uint32_t fixed_batch;       /* 0: the library picks the batch; else this */
    dstack_precision precision; /* default FP32 */
    uint64_t seed;              /* ZOO: seed of the generated weights */
    uint32_t zoo_image_size;    /* ZOO: input side in pixels, default (and 0) 224 */
    uint32_t zoo_classes;       /* ZOO: output classes, default (and 0) 1000 */
} dstack_model_desc;

DSTACK_API void dstack_model_desc_init(dstack_model_desc *desc);

/* Load a model (ONNX file, ONNX bytes or zoo), build its plans on the
 * backend, choose its knee and batch size, and make it ready for submits.
 * On success *model is a handle owned by the context, valid until
 * dstack_unregister_model or dstack_destroy. On failure nothing stays
 * registered. Fails with INVALID_ARGUMENT, NOT_FOUND (file or zoo name),
 * IO, PARSE, UNSUPPORTED_OP, UNSUPPORTED_TYPE, SHAPE, EXTERNAL_DATA,
 * SHUTTING_DOWN, DEVICE, OUT_OF_MEMORY, RESOURCE_LIMIT (over a budget of
 * the options: options.max_request_ops, options.max_model_memory_bytes;
 * the message names the op; or under policy static_spatial, a model beyond
 * one per partition unit). Thread-safe (serialized
 * internally; may take seconds: it builds plans and may profile). */
DSTACK_API dstack_status dstack_register_model(dstack_ctx *ctx, const dstack_model_desc *desc,
                                               dstack_model **model);

/* Stop accepting requests for the model, complete its queued requests as
 * CANCELLED, wait for its running batch, then release it. The completions
 * stay pollable; the handle they carry is then only an identifier. The
 * caller must make sure no other thread submits to this model meanwhile.
 * NOT_FOUND if the handle is not a live model of ctx. */
DSTACK_API dstack_status dstack_unregister_model(dstack_ctx *ctx, dstack_model *model);

typedef struct dstack_tensor_info {
    char name[DSTACK_NAME_LEN]; /* truncated if longer */
    uint32_t rank;
    int64_t dims[DSTACK_MAX_RANK]; /* of ONE request; dims[0] is 1 when batched */
    size_t bytes;                  /* bytes of one request's buffer (float32) */
} dstack_tensor_info;

typedef struct dstack_model_info {
    size_t struct_size; /* set by dstack_model_info_init */
    char name[DSTACK_NAME_LEN];
    uint32_t n_inputs;
    uint32_t n_outputs;
    dstack_tensor_info inputs[DSTACK_MAX_IO];
    dstack_tensor_info outputs[DSTACK_MAX_IO];
    uint64_t param_count;       /* weights, after folding */
    uint64_t flops_per_request; /* work of one request: 2 x multiply-adds, pool
                                   taps visited, 1 per element otherwise */
    uint32_t max_batch;
    uint32_t batch_size;        /* the batch the scheduler aims for */
    uint32_t sm_count;          /* the knee: SMs the model is given (0 on cpu) */
    uint64_t predicted_latency_us; /* of one batch of batch_size at sm_count; 0 unknown */
    uint64_t slo_us;
    dstack_precision precision;
    uint32_t batchable;         /* 1: dims[0] of every input and output is the
                                 * sample axis and a batch (or a request of
                                 * n_samples) runs in one pass, each sample
                                 * computed as if alone: an ONNX model with a
                                 * symbolic batch dimension then gives for
                                 * N samples what it gives at batch N.
                                 * 0: the samples of a batch run one after
                                 * another, each as one whole input (for a
                                 * symbolic batch, at batch 1). */
} dstack_model_info;

DSTACK_API void dstack_model_info_init(dstack_model_info *info);

/* Describe a model. Thread-safe; does not wait for a registration running
 * in another thread. NOT_FOUND for an unknown handle. */
DSTACK_API dstack_status dstack_model_info_get(dstack_ctx *ctx, const dstack_model *model,
                                               dstack_model_info *info);

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

/* A caller-owned buffer of float32 values. */
typedef struct dstack_buffer {
    void *data;
    size_t bytes;
} dstack_buffer;

typedef struct dstack_request {
    size_t struct_size;           /* set by dstack_request_init */
    const dstack_buffer *inputs;  /* n_inputs, in the model's input order; read only */
    uint32_t n_inputs;
    const dstack_buffer *outputs; /* n_outputs, in the model's output order */
    uint32_t n_outputs;
    void *user_data;              /* handed back in the completion */
    uint64_t deadline_ns;         /* absolute, dstack_now_ns clock; 0 = now + SLO */
    uint32_t n_samples;           /* samples in each buffer, 1..max_batch; default 1
                                   * (0 is taken as 1). Each input and output buffer
                                   * holds n_samples consecutive samples (bytes =
                                   * n_samples x the per-sample bytes of
                                   * dstack_model_info); the request is never split
                                   * across batches and gets ONE completion. */
} dstack_request;

DSTACK_API void dstack_request_init(dstack_request *request);

typedef uint64_t dstack_ticket;

/* Queue one request (n_samples samples, default 1) for the model. Never blocks. The data the
 * buffers point to is not copied: the input buffers must stay valid and
 * unchanged, and the output buffers valid, until the ticket's completion is
 * polled (or dstack_destroy returns). The dstack_buffer arrays themselves
 * are copied and may be reused at once.
 * On OK, *ticket is set and exactly one completion for it will be returned
 * by dstack_poll. Fails with INVALID_ARGUMENT (also for a request of more
 * samples than max_batch or than queue_capacity, which no retry could
 * queue), NOT_FOUND (unknown model), SIZE_MISMATCH (buffer count or size differs from dstack_model_info),
 * QUEUE_FULL (nothing was queued: retry later), SHUTTING_DOWN.
 * Thread-safe: any number of threads may submit at once. */
DSTACK_API dstack_status dstack_submit(dstack_ctx *ctx, dstack_model *model,
                                       const dstack_request *request, dstack_ticket *ticket);

typedef struct dstack_completion {
    dstack_ticket ticket;
    void *user_data;
    dstack_model *model;   /* an identifier: may be unregistered by now */
    dstack_status status;  /* OK, DEADLINE_MISSED, CANCELLED, DEVICE, ... */
    uint32_t batch_size;   /* the batch it ran in; 0 if it did not run */
    uint64_t submit_ns;
    uint64_t start_ns;     /* its batch started; 0 if it did not run */
    uint64_t end_ns;       /* completed */
    uint64_t deadline_ns;  /* 0 = none */
} dstack_completion;

/* Take up to `max` completions, oldest first, into out[0..*n_out).
 * timeout_us: 0 returns at once, > 0 waits at most that long for the first
 * one, < 0 waits until one arrives or the context shuts down.
 * Returns OK (with *n_out possibly 0 after a timeout), SHUTTING_DOWN once
 * the context is shut down and every completion has been taken,
 * INVALID_ARGUMENT; on failure *n_out is left as it was, as every output
 * (so a loop that stops at SHUTTING_DOWN must not read it then). Thread-safe: several threads may poll; each completion
 * goes to exactly one of them. */
DSTACK_API dstack_status dstack_poll(dstack_ctx *ctx, dstack_completion *out, size_t max,
                                     int64_t timeout_us, size_t *n_out);

/* Allocate `bytes` of host memory for request buffers that the backend can
 * move to the device without an extra copy: page-locked memory on cuda (the
 * input copy then skips the staging memcpy), 64-byte aligned memory on cpu.
 * Optional: any memory works as a request buffer. Free it with
 * dstack_host_free on the same context, before dstack_destroy.
 * INVALID_ARGUMENT (NULL, bytes 0), OUT_OF_MEMORY, DEVICE. Thread-safe. */
DSTACK_API dstack_status dstack_host_alloc(dstack_ctx *ctx, size_t bytes, void **ptr);

/* Free memory from dstack_host_alloc of the same context; NULL is a no-op.
 * Thread-safe; the memory must not be in a request still outstanding. */
DSTACK_API void dstack_host_free(dstack_ctx *ctx, void *ptr);

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */
/* ------------------------------------------------------------------------ */

typedef struct dstack_model_stats {
    size_t struct_size; /* set by dstack_model_stats_init */
    uint64_t submitted;
    uint64_t rejected_queue_full;
    uint64_t completed_ok;
    uint64_t deadline_missed;  /* not run: less time was left to its deadline than
                                  the fastest run the policy may give it (so it can
                                  come back before the deadline itself) */
    uint64_t cancelled;
    uint64_t failed;
    uint64_t slo_met;          /* completed OK by their deadline (or no deadline) */
    uint64_t batches;          /* batches run */
    double mean_batch;         /* samples per batch run */
    double throughput_rps;     /* OK completions per second since registration */
    double slo_attainment;     /* slo_met / (completed_ok + deadline_missed + failed),
                                  1 when none: cancelled requests (shutdown,
                                  unregister) are the caller's doing, not a miss */
    uint64_t latency_p50_us;   /* submit to completion, OK completions */
    uint64_t latency_p99_us;
    uint64_t latency_max_us;
    uint32_t queued;           /* waiting now */
    /* What the scheduler does with the model now: */
    uint32_t batch_size;       /* samples per batch it aims for (re-planned online) */
    uint32_t sm_count;         /* SMs of its planned share (its knee; 0 on cpu); the
                                  policy may run it on more (dstack on idle units,
                                  temporal and streams on the whole device) or,
                                  static_spatial scaling knees to fit, on fewer */
    double arrival_rps;        /* measured arrival rate of samples, per second
                                * (a 1 s decayed count); 0 = not known yet: fewer
                                * than 32 requests, or under 51 ms since registration */
    double gpu_share;          /* its batches' partition-time over the device's
                                * partition-time since registration, 0..1; under
                                * streams batches overlap on the same units, so the
                                * models' shares can add up to more than 1 */
} dstack_model_stats;

DSTACK_API void dstack_model_stats_init(dstack_model_stats *stats);

/* Per-model counters since registration. Thread-safe. Percentiles come from
 * a log-linear histogram, exact to within 1/32 of the value. */
DSTACK_API dstack_status dstack_stats(dstack_ctx *ctx, const dstack_model *model,
                                      dstack_model_stats *stats);

/* What the scheduler does, device-wide. */
typedef struct dstack_ctx_stats {
    size_t struct_size;         /* set by dstack_ctx_stats_init */
    double uptime_s;            /* since dstack_create */
    double gpu_utilization;     /* busy SM-time over total SM-time since creation,
                                 * 0..1. sim: SMs with a resident block (the
                                 * engine's count); cuda and cpu: the SMs of the
                                 * partitions of running batches (an upper bound
                                 * on what the kernels really keep busy). */
    uint32_t batches_running;   /* now */
    uint32_t units_in_use;      /* partition units held by running batches now */
    uint32_t units_total;       /* units of the device */
    uint64_t batches;           /* batches finished since creation */
    uint64_t samples;           /* samples in those batches */
    uint64_t cycle_us;          /* the policy's cycle: over models with batches,
                                 * the longest mean time between two starts of
                                 * the same model (0 until two batches of one
                                 * model ran) */
    char policy_name[DSTACK_NAME_LEN];
} dstack_ctx_stats;

DSTACK_API void dstack_ctx_stats_init(dstack_ctx_stats *stats);

/* Device-wide counters and what runs now. Thread-safe. INVALID_ARGUMENT on
 * NULL or a struct_size below sizeof(size_t). */
DSTACK_API dstack_status dstack_ctx_stats_get(dstack_ctx *ctx, dstack_ctx_stats *stats);

#ifdef __cplusplus
}
#endif
#endif /* DSTACK_H */
