/* zoo_densenet.c - DenseNet-121 (torchvision: growth 32, bn_size 4,
 * blocks 6/12/24/16, 64 initial features, compression 0.5).
 *
 * torchvision concatenates all earlier features at every layer; Concat here
 * takes at most DS_NODE_MAX_INPUTS inputs, so the running feature map is
 * grown by one two-input Concat per layer instead: the same tensor, the
 * same channel order. */
#include <stdio.h>

#include "graph/zoo_build.h"

#define BN_EPS 1e-5f
#define GROWTH 32u
#define BN_SIZE 4u

static ds_zt bn_relu(ds_zb *b, ds_zt x, const char *p, const char *bn, const char *relu)
{
    char nm[96];
    snprintf(nm, sizeof nm, "%s%s", p, bn);
    x = ds_zb_bn(b, x, nm, BN_EPS, 1.0f);
    snprintf(nm, sizeof nm, "%s%s", p, relu);
    return ds_zb_relu(b, x, nm);
}

static ds_zt dense_layer(ds_zb *b, ds_zt x, const char *p)
{
    char nm[96];
    ds_zt y = bn_relu(b, x, p, "norm1", "relu1");
    snprintf(nm, sizeof nm, "%sconv1", p);
    y = ds_zb_conv(b, y, nm, (ds_zconv){.cout = BN_SIZE * GROWTH, .kernel = 1});
    y = bn_relu(b, y, p, "norm2", "relu2");
    snprintf(nm, sizeof nm, "%sconv2", p);
    y = ds_zb_conv(b, y, nm, (ds_zconv){.cout = GROWTH, .kernel = 3, .pad = 1});
    snprintf(nm, sizeof nm, "%scat", p);
    ds_zt both[2] = {x, y};
    return ds_zb_concat(b, both, 2, nm);
}

ds_zt ds_zoo_densenet121(ds_zb *b, ds_zt x)
{
    static const uint32_t layers[4] = {6, 12, 24, 16};
    x = ds_zb_conv(b, x, "features.conv0",
                   (ds_zconv){.cout = 64, .kernel = 7, .stride = 2, .pad = 3});
    x = bn_relu(b, x, "features.", "norm0", "relu0");
    x = ds_zb_maxpool(b, x, "features.pool0", 3, 2, 1, false);
    for (uint32_t blk = 0; blk < 4; blk++) {
        char p[64];
        for (uint32_t i = 0; i < layers[blk]; i++) {
            snprintf(p, sizeof p, "features.denseblock%u.denselayer%u.", blk + 1, i + 1);
            x = dense_layer(b, x, p);
        }
        if (blk == 3)
            break;
        snprintf(p, sizeof p, "features.transition%u.", blk + 1);
        x = bn_relu(b, x, p, "norm", "relu");
        char nm[96];
        snprintf(nm, sizeof nm, "%sconv", p);
        x = ds_zb_conv(b, x, nm, (ds_zconv){.cout = x.c / 2, .kernel = 1});
        snprintf(nm, sizeof nm, "%spool", p);
        x = ds_zb_avgpool(b, x, nm, 2, 2, 0);
    }
    x = bn_relu(b, x, "features.", "norm5", "relu5");
    return ds_zb_gap_fc_head(b, x, "classifier");
}
