/* zoo_squeezenet.c - SqueezeNet 1.0 and 1.1 (torchvision). "squeezenet" is 1.1. */
#include <stdio.h>

#include "graph/zoo_build.h"

/* features.<i>.{squeeze, expand1x1, expand3x3}(+ _activation), concatenated. */
static ds_zt fire(ds_zb *b, ds_zt x, uint32_t index, uint32_t squeeze, uint32_t expand)
{
    char nm[64];
    snprintf(nm, sizeof nm, "features.%u.squeeze", index);
    x = ds_zb_conv(b, x, nm, (ds_zconv){.cout = squeeze, .kernel = 1, .bias = true});
    snprintf(nm, sizeof nm, "features.%u.squeeze_activation", index);
    x = ds_zb_relu(b, x, nm);
    ds_zt e[2];
    snprintf(nm, sizeof nm, "features.%u.expand1x1", index);
    e[0] = ds_zb_conv(b, x, nm, (ds_zconv){.cout = expand, .kernel = 1, .bias = true});
    snprintf(nm, sizeof nm, "features.%u.expand1x1_activation", index);
    e[0] = ds_zb_relu(b, e[0], nm);
    snprintf(nm, sizeof nm, "features.%u.expand3x3", index);
    e[1] = ds_zb_conv(b, x, nm, (ds_zconv){.cout = expand, .kernel = 3, .pad = 1, .bias = true});
    snprintf(nm, sizeof nm, "features.%u.expand3x3_activation", index);
    e[1] = ds_zb_relu(b, e[1], nm);
    snprintf(nm, sizeof nm, "features.%u", index);
    return ds_zb_concat(b, e, 2, nm);
}

/* After the stem (features.0-2): a fire module per nonzero squeeze width
 * (expand = 4 x squeeze), a MaxPool(3, 2, ceil_mode) per 0. */
static ds_zt squeezenet(ds_zb *b, ds_zt x, ds_zconv stem, const uint32_t *body, uint32_t n)
{
    x = ds_zb_conv(b, x, "features.0", stem);
    x = ds_zb_relu(b, x, "features.1");
    x = ds_zb_maxpool(b, x, "features.2", 3, 2, 0, true);
    for (uint32_t i = 0; i < n; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "features.%u", i + 3);
        x = body[i] ? fire(b, x, i + 3, body[i], 4 * body[i])
                    : ds_zb_maxpool(b, x, nm, 3, 2, 0, true);
    }
    x = ds_zb_conv(b, x, "classifier.1", (ds_zconv){.cout = b->classes, .kernel = 1, .bias = true});
    x = ds_zb_relu(b, x, "classifier.2");
    x = ds_zb_global_avgpool(b, x, "classifier.3");
    return ds_zb_flatten(b, x, "logits");
}

ds_zt ds_zoo_squeezenet1_0(ds_zb *b, ds_zt x)
{
    static const uint32_t body[] = {16, 16, 32, 0, 32, 48, 48, 64, 0, 64};
    return squeezenet(b, x, (ds_zconv){.cout = 96, .kernel = 7, .stride = 2, .bias = true}, body,
                      sizeof body / sizeof body[0]);
}

ds_zt ds_zoo_squeezenet1_1(ds_zb *b, ds_zt x)
{
    static const uint32_t body[] = {16, 16, 0, 32, 32, 0, 48, 48, 64, 64};
    return squeezenet(b, x, (ds_zconv){.cout = 64, .kernel = 3, .stride = 2, .bias = true}, body,
                      sizeof body / sizeof body[0]);
}
