/* zoo_mobilenet.c - MobileNetV2 (torchvision, width 1.0). */
#include <stdio.h>

#include "graph/zoo_build.h"

#define BN_EPS 1e-5f
/* See zoo_resnet.c: the residual sum is not renormalized (and has no ReLU
 * after it here), so the branch's last BN is scaled down. */
#define RES_BRANCH_GAMMA 0.2f

/* torchvision's Conv2dNormActivation(..., activation_layer=ReLU6): prefix.0/1/2. */
static ds_zt conv_bn_relu6(ds_zb *b, ds_zt x, const char *prefix, ds_zconv c)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%s.0", prefix);
    x = ds_zb_conv(b, x, nm, c);
    snprintf(nm, sizeof nm, "%s.1", prefix);
    x = ds_zb_bn(b, x, nm, BN_EPS, 1.0f);
    snprintf(nm, sizeof nm, "%s.2", prefix);
    return ds_zb_relu6(b, x, nm);
}

static ds_zt inverted_residual(ds_zb *b, ds_zt x, uint32_t index, uint32_t cout, uint32_t stride,
                               uint32_t expand)
{
    char p[160], nm[160];
    uint32_t hidden = x.c * expand, layer = 0;
    bool residual = stride == 1 && x.c == cout;
    ds_zt y = x;
    if (expand != 1) {
        snprintf(p, sizeof p, "features.%u.conv.%u", index, layer++);
        y = conv_bn_relu6(b, y, p, (ds_zconv){.cout = hidden, .kernel = 1});
    }
    snprintf(p, sizeof p, "features.%u.conv.%u", index, layer++);
    y = conv_bn_relu6(
        b, y, p,
        (ds_zconv){.cout = hidden, .kernel = 3, .stride = stride, .pad = 1, .group = hidden});
    snprintf(nm, sizeof nm, "features.%u.conv.%u", index, layer++);
    y = ds_zb_conv(b, y, nm, (ds_zconv){.cout = cout, .kernel = 1, .linear = true});
    snprintf(nm, sizeof nm, "features.%u.conv.%u", index, layer++);
    y = ds_zb_bn(b, y, nm, BN_EPS, residual ? RES_BRANCH_GAMMA : 1.0f);
    if (!residual)
        return y;
    snprintf(nm, sizeof nm, "features.%u.add", index);
    return ds_zb_add(b, x, y, nm);
}

ds_zt ds_zoo_mobilenet_v2(ds_zb *b, ds_zt x)
{
    /* t (expansion), c (channels), n (repeats), s (first stride) */
    static const uint32_t settings[7][4] = {
        {1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2},  {6, 64, 4, 2},
        {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1},
    };
    x = conv_bn_relu6(b, x, "features.0",
                      (ds_zconv){.cout = 32, .kernel = 3, .stride = 2, .pad = 1});
    uint32_t index = 1;
    for (uint32_t s = 0; s < 7; s++)
        for (uint32_t i = 0; i < settings[s][2]; i++)
            x = inverted_residual(b, x, index++, settings[s][1], i == 0 ? settings[s][3] : 1,
                                  settings[s][0]);
    char p[32];
    snprintf(p, sizeof p, "features.%u", index);
    x = conv_bn_relu6(b, x, p, (ds_zconv){.cout = 1280, .kernel = 1});
    x = ds_zb_global_avgpool(b, x, "avgpool");
    x = ds_zb_flatten(b, x, "flatten");
    return ds_zb_linear(b, x, "classifier.1", b->classes, false, "logits");
}
