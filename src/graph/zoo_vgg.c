/* zoo_vgg.c - VGG-16, VGG-19 (configurations D and E, no BN) and AlexNet
 * (torchvision's one-GPU variant: 64/192/384/256/256 channels). */
#include <stdio.h>

#include "graph/zoo_build.h"

#define VGG_POOL 0u /* in a configuration: a 2x2 max pool */

/* features.<i>: conv3x3 + ReLU per channel count, MaxPool(2, 2) per 0;
 * avgpool (adaptive 7x7); classifier.0/3/6 Linear with ReLU between. */
static ds_zt vgg(ds_zb *b, ds_zt x, const uint32_t *cfg, uint32_t n)
{
    char nm[64];
    uint32_t index = 0;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(nm, sizeof nm, "features.%u", index++);
        if (cfg[i] == VGG_POOL) {
            x = ds_zb_maxpool(b, x, nm, 2, 2, 0, false);
            continue;
        }
        x = ds_zb_conv(b, x, nm, (ds_zconv){.cout = cfg[i], .kernel = 3, .pad = 1, .bias = true});
        snprintf(nm, sizeof nm, "features.%u", index++);
        x = ds_zb_relu(b, x, nm);
    }
    x = ds_zb_adaptive_avgpool(b, x, "avgpool", 7);
    x = ds_zb_flatten(b, x, "flatten");
    x = ds_zb_linear(b, x, "classifier.0", 4096, true, NULL);
    x = ds_zb_relu(b, x, "classifier.1");
    x = ds_zb_linear(b, x, "classifier.3", 4096, true, NULL);
    x = ds_zb_relu(b, x, "classifier.4");
    return ds_zb_linear(b, x, "classifier.6", b->classes, false, "logits");
}

ds_zt ds_zoo_vgg16(ds_zb *b, ds_zt x)
{
    /* clang-format off */
    static const uint32_t cfg[] = {
        64, 64, VGG_POOL,
        128, 128, VGG_POOL,
        256, 256, 256, VGG_POOL,
        512, 512, 512, VGG_POOL,
        512, 512, 512, VGG_POOL,
    };
    /* clang-format on */
    return vgg(b, x, cfg, sizeof cfg / sizeof cfg[0]);
}

ds_zt ds_zoo_vgg19(ds_zb *b, ds_zt x)
{
    /* clang-format off */
    static const uint32_t cfg[] = {
        64, 64, VGG_POOL,
        128, 128, VGG_POOL,
        256, 256, 256, 256, VGG_POOL,
        512, 512, 512, 512, VGG_POOL,
        512, 512, 512, 512, VGG_POOL,
    };
    /* clang-format on */
    return vgg(b, x, cfg, sizeof cfg / sizeof cfg[0]);
}

ds_zt ds_zoo_alexnet(ds_zb *b, ds_zt x)
{
    x = ds_zb_conv(b, x, "features.0",
                   (ds_zconv){.cout = 64, .kernel = 11, .stride = 4, .pad = 2, .bias = true});
    x = ds_zb_relu(b, x, "features.1");
    x = ds_zb_maxpool(b, x, "features.2", 3, 2, 0, false);
    x = ds_zb_conv(b, x, "features.3",
                   (ds_zconv){.cout = 192, .kernel = 5, .pad = 2, .bias = true});
    x = ds_zb_relu(b, x, "features.4");
    x = ds_zb_maxpool(b, x, "features.5", 3, 2, 0, false);
    x = ds_zb_conv(b, x, "features.6",
                   (ds_zconv){.cout = 384, .kernel = 3, .pad = 1, .bias = true});
    x = ds_zb_relu(b, x, "features.7");
    x = ds_zb_conv(b, x, "features.8",
                   (ds_zconv){.cout = 256, .kernel = 3, .pad = 1, .bias = true});
    x = ds_zb_relu(b, x, "features.9");
    x = ds_zb_conv(b, x, "features.10",
                   (ds_zconv){.cout = 256, .kernel = 3, .pad = 1, .bias = true});
    x = ds_zb_relu(b, x, "features.11");
    x = ds_zb_maxpool(b, x, "features.12", 3, 2, 0, false);
    x = ds_zb_adaptive_avgpool(b, x, "avgpool", 6);
    x = ds_zb_flatten(b, x, "flatten");
    x = ds_zb_linear(b, x, "classifier.1", 4096, true, NULL);
    x = ds_zb_relu(b, x, "classifier.2");
    x = ds_zb_linear(b, x, "classifier.4", 4096, true, NULL);
    x = ds_zb_relu(b, x, "classifier.5");
    return ds_zb_linear(b, x, "classifier.6", b->classes, false, "logits");
}
