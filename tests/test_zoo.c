/* test_zoo.c - the built-in model zoo: shapes, published parameter and MAC
 * counts, deterministic weights, error statuses, other image sizes.
 *
 * Reference figures are torchvision's published ones (docs of
 * torchvision.models, "num_params" and "GFLOPS", which are multiply-
 * accumulates): an independent source the zoo must reproduce. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec/exec.h"
#include "graph/graph.h"
#include "util/error.h"

typedef struct published {
    const char *name;
    uint64_t params; /* trainable: conv/linear weights + biases, BN gamma + beta */
    double gmacs;    /* at 224x224 */
    bool has_bn;
} published;

static const published torchvision[] = {
    {"resnet18", 11689512, 1.81, true},      {"resnet34", 21797672, 3.66, true},
    {"resnet50", 25557032, 4.09, true},      {"resnet101", 44549160, 7.80, true},
    {"resnet152", 60192808, 11.51, true},    {"mobilenet_v2", 3504872, 0.30, true},
    {"vgg16", 138357544, 15.47, false},      {"vgg19", 143667240, 19.63, false},
    {"alexnet", 61100840, 0.71, false},      {"squeezenet1_0", 1248424, 0.82, false},
    {"squeezenet1_1", 1235496, 0.35, false}, {"googlenet", 6624904, 1.50, true},
    {"densenet121", 7978856, 2.83, true},
};
#define N_PUBLISHED (sizeof torchvision / sizeof torchvision[0])

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static ds_graph *build(const char *name, uint32_t image_size, uint32_t classes, uint64_t seed)
{
    ds_zoo_params p = {.image_size = image_size, .classes = classes, .seed = seed};
    ds_graph *g = NULL;
    dstack_status st = ds_zoo_build(name, &p, &g);
    if (st != DSTACK_OK)
        print_error("%s at %u: status %d: %s\n", name, image_size, (int)st, ds_error_message());
    assert_int_equal(st, DSTACK_OK);
    assert_non_null(g);
    return g;
}

/* Multiply-accumulates of Conv, Gemm and MatMul, counted here from the
 * stored shapes (not with ds_graph_flops, which is under test too). */
static uint64_t count_macs(const ds_graph *g)
{
    uint64_t macs = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const ds_node *n = &g->nodes[i];
        uint64_t out = (uint64_t)ds_tensor_numel(&g->tensors[n->output]);
        const ds_tensor *a = &g->tensors[n->inputs[0]];
        if (n->op == DS_OP_CONV) {
            const ds_tensor *w = &g->tensors[n->inputs[1]];
            macs += out * (uint64_t)(w->dims[1] * w->dims[2] * w->dims[3]);
        } else if (n->op == DS_OP_GEMM || n->op == DS_OP_MATMUL) {
            macs += out * (uint64_t)a->dims[a->rank - 1];
        }
    }
    return macs;
}

/* Floats of BN running mean + var: constants but not trainable parameters. */
static uint64_t bn_running_stats(const ds_graph *g)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == DS_OP_BATCHNORM)
            n += (uint64_t)(ds_tensor_numel(&g->tensors[g->nodes[i].inputs[3]]) +
                            ds_tensor_numel(&g->tensors[g->nodes[i].inputs[4]]));
    return n;
}

static uint32_t count_op(const ds_graph *g, ds_op_kind op)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        n += g->nodes[i].op == op;
    return n;
}

static void assert_io(const ds_graph *g, uint32_t image_size, uint32_t classes)
{
    assert_true(g->finalized);
    assert_true(g->batchable);
    assert_int_equal(g->n_inputs, 1);
    assert_int_equal(g->n_outputs, 1);
    const ds_tensor *in = &g->tensors[g->inputs[0]];
    const ds_tensor *out = &g->tensors[g->outputs[0]];
    assert_string_equal(in->name, "input");
    assert_int_equal(in->rank, 4);
    assert_int_equal(in->dims[0], 1);
    assert_int_equal(in->dims[1], 3);
    assert_int_equal(in->dims[2], image_size);
    assert_int_equal(in->dims[3], image_size);
    assert_string_equal(out->name, "logits");
    assert_int_equal(out->rank, 2);
    assert_int_equal(out->dims[0], 1);
    assert_int_equal(out->dims[1], classes);
}

static const ds_tensor *tensor_named(const ds_graph *g, const char *name)
{
    uint32_t id = ds_graph_find_tensor(g, name);
    if (id == DS_TENSOR_NONE)
        print_error("no tensor '%s' in '%s'\n", name, g->name);
    assert_int_not_equal(id, DS_TENSOR_NONE);
    return &g->tensors[id];
}

/* ---- shapes and published figures ---- */

static void test_every_zoo_name_builds_at_224_with_input_1x3x224x224_and_logits_1x1000(void **state)
{
    (void)state;
    const char *const *names = ds_zoo_names();
    uint32_t n = 0;
    for (; names[n]; n++) {
        for (uint32_t k = 0; k < n; k++)
            assert_string_not_equal(names[k], names[n]);
        ds_graph *g = build(names[n], 224, 1000, 1);
        assert_io(g, 224, 1000);
        ds_graph_free(g);
    }
    assert_true(n >= N_PUBLISHED);
}

static void test_every_published_model_is_in_the_names_list(void **state)
{
    (void)state;
    const char *required[] = {"resnet18",     "resnet34",  "resnet50",   "resnet101",
                              "mobilenet_v2", "vgg16",     "vgg19",      "alexnet",
                              "squeezenet",   "inception", "densenet121"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        bool found = false;
        for (const char *const *n = ds_zoo_names(); *n; n++)
            found = found || strcmp(*n, required[i]) == 0;
        if (!found)
            print_error("'%s' is not in ds_zoo_names()\n", required[i]);
        assert_true(found);
    }
}

static void test_trainable_params_equal_torchvision_published_counts(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_PUBLISHED; i++) {
        ds_graph *g = build(torchvision[i].name, 224, 1000, 7);
        uint64_t stats = bn_running_stats(g);
        /* ds_graph_param_count counts every constant float, BN running
         * statistics included; torchvision counts only trainable ones. */
        uint64_t trainable = ds_graph_param_count(g) - stats;
        if (trainable != torchvision[i].params)
            print_error("%s: %llu trainable params, torchvision has %llu\n", torchvision[i].name,
                        (unsigned long long)trainable, (unsigned long long)torchvision[i].params);
        assert_int_equal(trainable, torchvision[i].params);
        assert_int_equal(stats > 0, torchvision[i].has_bn);
        assert_int_equal(count_op(g, DS_OP_BATCHNORM) > 0, torchvision[i].has_bn);
        ds_graph_free(g);
    }
}

static void test_macs_match_torchvision_published_gflops_within_2_percent(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_PUBLISHED; i++) {
        ds_graph *g = build(torchvision[i].name, 224, 1000, 7);
        double macs = (double)count_macs(g);
        double want = torchvision[i].gmacs * 1e9;
        if (fabs(macs - want) > 0.02 * want)
            print_error("%s: %.4f GMACs, torchvision %.2f\n", torchvision[i].name, macs / 1e9,
                        torchvision[i].gmacs);
        assert_true(fabs(macs - want) <= 0.02 * want);
        /* ds_graph_flops: 2 per MAC plus about one per element of the other
         * ops (BN, ReLU, pools, adds), a few percent at most. */
        double flops = (double)ds_graph_flops(g);
        assert_true(flops >= 2.0 * macs);
        assert_true(flops <= 2.0 * macs * 1.05);
        ds_graph_free(g);
    }
}

static void test_resnet50_layer_shapes_match_torchvision(void **state)
{
    (void)state;
    ds_graph *g = build("resnet50", 224, 1000, 1);
    const int64_t want[][4] = {{1, 64, 112, 112}, {1, 64, 56, 56},   {1, 256, 56, 56},
                               {1, 512, 28, 28},  {1, 1024, 14, 14}, {1, 2048, 7, 7}};
    const char *names[] = {"conv1",         "maxpool",       "layer1.2.relu",
                           "layer2.3.relu", "layer3.5.relu", "layer4.2.relu"};
    for (size_t i = 0; i < 6; i++) {
        const ds_tensor *t = tensor_named(g, names[i]);
        assert_int_equal(t->rank, 4);
        for (int d = 0; d < 4; d++)
            assert_int_equal(t->dims[d], want[i][d]);
    }
    const ds_tensor *w = tensor_named(g, "layer2.0.downsample.0.weight");
    assert_int_equal(w->dims[0], 512);
    assert_int_equal(w->dims[1], 256);
    assert_int_equal(w->dims[2], 1);
    const ds_tensor *fc = tensor_named(g, "fc.weight"); /* torch Linear: (out, in) */
    assert_int_equal(fc->dims[0], 1000);
    assert_int_equal(fc->dims[1], 2048);
    ds_graph_free(g);
}

static void test_classes_parameter_sets_the_logits_width(void **state)
{
    (void)state;
    ds_graph *g = build("mobilenet_v2", 224, 10, 1);
    assert_io(g, 224, 10);
    const ds_tensor *fc = tensor_named(g, "classifier.1.weight");
    assert_int_equal(fc->dims[0], 10);
    assert_int_equal(fc->dims[1], 1280);
    ds_graph_free(g);
    g = build("squeezenet1_1", 224, 10, 1);
    assert_io(g, 224, 10);
    ds_graph_free(g);
}

static void test_null_params_build_the_default_224_1000_model(void **state)
{
    (void)state;
    ds_graph *g = NULL;
    assert_int_equal(ds_zoo_build("squeezenet1_1", NULL, &g), DSTACK_OK);
    assert_io(g, 224, 1000);
    ds_graph_free(g);
}

/* ---- weights ---- */

static void assert_same_weights(const ds_graph *a, const ds_graph *b)
{
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint32_t i = 0; i < a->n_tensors; i++) {
        assert_string_equal(a->tensors[i].name, b->tensors[i].name);
        if (a->tensors[i].kind != DS_TENSOR_CONST)
            continue;
        int64_t n = ds_tensor_numel(&a->tensors[i]);
        assert_int_equal(n, ds_tensor_numel(&b->tensors[i]));
        assert_memory_equal(a->tensors[i].data, b->tensors[i].data, (size_t)n * sizeof(float));
    }
}

static void test_same_seed_gives_bitwise_identical_weights(void **state)
{
    (void)state;
    const char *models[] = {"resnet18",  "mobilenet_v2", "squeezenet1_1",
                            "googlenet", "densenet121",  "alexnet"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        ds_graph *a = build(models[m], 224, 1000, 42);
        ds_graph *b = build(models[m], 224, 1000, 42);
        assert_same_weights(a, b);
        ds_graph_free(a);
        ds_graph_free(b);
    }
}

static void test_different_seed_changes_every_weight_tensor(void **state)
{
    (void)state;
    ds_graph *a = build("resnet18", 224, 1000, 42);
    ds_graph *b = build("resnet18", 224, 1000, 43);
    assert_int_equal(a->n_tensors, b->n_tensors);
    uint32_t consts = 0;
    for (uint32_t i = 0; i < a->n_tensors; i++) {
        if (a->tensors[i].kind != DS_TENSOR_CONST)
            continue;
        consts++;
        int64_t n = ds_tensor_numel(&a->tensors[i]), same = 0;
        for (int64_t k = 0; k < n; k++)
            same += a->tensors[i].data[k] == b->tensors[i].data[k];
        if (same > n / 100 + 1)
            print_error("'%s': %lld of %lld values equal\n", a->tensors[i].name, (long long)same,
                        (long long)n);
        assert_true(same <= n / 100 + 1);
    }
    assert_true(consts > 50);
    ds_graph_free(a);
    ds_graph_free(b);
}

/* The generator is part of the zoo's contract (cached profiles and other
 * processes rebuild the same model from (name, seed)): splitmix64 seeded
 * with seed ^ FNV-1a("resnet18"), 24-bit draws u mapped to
 * (u - 2^23) * bound / 2^23. Expected values from an independent Python
 * implementation of that recipe (seed 0, conv1.weight, bound
 * sqrt(2) * sqrt(3 / 147)). */
static void test_resnet18_seed_0_first_weights_match_the_documented_generator(void **state)
{
    (void)state;
    ds_graph *g = build("resnet18", 224, 1000, 0);
    const float want[4] = {0.181797042f, 0.0103973141f, -0.152627498f, -0.183537185f};
    assert_memory_equal(tensor_named(g, "conv1.weight")->data, want, sizeof want);
    ds_graph_free(g);
}

static void test_aliases_build_the_same_weights_as_their_model(void **state)
{
    (void)state;
    ds_graph *a = build("squeezenet", 224, 1000, 5), *b = build("squeezenet1_1", 224, 1000, 5);
    assert_same_weights(a, b);
    ds_graph_free(a);
    ds_graph_free(b);
    a = build("inception", 224, 1000, 5);
    b = build("googlenet", 224, 1000, 5);
    assert_same_weights(a, b);
    ds_graph_free(a);
    ds_graph_free(b);
}

/* Kaiming-uniform: U(-b, b), b = gain * sqrt(3 / fan_in), variance gain^2 / fan_in. */
static void assert_uniform(const ds_tensor *t, double bound)
{
    int64_t n = ds_tensor_numel(t);
    double sum = 0, sq = 0, maxabs = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = t->data[i];
        sum += v;
        sq += v * v;
        maxabs = fmax(maxabs, fabs(v));
    }
    double var = sq / (double)n, want = bound * bound / 3.0;
    assert_true(maxabs <= bound);
    assert_true(maxabs >= 0.99 * bound);
    assert_true(fabs(sum / (double)n) < 0.05 * bound);
    assert_true(fabs(var - want) < 0.05 * want);
}

static void assert_all_within(const ds_tensor *t, float lo, float hi)
{
    for (int64_t i = 0; i < ds_tensor_numel(t); i++) {
        assert_true(t->data[i] >= lo);
        assert_true(t->data[i] <= hi);
    }
}

static void test_weights_follow_the_documented_kaiming_and_bn_scaling(void **state)
{
    (void)state;
    ds_graph *g = build("resnet50", 224, 1000, 3);
    /* conv1: 64x3x7x7, fan_in 147, ReLU follows: gain sqrt(2). */
    assert_uniform(tensor_named(g, "conv1.weight"), sqrt(2.0) * sqrt(3.0 / 147.0));
    /* layer3.0.conv2: 256x256x3x3, fan_in 2304. */
    assert_uniform(tensor_named(g, "layer3.0.conv2.weight"), sqrt(2.0) * sqrt(3.0 / 2304.0));
    /* fc: linear classifier, gain 1, fan_in 2048; bias U(+-1/sqrt(2048)). */
    assert_uniform(tensor_named(g, "fc.weight"), sqrt(3.0 / 2048.0));
    assert_all_within(tensor_named(g, "fc.bias"), -1.0f / sqrtf(2048.0f), 1.0f / sqrtf(2048.0f));
    assert_all_within(tensor_named(g, "bn1.weight"), 0.9f, 1.1f);
    assert_all_within(tensor_named(g, "bn1.bias"), -0.05f, 0.05f);
    assert_all_within(tensor_named(g, "bn1.running_mean"), -0.05f, 0.05f);
    assert_all_within(tensor_named(g, "bn1.running_var"), 0.9f, 1.1f);
    /* The BN that ends a residual branch is scaled down to 0.2. */
    assert_all_within(tensor_named(g, "layer1.0.bn3.weight"), 0.18f, 0.22f);
    ds_graph_free(g);
}

static void test_vgg19_builds_and_frees_in_under_5_seconds(void **state)
{
    (void)state;
    double t0 = seconds_now();
    ds_graph *g = build("vgg19", 224, 1000, 9);
    double t1 = seconds_now();
    assert_int_equal(ds_graph_param_count(g), 143667240);
    ds_graph_free(g);
    double t2 = seconds_now();
    print_message("vgg19: build %.3f s, free %.3f s\n", t1 - t0, t2 - t1);
    assert_true(t2 - t0 < 5.0);
}

/* ---- errors ---- */

static void test_unknown_name_is_not_found_and_lists_known_names(void **state)
{
    (void)state;
    ds_graph *g = (ds_graph *)&g; /* must be reset to NULL */
    ds_zoo_params p = {.image_size = 224, .classes = 1000};
    assert_int_equal(ds_zoo_build("resnet51", &p, &g), DSTACK_ERR_NOT_FOUND);
    assert_null(g);
    const char *msg = ds_error_message();
    assert_non_null(strstr(msg, "resnet51"));
    assert_non_null(strstr(msg, "resnet50"));
    assert_non_null(strstr(msg, "vgg19"));
    assert_non_null(strstr(msg, "densenet121"));
    assert_int_equal(ds_zoo_build("", &p, &g), DSTACK_ERR_NOT_FOUND);
    assert_int_equal(ds_zoo_build("RESNET50", &p, &g), DSTACK_ERR_NOT_FOUND);
}

static void test_null_arguments_are_invalid(void **state)
{
    (void)state;
    ds_graph *g = NULL;
    assert_int_equal(ds_zoo_build(NULL, NULL, &g), DSTACK_ERR_INVALID_ARGUMENT);
    assert_null(g);
    assert_int_equal(ds_zoo_build("resnet18", NULL, NULL), DSTACK_ERR_INVALID_ARGUMENT);
    ds_zoo_params huge = {.image_size = 100000};
    assert_int_equal(ds_zoo_build("resnet18", &huge, &g), DSTACK_ERR_INVALID_ARGUMENT);
    assert_null(g);
}

static void expect_too_small(const char *name, uint32_t image_size, const char *layer)
{
    ds_zoo_params p = {.image_size = image_size, .classes = 1000, .seed = 1};
    ds_graph *g = (ds_graph *)&p;
    dstack_status st = ds_zoo_build(name, &p, &g);
    if (st != DSTACK_ERR_SHAPE || !strstr(ds_error_message(), layer))
        print_error("%s at %u: status %d, message '%s', expected SHAPE at '%s'\n", name, image_size,
                    (int)st, ds_error_message(), layer);
    assert_int_equal(st, DSTACK_ERR_SHAPE);
    assert_null(g);
    assert_non_null(strstr(ds_error_message(), layer));
}

static void test_image_too_small_is_a_shape_error_naming_the_layer(void **state)
{
    (void)state;
    /* VGG: five 2x2 pools need 32 pixels; at 16 the fifth (features.30 in
     * VGG-16, features.36 in VGG-19) gets a 1x1 map. */
    expect_too_small("vgg16", 16, "features.30");
    expect_too_small("vgg19", 31, "features.36");
    /* AlexNet: 62 -> conv 14 -> pool 6 -> pool 2 -> features.12 (3x3) fails;
     * 63 -> 15 -> 7 -> 3 -> 1 is the smallest that builds. */
    expect_too_small("alexnet", 62, "features.12");
    /* SqueezeNet 1.1 at 8: conv 3 -> pool 1 -> fires -> features.5 (3x3) fails. */
    expect_too_small("squeezenet1_1", 8, "features.5");
    /* GoogLeNet at 16: 8 -> 4 -> 2 (ceil) -> maxpool3 (3x3) fails. */
    expect_too_small("googlenet", 16, "maxpool3");
    expect_too_small("densenet121", 16, "transition3.pool");
    ds_graph *g = build("alexnet", 63, 1000, 1);
    assert_io(g, 63, 1000);
    ds_graph_free(g);
    g = build("vgg16", 32, 1000, 1);
    assert_io(g, 32, 1000);
    ds_graph_free(g);
}

/* ---- other image sizes ---- */

static void test_112_and_96_build_for_every_model_with_gap_heads_keeping_params(void **state)
{
    (void)state;
    const uint32_t sizes[] = {112, 96};
    for (size_t s = 0; s < 2; s++) {
        for (size_t i = 0; i < N_PUBLISHED; i++) {
            ds_graph *g = build(torchvision[i].name, sizes[s], 1000, 1);
            assert_io(g, sizes[s], 1000);
            uint64_t trainable = ds_graph_param_count(g) - bn_running_stats(g);
            bool adaptive = strncmp(torchvision[i].name, "vgg", 3) == 0 ||
                            strcmp(torchvision[i].name, "alexnet") == 0;
            if (!adaptive) /* global pooling heads: weights do not depend on the size */
                assert_int_equal(trainable, torchvision[i].params);
            else /* + the (h*w, t*t) adaptive pooling matrix: VGG 3x3 -> 7x7,
                    AlexNet (112: 27 -> 13 -> 6 -> 2; 96: 23 -> 11 -> 5 -> 2) 2x2 -> 6x6 */
                assert_int_equal(trainable - torchvision[i].params,
                                 torchvision[i].name[0] == 'v' ? 9 * 49 : 4 * 36);
            /* about (S/224)^2 of the convolutions; the FC layers stay */
            assert_true(count_macs(g) < torchvision[i].gmacs * 1e9 * 0.4);
            ds_graph_free(g);
        }
    }
}

static void test_vgg_adaptive_pool_is_identity_at_224_avgpool_at_448(void **state)
{
    (void)state;
    ds_graph *g = build("vgg16", 224, 1000, 1);
    assert_int_equal(ds_graph_find_tensor(g, "avgpool"), DS_TENSOR_NONE);
    assert_int_equal(count_op(g, DS_OP_AVGPOOL) + count_op(g, DS_OP_MATMUL), 0);
    ds_graph_free(g);
    g = build("vgg16", 448, 1000, 1);
    const ds_tensor *t = tensor_named(g, "avgpool");
    const ds_node *n = &g->nodes[t->producer];
    assert_int_equal(n->op, DS_OP_AVGPOOL);
    assert_int_equal(n->attrs.kernel[0], 2);
    assert_int_equal(n->attrs.stride[0], 2);
    assert_int_equal(t->dims[1], 512);
    assert_int_equal(t->dims[2], 7);
    assert_int_equal(t->dims[3], 7);
    assert_int_equal(ds_graph_param_count(g), 138357544);
    ds_graph_free(g);
}

/* torch's adaptive bins for 3 -> 7: bin i spans [floor(3i/7), ceil(3(i+1)/7)):
 * 0:[0,1) 1:[0,1) 2:[0,2) 3:[1,2) 4:[1,3) 5:[2,3) 6:[2,3). */
static void test_adaptive_pool_matrix_matches_torch_bins_3_to_7(void **state)
{
    (void)state;
    ds_graph *g = build("vgg16", 96, 1000, 1); /* 96 / 32 = 3 */
    const ds_tensor *p = tensor_named(g, "avgpool.pool_matrix");
    assert_int_equal(p->rank, 2);
    assert_int_equal(p->dims[0], 9);
    assert_int_equal(p->dims[1], 49);
    static const int lo[7] = {0, 0, 0, 1, 1, 2, 2}, hi[7] = {1, 1, 2, 2, 3, 3, 3};
    for (int i = 0; i < 7; i++) {
        for (int j = 0; j < 7; j++) {
            float area = (float)((hi[i] - lo[i]) * (hi[j] - lo[j]));
            double col = 0;
            for (int y = 0; y < 3; y++) {
                for (int x = 0; x < 3; x++) {
                    bool in = y >= lo[i] && y < hi[i] && x >= lo[j] && x < hi[j];
                    float v = p->data[(y * 3 + x) * 49 + i * 7 + j];
                    assert_float_equal(v, in ? 1.0f / area : 0.0f, 1e-7f);
                    col += v;
                }
            }
            assert_float_equal(col, 1.0, 1e-6);
        }
    }
    const ds_tensor *t = tensor_named(g, "avgpool");
    assert_int_equal(t->rank, 4);
    assert_int_equal(t->dims[1], 512);
    assert_int_equal(t->dims[2], 7);
    assert_int_equal(t->dims[3], 7);
    ds_graph_free(g);
}

/* ---- with the folding pass ---- */

static void test_fold_absorbs_every_conv_bn_pair_of_the_zoo(void **state)
{
    (void)state;
    const char *models[] = {"resnet50", "mobilenet_v2", "googlenet", "densenet121"};
    for (size_t m = 0; m < 4; m++) {
        ds_graph *g = build(models[m], 224, 1000, 1);
        uint32_t bn = count_op(g, DS_OP_BATCHNORM), conv = count_op(g, DS_OP_CONV);
        uint32_t bn_after_conv = 0;
        for (uint32_t i = 0; i < g->n_nodes; i++) {
            const ds_node *n = &g->nodes[i];
            uint32_t p = g->tensors[n->inputs[0]].producer;
            bn_after_conv +=
                n->op == DS_OP_BATCHNORM && p != UINT32_MAX && g->nodes[p].op == DS_OP_CONV;
        }
        assert_int_equal(ds_graph_fold(g), DSTACK_OK);
        assert_io(g, 224, 1000);
        assert_int_equal(count_op(g, DS_OP_CONV), conv);
        /* DenseNet's pre-activation BNs follow a Concat and stay. */
        assert_int_equal(count_op(g, DS_OP_BATCHNORM), bn - bn_after_conv);
        if (strcmp(models[m], "densenet121") != 0)
            assert_int_equal(count_op(g, DS_OP_BATCHNORM), 0);
        ds_graph_free(g);
    }
}

/* ---- through the CPU executor ---- */

typedef struct run_done {
    int calls;
    dstack_status status;
} run_done;

static void on_done(void *arg, dstack_status status)
{
    run_done *d = arg;
    d->calls++;
    d->status = status;
}

/* Deterministic request images, U(-1, 1) like a normalized picture. */
static float *make_image(uint32_t image_size, uint32_t seed)
{
    size_t n = 3u * image_size * image_size;
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    return x;
}

/* Run `batch` requests (images seeded 1..batch) through the CPU executor;
 * returns batch x classes logits, malloc'd. */
static float *run_on_cpu(const ds_graph *g, uint32_t image_size, uint32_t batch)
{
    ds_executor_config cfg = {.cpu_threads = 2};
    ds_executor *ex = NULL;
    assert_int_equal(ds_exec_cpu_create(&cfg, &ex), DSTACK_OK);
    ds_plan_options o = {.max_batch = batch, .precision = DSTACK_PRECISION_FP32};
    ds_exec_plan *plan = NULL;
    dstack_status st = ex->ops->plan_create(ex, g, &o, &plan);
    if (st)
        print_error("plan '%s': %s\n", g->name, ds_error_message());
    assert_int_equal(st, DSTACK_OK);
    ds_partition part;
    assert_int_equal(ex->ops->partition_get(ex, 0, 1, &part), DSTACK_OK);
    int64_t classes = g->tensors[g->outputs[0]].dims[1];
    float *logits = malloc((size_t)batch * (size_t)classes * sizeof *logits);
    const void *in[8];
    void *out[8];
    assert_true(batch <= 8);
    for (uint32_t r = 0; r < batch; r++) {
        in[r] = make_image(image_size, r + 1);
        out[r] = logits + (size_t)r * (size_t)classes;
    }
    ds_exec_batch b = {.batch = batch, .inputs = in, .outputs = out};
    run_done d = {0};
    assert_int_equal(ex->ops->run(ex, plan, &b, &part, on_done, &d), DSTACK_OK);
    /* The interface allows done() from another thread after run returns. */
    for (int spins = 0; spins < 600000 && __atomic_load_n(&d.calls, __ATOMIC_ACQUIRE) == 0;
         spins++) {
        struct timespec ms = {0, 100000};
        nanosleep(&ms, NULL);
    }
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, DSTACK_OK);
    for (uint32_t r = 0; r < batch; r++)
        free((void *)in[r]);
    ex->ops->plan_destroy(ex, plan);
    ex->ops->destroy(ex);
    return logits;
}

/* Logits of well-scaled weights: finite, spread over the classes (not
 * constant: nothing vanished), of order one (nothing exploded), and
 * different for different images. */
static void assert_meaningful_logits(const char *name, const float *l, uint32_t classes,
                                     const float *other)
{
    double sum = 0, sq = 0, diff = 0;
    for (uint32_t i = 0; i < classes; i++) {
        assert_true(isfinite(l[i]));
        sum += l[i];
        sq += (double)l[i] * l[i];
        diff = fmax(diff, fabs((double)l[i] - other[i]));
    }
    double mean = sum / classes, sd = sqrt(fmax(0.0, sq / classes - mean * mean));
    double rms = sqrt(sq / classes);
    print_message("%-14s logits rms %.3f sd %.3f, max diff between images %.3f\n", name, rms, sd,
                  diff);
    assert_true(sd > 0.05);
    assert_true(rms < 100.0);
    assert_true(diff > 1e-3);
}

static void test_cpu_logits_of_squeezenet_and_mobilenet_v2_at_64_are_finite_and_spread(void **state)
{
    (void)state;
    const char *models[] = {"squeezenet1_1", "mobilenet_v2"};
    for (size_t m = 0; m < 2; m++) {
        ds_graph *g = build(models[m], 64, 1000, 11);
        float *l = run_on_cpu(g, 64, 2);
        assert_meaningful_logits(models[m], l, 1000, l + 1000);
        free(l);
        ds_graph_free(g);
    }
}

/* VGG at 32 (its smallest) keeps the sanitizer runs short; it also runs
 * the adaptive pool's MatMul path (1x1 -> 7x7). */
static void test_cpu_logits_of_every_model_at_64_or_32_are_finite_and_spread(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_PUBLISHED; i++) {
        uint32_t size = strncmp(torchvision[i].name, "vgg", 3) == 0 ? 32 : 64;
        ds_graph *g = build(torchvision[i].name, size, 1000, 11);
        float *l = run_on_cpu(g, size, 2);
        assert_meaningful_logits(torchvision[i].name, l, 1000, l + 1000);
        free(l);
        ds_graph_free(g);
    }
}

/* Folding BN into the convs must not change what the zoo's weights
 * compute (up to float rounding). */
static void test_folded_and_unfolded_zoo_models_agree_on_cpu(void **state)
{
    (void)state;
    const char *models[] = {"resnet18", "mobilenet_v2", "googlenet", "densenet121"};
    for (size_t m = 0; m < 4; m++) {
        ds_graph *g = build(models[m], 64, 1000, 5);
        float *want = run_on_cpu(g, 64, 1);
        assert_int_equal(ds_graph_fold(g), DSTACK_OK);
        float *got = run_on_cpu(g, 64, 1);
        double scale = 0, err = 0;
        for (int i = 0; i < 1000; i++) {
            scale = fmax(scale, fabs(want[i]));
            err = fmax(err, fabs((double)got[i] - want[i]));
        }
        if (err > 1e-4 * (scale + 1))
            print_error("%s: folded logits differ by %g (max |logit| %g)\n", models[m], err, scale);
        assert_true(err <= 1e-4 * (scale + 1));
        free(want);
        free(got);
        ds_graph_free(g);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_every_zoo_name_builds_at_224_with_input_1x3x224x224_and_logits_1x1000),
        cmocka_unit_test(test_every_published_model_is_in_the_names_list),
        cmocka_unit_test(test_trainable_params_equal_torchvision_published_counts),
        cmocka_unit_test(test_macs_match_torchvision_published_gflops_within_2_percent),
        cmocka_unit_test(test_resnet50_layer_shapes_match_torchvision),
        cmocka_unit_test(test_classes_parameter_sets_the_logits_width),
        cmocka_unit_test(test_null_params_build_the_default_224_1000_model),
        cmocka_unit_test(test_same_seed_gives_bitwise_identical_weights),
        cmocka_unit_test(test_different_seed_changes_every_weight_tensor),
        cmocka_unit_test(test_resnet18_seed_0_first_weights_match_the_documented_generator),
        cmocka_unit_test(test_aliases_build_the_same_weights_as_their_model),
        cmocka_unit_test(test_weights_follow_the_documented_kaiming_and_bn_scaling),
        cmocka_unit_test(test_vgg19_builds_and_frees_in_under_5_seconds),
        cmocka_unit_test(test_unknown_name_is_not_found_and_lists_known_names),
        cmocka_unit_test(test_null_arguments_are_invalid),
        cmocka_unit_test(test_image_too_small_is_a_shape_error_naming_the_layer),
        cmocka_unit_test(test_112_and_96_build_for_every_model_with_gap_heads_keeping_params),
        cmocka_unit_test(test_vgg_adaptive_pool_is_identity_at_224_avgpool_at_448),
        cmocka_unit_test(test_adaptive_pool_matrix_matches_torch_bins_3_to_7),
        cmocka_unit_test(test_fold_absorbs_every_conv_bn_pair_of_the_zoo),
        cmocka_unit_test(
            test_cpu_logits_of_squeezenet_and_mobilenet_v2_at_64_are_finite_and_spread),
        cmocka_unit_test(test_cpu_logits_of_every_model_at_64_or_32_are_finite_and_spread),
        cmocka_unit_test(test_folded_and_unfolded_zoo_models_agree_on_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
