/* dstack_export.c - writes a zoo model as an ONNX file with ds_onnx_export.
 *
 *   dstack_export ZOO_NAME OUT.onnx [IMAGE_SIZE [CLASSES [SEED]]]
 *   dstack_export --sizes      sizes of the public structs and offsets of their
 *                              last fields, for ctypes checks
 *
 * Built by tests/python/test_onnx_oracle.py against build/libdstack-internal.a
 * (the exporter is internal: neither libdstack.so nor libdstack.a export it).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "dstack.h"
#include "graph/graph.h"

int main(int argc, char **argv)
{
    if (argc == 2 && argv[1][0] == '-' && argv[1][1] == '-') {
        printf("options %zu\nmodel_desc %zu\nmodel_info %zu\nrequest %zu\ncompletion %zu\n",
               sizeof(dstack_options), sizeof(dstack_model_desc), sizeof(dstack_model_info),
               sizeof(dstack_request), sizeof(dstack_completion));
        /* offsets of the fields added last, which padding may hide from a size check */
        printf("request.deadline_ns %zu\nrequest.n_samples %zu\n"
               "model_info.precision %zu\nmodel_info.batchable %zu\n",
               offsetof(dstack_request, deadline_ns), offsetof(dstack_request, n_samples),
               offsetof(dstack_model_info, precision), offsetof(dstack_model_info, batchable));
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: dstack_export ZOO_NAME OUT.onnx [IMAGE_SIZE [CLASSES [SEED]]]\n");
        return 2;
    }
    ds_zoo_params p = {224, 1000, 0};
    if (argc > 3)
        p.image_size = (uint32_t)strtoul(argv[3], NULL, 10);
    if (argc > 4)
        p.classes = (uint32_t)strtoul(argv[4], NULL, 10);
    if (argc > 5)
        p.seed = strtoull(argv[5], NULL, 10);
    ds_graph *g = NULL;
    dstack_status st = ds_zoo_build(argv[1], &p, &g);
    if (st) {
        fprintf(stderr, "dstack_export: zoo %s: %s\n", argv[1], dstack_last_error());
        return 1;
    }
    void *bytes = NULL;
    size_t n = 0;
    st = ds_onnx_export(g, &bytes, &n);
    ds_graph_free(g);
    if (st) {
        fprintf(stderr, "dstack_export: export: %s\n", dstack_last_error());
        return 1;
    }
    FILE *f = fopen(argv[2], "wb");
    int rc = !f || fwrite(bytes, 1, n, f) != n;
    if (f && fclose(f))
        rc = 1;
    free(bytes);
    if (rc)
        fprintf(stderr, "dstack_export: cannot write %s\n", argv[2]);
    return rc;
}
