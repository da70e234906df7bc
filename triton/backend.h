/*
 * backend.h - state of the dstack Triton backend, shared by backend.c (the
 * life cycle: backend, models, instances, one libdstack context per device)
 * and execute.c (requests in, responses out).
 *
 * Ownership, top down: td_backend owns the contexts (td_context, one per
 * backend kind and device, each with its poller thread); td_model owns its
 * registrations (td_registration: the model on one context); td_instance
 * points at one registration and counts its Triton requests in flight;
 * td_job is one Triton request from execute until its response is sent.
 */
#ifndef TRITON_DSTACK_BACKEND_H
#define TRITON_DSTACK_BACKEND_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "dstack.h"
#include "triton_api.h"

#define TD_MAX_REGISTRATIONS 8 /* devices one model may have instances on */
#define TD_BATCH_RING 32       /* recent batches remembered for batch statistics */

typedef struct td_context {
    struct td_context *next;
    int id;                 /* shown in the log: models sharing it print the same id */
    dstack_backend asked;   /* with device: the key contexts are found by */
    int device;
    td_ctx_params params;   /* what it was created with (policy as actually used) */
    dstack_ctx *ctx;
    dstack_ctx_info info;
    pthread_t poller;
    uint32_t n_models;      /* registered now, under td_backend.lock */
} td_context;

typedef struct td_backend {
    pthread_mutex_t lock;   /* the context list and n_models */
    td_context *contexts;
    int next_context_id;
    td_ctx_params defaults; /* --backend-config=dstack,... */
    uint32_t default_max_batch;
} td_backend;

typedef struct td_registration {
    td_context *tctx;
    dstack_model *model;
    dstack_model_info info;
    /* Start times of the batches already reported to Triton. Touched only by
     * the context's poller thread. */
    uint64_t batch_starts[TD_BATCH_RING];
    uint32_t batch_next;
} td_registration;

typedef struct td_model {
    td_backend *backend;
    char name[256];
    uint64_t version;
    td_model_config cfg;
    td_ctx_params ctx_params; /* backend defaults + the model's parameters */
    char onnx_path[4096];
    pthread_mutex_t lock;     /* the registrations */
    td_registration regs[TD_MAX_REGISTRATIONS];
    uint32_t n_regs;
} td_model;

typedef struct td_instance {
    TRITONBACKEND_ModelInstance *triton;
    td_model *model;
    td_registration *reg;
    char name[256];
    pthread_mutex_t lock;
    pthread_cond_t idle;
    uint32_t in_flight;       /* Triton requests executed, not yet answered */
} td_instance;

/* Log through Triton's logger (shows up in the server log). */
void td_log(TRITONSERVER_LogLevel level, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define TD_LOG(level, ...) td_log(TRITONSERVER_LOG_##level, __LINE__, __VA_ARGS__)

/* CLOCK_MONOTONIC in ns: Triton's statistics clock (steady_clock). */
uint64_t td_monotonic_ns(void);

/* The poller of one context: turns completions into responses until the
 * context is shut down and drained. */
void *td_poller_main(void *arg);

/* Block until every Triton request of the instance has been answered. */
void td_instance_wait_idle(td_instance *inst);

#endif /* TRITON_DSTACK_BACKEND_H */
