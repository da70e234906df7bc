/* zoo_googlenet.c - GoogLeNet (Inception v1) as torchvision builds it:
 * BN after every conv (eps 1e-3), no aux heads (inference), no
 * transform_input (that is a per-channel affine of the input that only the
 * pretrained weights need). As in torchvision, the "5x5" branch uses a 3x3
 * kernel (a known torchvision quirk kept for weight compatibility). */
#include <stdio.h>

#include "graph/zoo_build.h"

#define BN_EPS 1e-3f

/* torchvision BasicConv2d: <p>.conv, <p>.bn, then ReLU. */
static ds_zt basic_conv(ds_zb *b, ds_zt x, const char *p, uint32_t cout, uint32_t kernel,
                        uint32_t stride, uint32_t pad)
{
    char nm[96];
    snprintf(nm, sizeof nm, "%s.conv", p);
    x = ds_zb_conv(b, x, nm,
                   (ds_zconv){.cout = cout, .kernel = kernel, .stride = stride, .pad = pad});
    snprintf(nm, sizeof nm, "%s.bn", p);
    x = ds_zb_bn(b, x, nm, BN_EPS, 1.0f);
    snprintf(nm, sizeof nm, "%s.relu", p);
    return ds_zb_relu(b, x, nm);
}

typedef struct inception_cfg {
    const char *name;
    uint32_t ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj;
} inception_cfg;

static ds_zt inception(ds_zb *b, ds_zt x, const inception_cfg *c)
{
    char p[96];
    ds_zt br[4];
    snprintf(p, sizeof p, "%s.branch1", c->name);
    br[0] = basic_conv(b, x, p, c->ch1x1, 1, 1, 0);
    snprintf(p, sizeof p, "%s.branch2.0", c->name);
    br[1] = basic_conv(b, x, p, c->ch3x3red, 1, 1, 0);
    snprintf(p, sizeof p, "%s.branch2.1", c->name);
    br[1] = basic_conv(b, br[1], p, c->ch3x3, 3, 1, 1);
    snprintf(p, sizeof p, "%s.branch3.0", c->name);
    br[2] = basic_conv(b, x, p, c->ch5x5red, 1, 1, 0);
    snprintf(p, sizeof p, "%s.branch3.1", c->name);
    br[2] = basic_conv(b, br[2], p, c->ch5x5, 3, 1, 1);
    snprintf(p, sizeof p, "%s.branch4.0", c->name);
    br[3] = ds_zb_maxpool(b, x, p, 3, 1, 1, true);
    snprintf(p, sizeof p, "%s.branch4.1", c->name);
    br[3] = basic_conv(b, br[3], p, c->pool_proj, 1, 1, 0);
    return ds_zb_concat(b, br, 4, c->name);
}

ds_zt ds_zoo_googlenet(ds_zb *b, ds_zt x)
{
    static const inception_cfg cfg[9] = {
        {"inception3a", 64, 96, 128, 16, 32, 32},     {"inception3b", 128, 128, 192, 32, 96, 64},
        {"inception4a", 192, 96, 208, 16, 48, 64},    {"inception4b", 160, 112, 224, 24, 64, 64},
        {"inception4c", 128, 128, 256, 24, 64, 64},   {"inception4d", 112, 144, 288, 32, 64, 64},
        {"inception4e", 256, 160, 320, 32, 128, 128}, {"inception5a", 256, 160, 320, 32, 128, 128},
        {"inception5b", 384, 192, 384, 48, 128, 128},
    };
    x = basic_conv(b, x, "conv1", 64, 7, 2, 3);
    x = ds_zb_maxpool(b, x, "maxpool1", 3, 2, 0, true);
    x = basic_conv(b, x, "conv2", 64, 1, 1, 0);
    x = basic_conv(b, x, "conv3", 192, 3, 1, 1);
    x = ds_zb_maxpool(b, x, "maxpool2", 3, 2, 0, true);
    x = inception(b, x, &cfg[0]);
    x = inception(b, x, &cfg[1]);
    x = ds_zb_maxpool(b, x, "maxpool3", 3, 2, 0, true);
    for (uint32_t i = 2; i < 7; i++)
        x = inception(b, x, &cfg[i]);
    x = ds_zb_maxpool(b, x, "maxpool4", 2, 2, 0, true);
    x = inception(b, x, &cfg[7]);
    x = inception(b, x, &cfg[8]);
    return ds_zb_gap_fc_head(b, x, "fc");
}
