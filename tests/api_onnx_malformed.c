/* api_onnx_malformed.c - malformed ONNX through the public API: thousands of
 * mutated models go to dstack_register_model (ONNX_BYTES), and every one
 * comes back with a status, never a crash or a leak (run it under ASan).
 *
 * Valid seeds: tests/data/tiny_cnn.onnx (Conv, Relu, MaxPool, GAP, Flatten,
 * Gemm, Softmax), and, when libonnx-testdata is installed, the node tests
 * test_relu and test_conv_with_strides_padding. Mutations: every truncation,
 * a bit flip at every byte, 0x00/0xff overwrites at every byte, random byte
 * strings, and hand-made edits with a known outcome (an op renamed, trailing
 * garbage, a model glued to itself, an ignored attribute renamed).
 *
 * A mutation may still be a valid model (a flipped bit in a weight); then
 * registration may succeed, and the test proves the model really is usable:
 * one request must complete with OK. Any refusal must be one of the
 * documented import statuses with a non-empty message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dstack.h"

#define NODE_DATA "/usr/share/libonnx-testdata/data/node"
#define MAX_SEEDS 3

typedef struct seed {
    char name[64];
    uint8_t *bytes;
    size_t n;
} seed;

typedef struct fuzz {
    dstack_ctx *ctx;
    seed seeds[MAX_SEEDS];
    int n_seeds;
    unsigned variants;
    unsigned ok;
    unsigned by_status[DSTACK_ERR_INTERNAL + 1];
    uint64_t rng;
} fuzz;

static unsigned total_variants;

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static void add_seed(fuzz *fz, const char *name, const char *path)
{
    size_t n;
    uint8_t *b = read_file(path, &n);
    if (!b)
        return;
    seed *s = &fz->seeds[fz->n_seeds++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->bytes = b;
    s->n = n;
}

static int setup(void **state)
{
    fuzz *fz = calloc(1, sizeof *fz);
    assert_non_null(fz);
    const char *dir = getenv("DSTACK_TEST_DATA");
    char path[512];
    snprintf(path, sizeof path, "%s/tiny_cnn.onnx", dir ? dir : "tests/data");
    add_seed(fz, "tiny_cnn", path);
    add_seed(fz, "test_relu", NODE_DATA "/test_relu/model.onnx");
    add_seed(fz, "test_conv_with_strides_padding",
             NODE_DATA "/test_conv_with_strides_padding/model.onnx");
    assert_true(fz->n_seeds >= 1);
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_CPU;
    o.cpu_threads = 1;
    assert_int_equal(dstack_create(&o, &fz->ctx), DSTACK_OK);
    fz->rng = 0x9e3779b97f4a7c15ull;
    *state = fz;
    return 0;
}

static int teardown(void **state)
{
    fuzz *fz = *state;
    total_variants += fz->variants;
    dstack_destroy(fz->ctx);
    for (int i = 0; i < fz->n_seeds; i++)
        free(fz->seeds[i].bytes);
    free(fz);
    return 0;
}

static uint64_t next_rand(fuzz *fz)
{
    fz->rng ^= fz->rng << 13;
    fz->rng ^= fz->rng >> 7;
    fz->rng ^= fz->rng << 17;
    return fz->rng;
}

static bool import_status(dstack_status st)
{
    return st == DSTACK_ERR_PARSE || st == DSTACK_ERR_UNSUPPORTED_OP ||
           st == DSTACK_ERR_UNSUPPORTED_TYPE || st == DSTACK_ERR_SHAPE ||
           st == DSTACK_ERR_EXTERNAL_DATA || st == DSTACK_ERR_INVALID_ARGUMENT;
}

/* A registered model must really work: one request of zeros completes OK. */
static void check_usable(fuzz *fz, dstack_model *m, const char *what)
{
    dstack_model_info info;
    dstack_model_info_init(&info);
    assert_int_equal(dstack_model_info_get(fz->ctx, m, &info), DSTACK_OK);
    assert_true(info.n_inputs >= 1 && info.n_outputs >= 1);
    dstack_buffer in[DSTACK_MAX_IO], out[DSTACK_MAX_IO];
    for (uint32_t i = 0; i < info.n_inputs; i++) {
        in[i].bytes = info.inputs[i].bytes;
        in[i].data = calloc(1, in[i].bytes);
        assert_non_null(in[i].data);
    }
    for (uint32_t i = 0; i < info.n_outputs; i++) {
        out[i].bytes = info.outputs[i].bytes;
        out[i].data = calloc(1, out[i].bytes);
        assert_non_null(out[i].data);
    }
    dstack_request r;
    dstack_request_init(&r);
    r.inputs = in;
    r.n_inputs = info.n_inputs;
    r.outputs = out;
    r.n_outputs = info.n_outputs;
    dstack_ticket t;
    dstack_status st = dstack_submit(fz->ctx, m, &r, &t);
    if (st)
        fail_msg("%s: registered but submit gave %s: %s", what, dstack_strerror(st),
                 dstack_last_error());
    dstack_completion c;
    size_t got = 0;
    assert_int_equal(dstack_poll(fz->ctx, &c, 1, 60 * 1000000LL, &got), DSTACK_OK);
    assert_int_equal(got, 1);
    assert_int_equal(c.ticket, t);
    if (c.status)
        fail_msg("%s: registered but its request completed with %s", what,
                 dstack_strerror(c.status));
    for (uint32_t i = 0; i < info.n_inputs; i++)
        free(in[i].data);
    for (uint32_t i = 0; i < info.n_outputs; i++)
        free(out[i].data);
}

/* Register the bytes; check the outcome; return the status. */
static dstack_status feed(fuzz *fz, const uint8_t *bytes, size_t n, const char *what)
{
    dstack_model_desc d;
    dstack_model_desc_init(&d);
    d.source = DSTACK_SOURCE_ONNX_BYTES;
    d.bytes = bytes;
    d.n_bytes = n;
    d.max_batch = 1;
    d.name = "fuzz";
    dstack_model *m = NULL;
    dstack_status st = dstack_register_model(fz->ctx, &d, &m);
    fz->variants++;
    if ((unsigned)st <= DSTACK_ERR_INTERNAL)
        fz->by_status[st]++;
    if (st == DSTACK_OK) {
        fz->ok++;
        assert_non_null(m);
        check_usable(fz, m, what);
        assert_int_equal(dstack_unregister_model(fz->ctx, m), DSTACK_OK);
        return st;
    }
    if (!import_status(st))
        fail_msg("%s: unexpected status %d (%s): %s", what, st, dstack_strerror(st),
                 dstack_last_error());
    if (!dstack_last_error()[0])
        fail_msg("%s: status %s without a message", what, dstack_strerror(st));
    assert_null(m);
    return st;
}

static void report(const fuzz *fz, const char *test)
{
    printf("%s: %u variants, %u registered (still valid), parse %u, unsupported_op %u, "
           "unsupported_type %u, shape %u, invalid_argument %u\n",
           test, fz->variants, fz->ok, fz->by_status[DSTACK_ERR_PARSE],
           fz->by_status[DSTACK_ERR_UNSUPPORTED_OP], fz->by_status[DSTACK_ERR_UNSUPPORTED_TYPE],
           fz->by_status[DSTACK_ERR_SHAPE], fz->by_status[DSTACK_ERR_INVALID_ARGUMENT]);
}

/* ---- the tests ---- */

static void test_seeds_register_and_run(void **state)
{
    fuzz *fz = *state;
    for (int s = 0; s < fz->n_seeds; s++)
        assert_int_equal(feed(fz, fz->seeds[s].bytes, fz->seeds[s].n, fz->seeds[s].name),
                         DSTACK_OK);
}

static void test_every_truncation_is_refused_with_PARSE(void **state)
{
    fuzz *fz = *state;
    char what[128];
    for (int s = 0; s < fz->n_seeds; s++) {
        const seed *sd = &fz->seeds[s];
        for (size_t len = 1; len < sd->n; len++) {
            snprintf(what, sizeof what, "%s cut to %zu/%zu bytes", sd->name, len, sd->n);
            /* a copy of exactly len bytes, so ASan sees any over-read */
            uint8_t *cut = malloc(len);
            assert_non_null(cut);
            memcpy(cut, sd->bytes, len);
            dstack_status st = feed(fz, cut, len, what);
            free(cut);
            if (st != DSTACK_ERR_PARSE)
                fail_msg("%s: status %s, expected PARSE", what, dstack_strerror(st));
        }
    }
    /* no bytes at all */
    assert_int_equal(feed(fz, fz->seeds[0].bytes, 0, "empty"), DSTACK_ERR_INVALID_ARGUMENT);
    report(fz, "truncations");
    assert_true(fz->variants >= 900 || fz->n_seeds < MAX_SEEDS);
}

static void test_bit_flip_at_every_byte_never_crashes(void **state)
{
    fuzz *fz = *state;
    char what[128];
    for (int s = 0; s < fz->n_seeds; s++) {
        const seed *sd = &fz->seeds[s];
        uint8_t *buf = malloc(sd->n);
        assert_non_null(buf);
        for (size_t i = 0; i < sd->n; i++) {
            memcpy(buf, sd->bytes, sd->n);
            unsigned bit = (unsigned)(next_rand(fz) % 8);
            buf[i] ^= (uint8_t)(1u << bit);
            snprintf(what, sizeof what, "%s byte %zu bit %u flipped", sd->name, i, bit);
            feed(fz, buf, sd->n, what);
        }
        free(buf);
    }
    report(fz, "bit flips");
    assert_true(fz->variants >= 900 || fz->n_seeds < MAX_SEEDS);
    /* most flips land in structure, not in weights */
    assert_true(fz->ok < fz->variants);
}

static void test_zero_and_ff_overwrites_never_crash(void **state)
{
    fuzz *fz = *state;
    char what[128];
    static const uint8_t values[2] = {0x00, 0xff};
    for (int s = 0; s < fz->n_seeds; s++) {
        const seed *sd = &fz->seeds[s];
        uint8_t *buf = malloc(sd->n);
        assert_non_null(buf);
        for (int v = 0; v < 2; v++) {
            for (size_t i = 0; i < sd->n; i++) {
                memcpy(buf, sd->bytes, sd->n);
                buf[i] = values[v];
                snprintf(what, sizeof what, "%s byte %zu set to 0x%02x", sd->name, i, values[v]);
                feed(fz, buf, sd->n, what);
            }
        }
        free(buf);
    }
    report(fz, "overwrites");
}

static void test_random_bytes_are_refused_with_PARSE(void **state)
{
    fuzz *fz = *state;
    char what[128];
    for (int k = 0; k < 300; k++) {
        size_t n = 1 + (size_t)(next_rand(fz) % 2048);
        uint8_t *buf = malloc(n);
        assert_non_null(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)next_rand(fz);
        snprintf(what, sizeof what, "random buffer %d (%zu bytes)", k, n);
        dstack_status st = feed(fz, buf, n, what);
        free(buf);
        if (st != DSTACK_ERR_PARSE)
            fail_msg("%s: status %s, expected PARSE", what, dstack_strerror(st));
    }
    report(fz, "random bytes");
}

/* Replace the first occurrence of `from` with `to` (same length). */
static uint8_t *edited(const seed *sd, const char *from, const char *to)
{
    size_t len = strlen(from);
    assert_int_equal(len, strlen(to));
    uint8_t *buf = malloc(sd->n);
    assert_non_null(buf);
    memcpy(buf, sd->bytes, sd->n);
    for (size_t i = 0; i + len <= sd->n; i++) {
        if (memcmp(buf + i, from, len) == 0) {
            memcpy(buf + i, to, len);
            return buf;
        }
    }
    free(buf);
    return NULL;
}

static void test_handmade_edits_give_their_exact_status(void **state)
{
    fuzz *fz = *state;
    const seed *tiny = &fz->seeds[0];

    /* an op the IR does not have */
    uint8_t *b = edited(tiny, "Relu", "Gelu");
    assert_non_null(b);
    assert_int_equal(feed(fz, b, tiny->n, "Relu renamed Gelu"), DSTACK_ERR_UNSUPPORTED_OP);
    assert_non_null(strstr(dstack_last_error(), "Gelu"));
    free(b);

    /* an attribute nobody reads is ignored: still a valid model */
    b = edited(tiny, "transB", "transX");
    if (b) {
        assert_int_equal(feed(fz, b, tiny->n, "Gemm transB renamed"), DSTACK_ERR_SHAPE);
        free(b);
    }

    /* trailing garbage: an invalid wire type after the last field */
    b = malloc(tiny->n + 3);
    assert_non_null(b);
    memcpy(b, tiny->bytes, tiny->n);
    b[tiny->n] = 0xff;
    b[tiny->n + 1] = 0xff;
    b[tiny->n + 2] = 0x07;
    assert_int_equal(feed(fz, b, tiny->n + 3, "trailing garbage"), DSTACK_ERR_PARSE);
    free(b);

    /* the model glued to itself: protobuf merges the two graphs, so every
     * value is defined twice */
    b = malloc(2 * tiny->n);
    assert_non_null(b);
    memcpy(b, tiny->bytes, tiny->n);
    memcpy(b + tiny->n, tiny->bytes, tiny->n);
    assert_int_equal(feed(fz, b, 2 * tiny->n, "model twice"), DSTACK_ERR_PARSE);
    free(b);

    /* a length prefix far past the end */
    static const uint8_t huge_len[] = {0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0x00};
    assert_int_equal(feed(fz, huge_len, sizeof huge_len, "huge length"), DSTACK_ERR_PARSE);

    /* the seeds from the node tests: an unsupported op and an edited pad */
    for (int s = 1; s < fz->n_seeds; s++) {
        const seed *sd = &fz->seeds[s];
        if ((b = edited(sd, "Relu", "Relx")) != NULL) {
            assert_int_equal(feed(fz, b, sd->n, "Relu renamed Relx"), DSTACK_ERR_UNSUPPORTED_OP);
            free(b);
        }
        if ((b = edited(sd, "Conv", "Conw")) != NULL) {
            assert_int_equal(feed(fz, b, sd->n, "Conv renamed Conw"), DSTACK_ERR_UNSUPPORTED_OP);
            free(b);
        }
        /* "strides" unknown to Conv as "stridez": ignored, stride 1, still valid */
        if ((b = edited(sd, "strides", "stridez")) != NULL) {
            assert_int_equal(feed(fz, b, sd->n, "strides renamed"), DSTACK_OK);
            free(b);
        }
    }
    report(fz, "hand-made edits");
}

static void test_total_variants_at_least_1000(void **state)
{
    (void)state;
    printf("total malformed variants fed: %u\n", total_variants);
    assert_true(total_variants >= 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_seeds_register_and_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_truncation_is_refused_with_PARSE, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bit_flip_at_every_byte_never_crashes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_zero_and_ff_overwrites_never_crash, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_random_bytes_are_refused_with_PARSE, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handmade_edits_give_their_exact_status, setup,
                                        teardown),
        cmocka_unit_test(test_total_variants_at_least_1000),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
