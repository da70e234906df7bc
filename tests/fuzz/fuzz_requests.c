/* fuzz_requests.c - libFuzzer: the request path as random sequences of
 * public calls (submit with right and wrong sizes, poll, unregister,
 * register, stats, shutdown) on the cpu backend, then a drain.
 *
 * The invariant checked: every ticket ever accepted is completed exactly
 * once, with its own user pointer, and no completion comes for a ticket
 * that was not accepted. The model is tests/data/tiny_cnn.onnx (or
 * $DSTACK_FUZZ_MODEL). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack.h"

#define MAX_TICKETS 512
#define MODELS 2

static void *model_bytes;
static bool trace; /* DSTACK_FUZZ_TRACE set: print every call (to replay a finding) */
static size_t model_n;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    trace = getenv("DSTACK_FUZZ_TRACE") != NULL;
    const char *path = getenv("DSTACK_FUZZ_MODEL");
    FILE *f = fopen(path ? path : "tests/data/tiny_cnn.onnx", "rb");
    if (!f) {
        fprintf(stderr, "fuzz_requests: cannot open the model (run from the repository root "
                        "or set DSTACK_FUZZ_MODEL)\n");
        abort();
    }
    fseek(f, 0, SEEK_END);
    model_n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    model_bytes = malloc(model_n);
    if (fread(model_bytes, 1, model_n, f) != model_n)
        abort();
    fclose(f);
    return 0;
}

typedef struct slot {
    dstack_ticket ticket;
    int completions;
    float *in, *out;
    dstack_buffer ib, ob;
} slot;

typedef struct state {
    dstack_ctx *ctx;
    dstack_model *models[MODELS];
    slot slots[MAX_TICKETS];
    uint32_t n_slots;
} state;

static dstack_status add_model(state *s, int k)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_BYTES;
    d.bytes = model_bytes;
    d.n_bytes = model_n;
    d.max_batch = 1 + (uint32_t)k * 3;
    return dstack_register_model(s->ctx, &d, &s->models[k]);
}

static void take(state *s, const dstack_completion *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        slot *sl = c[i].user_data;
        if (trace)
            fprintf(stderr, "  completion ticket %llu status %d\n", (unsigned long long)c[i].ticket,
                    (int)c[i].status);
        if (!sl || sl < s->slots || sl >= s->slots + s->n_slots || sl->ticket != c[i].ticket ||
            ++sl->completions != 1)
        {
            fprintf(stderr, "bad completion: ticket %llu user %p (slots %p..%u) slot ticket %llu completions %d status %d\n", (unsigned long long)c[i].ticket, (void *)sl, (void *)s->slots, s->n_slots, sl ? (unsigned long long)sl->ticket : 0ull, sl ? sl->completions : -1, (int)c[i].status);
            abort(); /* unknown, foreign or doubled completion */
        }
    }
}

static void submit(state *s, uint8_t arg)
{
    dstack_model *m = s->models[arg & 1];
    if (!m || s->n_slots == MAX_TICKETS)
        return;
    slot *sl = &s->slots[s->n_slots];
    sl->completions = 0; /* slots are reused from input to input */
    size_t in_bytes = 3 * 8 * 8 * sizeof(float), out_bytes = 5 * sizeof(float);
    int wrong = (arg >> 1) & 7; /* 0..3 right, 4..7 a different kind of wrong */
    size_t ib = wrong == 4 ? in_bytes - 4 : in_bytes, ob = wrong == 5 ? out_bytes + 4 : out_bytes;
    sl->in = calloc(1, in_bytes);
    sl->out = malloc(out_bytes);
    sl->ib = (dstack_buffer){wrong == 6 ? NULL : sl->in, ib};
    sl->ob = (dstack_buffer){sl->out, ob};
    dstack_request r;
    dstack_request_init(&r);
    r.inputs = &sl->ib;
    r.n_inputs = wrong == 7 ? 2 : 1;
    r.outputs = &sl->ob;
    r.n_outputs = 1;
    r.user_data = sl;
    if (arg & 0x10)
        r.deadline_ns = dstack_now_ns(s->ctx) + (arg & 0x20 ? 1 : 1000000000);
    dstack_status st = dstack_submit(s->ctx, m, &r, &sl->ticket);
    if (trace)
        fprintf(stderr, "  submit model %d wrong %d -> %d ticket %llu\n", arg & 1, wrong, (int)st,
                st == DSTACK_OK ? (unsigned long long)sl->ticket : 0ull);
    if (st == DSTACK_OK) {
        s->n_slots++;
        return;
    }
    if (st == DSTACK_ERR_INTERNAL)
        abort();
    free(sl->in);
    free(sl->out);
}

/* Wait until every ticket accepted so far is answered (polling), then check
 * each exactly once. A lost ticket shows up as a hang: abort after 10 s. */
static void drain_and_check(state *s)
{
    dstack_completion c[8];
    size_t n;
    for (int waited_ms = 0;; waited_ms += 10) {
        uint32_t open = 0;
        for (uint32_t i = 0; i < s->n_slots; i++)
            open += s->slots[i].completions == 0;
        if (!open)
            break;
        if (waited_ms > 10000)
            abort(); /* an accepted ticket never answered */
        dstack_status st = dstack_poll(s->ctx, c, 8, 10000, &n);
        if (st == DSTACK_OK)
            take(s, c, n);
        else if (st != DSTACK_ERR_SHUTTING_DOWN)
            abort();
    }
    for (uint32_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].completions != 1)
            abort();
        free(s->slots[i].in);
        free(s->slots[i].out);
    }
    s->n_slots = 0;
}

/* The context lives across inputs (creating one per input made the harness
 * ~20 inputs/s); an input that shuts it down gets it destroyed and the next
 * one starts a fresh context. Every input ends with nothing outstanding. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static state s;
    if (!s.ctx) {
        memset(&s, 0, sizeof s);
        dstack_options o;
        dstack_options_init(&o);
        o.backend = DSTACK_BACKEND_CPU;
        o.cpu_threads = 1;
        o.queue_capacity = size ? 1 + data[0] % 16 : 4;
        if (dstack_create(&o, &s.ctx) != DSTACK_OK)
            abort();
    }
    for (int k = 0; k < MODELS; k++)
        if (!s.models[k] && add_model(&s, k) != DSTACK_OK)
            abort();
    bool shut = false;
    dstack_completion c[8];
    size_t n;
    for (size_t i = 1; i + 1 < size; i += 2) {
        uint8_t op = data[i] % 8, arg = data[i + 1];
        if (trace)
            fprintf(stderr, "op %u arg %u (n_slots %u, models %p %p)\n", op, arg, s.n_slots,
                    (void *)s.models[0], (void *)s.models[1]);
        switch (op) {
        case 0:
        case 1:
            submit(&s, arg);
            break;
        case 2:
            if (dstack_poll(s.ctx, c, 1 + arg % 8, arg & 0x80 ? 100 : 0, &n) == DSTACK_OK)
                take(&s, c, n);
            break;
        case 3:
            if (s.models[arg & 1] && dstack_unregister_model(s.ctx, s.models[arg & 1]) == DSTACK_OK)
                s.models[arg & 1] = NULL;
            break;
        case 4:
            if (!s.models[arg & 1] && !shut)
                add_model(&s, arg & 1);
            break;
        case 5:
            if (arg > 250) {
                dstack_shutdown(s.ctx);
                shut = true;
            }
            break;
        case 6: {
            dstack_model_stats st;
            dstack_model_stats_init(&st);
            if (s.models[arg & 1])
                dstack_stats(s.ctx, s.models[arg & 1], &st);
            break;
        }
        default: { /* a handle that is stale or was never one */
            dstack_model *bogus = (dstack_model *)&s;
            dstack_request r;
            dstack_request_init(&r);
            dstack_ticket t;
            if (dstack_submit(s.ctx, bogus, &r, &t) == DSTACK_OK)
                abort();
            break;
        }
        }
    }
    drain_and_check(&s);
    if (shut) {
        if (dstack_poll(s.ctx, c, 8, 0, &n) != DSTACK_ERR_SHUTTING_DOWN)
            abort(); /* everything was taken: poll must say so */
        dstack_destroy(s.ctx);
        s.ctx = NULL;
    }
    return 0;
}
