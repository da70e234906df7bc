/* zoo_resnet.c - ResNet 18/34/50/101/152 (torchvision, v1.5: stride on the 3x3). */
#include <stdio.h>

#include "graph/zoo_build.h"

/* gamma of the BN that ends each residual branch: the branch adds to an
 * identity that is not renormalized, so a full-scale branch would double the
 * activations' second moment per block (2^33 over ResNet-101). 0.2 keeps the
 * growth near 4% per block, as trained ResNets' small final gammas do. */
#define RES_BRANCH_GAMMA 0.2f
#define BN_EPS 1e-5f

static ds_zt conv_bn(ds_zb *b, ds_zt x, const char *prefix, const char *conv, const char *bn,
                     ds_zconv c, float gamma)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%s%s", prefix, conv);
    x = ds_zb_conv(b, x, nm, c);
    snprintf(nm, sizeof nm, "%s%s", prefix, bn);
    return ds_zb_bn(b, x, nm, BN_EPS, gamma);
}

static ds_zt relu(ds_zb *b, ds_zt x, const char *prefix, const char *name)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%s%s", prefix, name);
    return ds_zb_relu(b, x, nm);
}

/* The shortcut: identity, or conv1x1(stride) + BN when the shape changes. */
static ds_zt shortcut(ds_zb *b, ds_zt x, const char *p, uint32_t cout, uint32_t stride)
{
    if (stride == 1 && x.c == cout)
        return x;
    return conv_bn(b, x, p, "downsample.0", "downsample.1",
                   (ds_zconv){.cout = cout, .kernel = 1, .stride = stride}, 1.0f);
}

static ds_zt block_end(ds_zb *b, ds_zt branch, ds_zt identity, const char *p)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%sadd", p);
    ds_zt s = ds_zb_add(b, branch, identity, nm);
    return relu(b, s, p, "relu");
}

static ds_zt basic_block(ds_zb *b, ds_zt x, const char *p, uint32_t planes, uint32_t stride)
{
    ds_zt y = conv_bn(b, x, p, "conv1", "bn1",
                      (ds_zconv){.cout = planes, .kernel = 3, .stride = stride, .pad = 1}, 1.0f);
    y = relu(b, y, p, "relu1");
    y = conv_bn(b, y, p, "conv2", "bn2", (ds_zconv){.cout = planes, .kernel = 3, .pad = 1},
                RES_BRANCH_GAMMA);
    return block_end(b, y, shortcut(b, x, p, planes, stride), p);
}

static ds_zt bottleneck(ds_zb *b, ds_zt x, const char *p, uint32_t planes, uint32_t stride)
{
    ds_zt y = conv_bn(b, x, p, "conv1", "bn1", (ds_zconv){.cout = planes, .kernel = 1}, 1.0f);
    y = relu(b, y, p, "relu1");
    y = conv_bn(b, y, p, "conv2", "bn2",
                (ds_zconv){.cout = planes, .kernel = 3, .stride = stride, .pad = 1}, 1.0f);
    y = relu(b, y, p, "relu2");
    y = conv_bn(b, y, p, "conv3", "bn3", (ds_zconv){.cout = planes * 4, .kernel = 1},
                RES_BRANCH_GAMMA);
    return block_end(b, y, shortcut(b, x, p, planes * 4, stride), p);
}

static ds_zt resnet(ds_zb *b, ds_zt x, const uint32_t blocks[4], bool use_bottleneck)
{
    x = conv_bn(b, x, "", "conv1", "bn1",
                (ds_zconv){.cout = 64, .kernel = 7, .stride = 2, .pad = 3}, 1.0f);
    x = ds_zb_relu(b, x, "relu");
    x = ds_zb_maxpool(b, x, "maxpool", 3, 2, 1, false);
    for (uint32_t stage = 0; stage < 4; stage++) {
        uint32_t planes = 64u << stage;
        for (uint32_t i = 0; i < blocks[stage]; i++) {
            char p[64];
            snprintf(p, sizeof p, "layer%u.%u.", stage + 1, i);
            uint32_t stride = (stage > 0 && i == 0) ? 2 : 1;
            x = use_bottleneck ? bottleneck(b, x, p, planes, stride)
                               : basic_block(b, x, p, planes, stride);
        }
    }
    return ds_zb_gap_fc_head(b, x, "fc");
}

ds_zt ds_zoo_resnet18(ds_zb *b, ds_zt x)
{
    return resnet(b, x, (const uint32_t[4]){2, 2, 2, 2}, false);
}
ds_zt ds_zoo_resnet34(ds_zb *b, ds_zt x)
{
    return resnet(b, x, (const uint32_t[4]){3, 4, 6, 3}, false);
}
ds_zt ds_zoo_resnet50(ds_zb *b, ds_zt x)
{
    return resnet(b, x, (const uint32_t[4]){3, 4, 6, 3}, true);
}
ds_zt ds_zoo_resnet101(ds_zb *b, ds_zt x)
{
    return resnet(b, x, (const uint32_t[4]){3, 4, 23, 3}, true);
}
ds_zt ds_zoo_resnet152(ds_zb *b, ds_zt x)
{
    return resnet(b, x, (const uint32_t[4]){3, 8, 36, 3}, true);
}
