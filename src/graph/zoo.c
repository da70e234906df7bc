/* zoo.c - the built-in model zoo: torchvision architectures built by code,
 * with deterministic generated weights.
 *
 * Every model takes one input "input" of dims (1, 3, S, S) (S = image_size,
 * batch on axis 0) and gives one output "logits" of dims (1, classes). The
 * layers, their order, shapes, and the parameter and MAC counts are
 * torchvision's (torchvision.models, v0.15+); BatchNormalization, ReLU and
 * Clip(0, 6) (ReLU6) are separate nodes after each Conv, as torchvision has
 * them, for ds_graph_fold to fuse. Dropout is left out (inference).
 *
 * Other image sizes: every model accepts any S its layers can take (each
 * window op needs an input at least as large as its window minus padding;
 * smaller is DSTACK_ERR_SHAPE with the layer named). The classifier heads
 * behave as torchvision's at any S: ResNet, MobileNetV2, SqueezeNet,
 * GoogLeNet and DenseNet end in a global average pool; VGG (7x7) and
 * AlexNet (6x6) use AdaptiveAvgPool2d, which is nothing at 224, a plain
 * AvgPool when the map side is a multiple of the target (S = 448), and an
 * exact averaging MatMul otherwise (see ds_zb_adaptive_avgpool), so the FC
 * layers keep torchvision's shapes at every S.
 *
 * Why weights are generated rather than shipped: the zoo exists to give the
 * scheduler, the knee finder and the executors real layer shapes and real
 * FLOPs with no files to download; the numbers must only be well-scaled
 * (see zoo_build.h) so executor outputs can be compared meaningfully.
 *
 * Parameter convention: ds_graph_param_count counts every constant float,
 * so it includes BN running mean and variance, which torchvision's
 * published counts (trainable parameters) leave out: published =
 * param_count - 2 x (BN channels).
 */
#include <stdio.h>
#include <string.h>

#include "graph/zoo_build.h"
#include "util/error.h"

#define ZOO_MAX_IMAGE_SIZE 4096u
#define ZOO_MAX_CLASSES 100000u

/* name, canonical architecture (seeds the weights, so aliases agree), builder */
#define ZOO_MODELS(X)                                                                              \
    X("resnet18", "resnet18", ds_zoo_resnet18)                                                     \
    X("resnet34", "resnet34", ds_zoo_resnet34)                                                     \
    X("resnet50", "resnet50", ds_zoo_resnet50)                                                     \
    X("resnet101", "resnet101", ds_zoo_resnet101)                                                  \
    X("resnet152", "resnet152", ds_zoo_resnet152)                                                  \
    X("mobilenet_v2", "mobilenet_v2", ds_zoo_mobilenet_v2)                                         \
    X("vgg16", "vgg16", ds_zoo_vgg16)                                                              \
    X("vgg19", "vgg19", ds_zoo_vgg19)                                                              \
    X("alexnet", "alexnet", ds_zoo_alexnet)                                                        \
    X("squeezenet1_0", "squeezenet1_0", ds_zoo_squeezenet1_0)                                      \
    X("squeezenet1_1", "squeezenet1_1", ds_zoo_squeezenet1_1)                                      \
    X("squeezenet", "squeezenet1_1", ds_zoo_squeezenet1_1)                                         \
    X("googlenet", "googlenet", ds_zoo_googlenet)                                                  \
    X("inception", "googlenet", ds_zoo_googlenet)                                                  \
    X("densenet121", "densenet121", ds_zoo_densenet121)

typedef struct zoo_entry {
    const char *name;
    const char *arch;
    ds_zoo_arch_fn build;
} zoo_entry;

#define ZOO_ENTRY(name, arch, fn) {name, arch, fn},
#define ZOO_NAME(name, arch, fn) name,
static const zoo_entry zoo_table[] = {ZOO_MODELS(ZOO_ENTRY)};
static const char *const zoo_names[] = {ZOO_MODELS(ZOO_NAME) NULL};
#define ZOO_COUNT (sizeof zoo_table / sizeof zoo_table[0])

const char *const *ds_zoo_names(void) { return zoo_names; }

/* FNV-1a, to give each architecture its own weight stream for one seed. */
static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001B3ull;
    return h;
}

static dstack_status unknown_name(const char *name)
{
    char known[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < ZOO_COUNT && len < sizeof known; i++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                                zoo_table[i].name);
    return ds_fail(DSTACK_ERR_NOT_FOUND, "no zoo model named '%s'; known: %s", name, known);
}

dstack_status ds_zoo_build(const char *name, const ds_zoo_params *p, ds_graph **out)
{
    if (!out)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_zoo_build: out is NULL");
    *out = NULL;
    if (!name)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "ds_zoo_build: name is NULL");
    const zoo_entry *e = NULL;
    for (size_t i = 0; i < ZOO_COUNT && !e; i++)
        if (strcmp(zoo_table[i].name, name) == 0)
            e = &zoo_table[i];
    if (!e)
        return unknown_name(name);

    ds_zb b = {.name = name, .image_size = 224, .classes = 1000};
    uint64_t seed = 0;
    if (p) {
        if (p->image_size)
            b.image_size = p->image_size;
        if (p->classes)
            b.classes = p->classes;
        seed = p->seed;
    }
    if (b.image_size > ZOO_MAX_IMAGE_SIZE)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "zoo '%s': image_size %u is over %u", name,
                       b.image_size, ZOO_MAX_IMAGE_SIZE);
    if (b.classes > ZOO_MAX_CLASSES)
        return ds_fail(DSTACK_ERR_INVALID_ARGUMENT, "zoo '%s': classes %u is over %u", name,
                       b.classes, ZOO_MAX_CLASSES);
    b.rng = seed ^ hash_name(e->arch);

    b.g = ds_graph_new(name);
    if (!b.g)
        return ds_fail(DSTACK_ERR_OUT_OF_MEMORY, "zoo '%s': no memory for the graph", name);
    ds_zt logits = e->build(&b, ds_zb_input(&b));
    if (b.st == DSTACK_OK && (!logits.flat || logits.c != b.classes))
        b.st = ds_fail(DSTACK_ERR_INTERNAL, "zoo '%s': head gives %u values, not %u classes", name,
                       logits.c, b.classes);
    if (b.st == DSTACK_OK)
        b.st = ds_graph_mark_output(b.g, logits.id);
    if (b.st == DSTACK_OK)
        b.st = ds_graph_finalize(b.g);
    if (b.st != DSTACK_OK) {
        ds_graph_free(b.g);
        return b.st;
    }
    *out = b.g;
    return DSTACK_OK;
}
