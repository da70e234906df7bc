/* onnx_util.h - what the ONNX importer and exporter share (private to graph/).
 *
 * The opset range the importer accepts and the one the exporter writes live
 * here so the two never disagree about what a round trip means.
 */
#ifndef DS_GRAPH_ONNX_UTIL_H
#define DS_GRAPH_ONNX_UTIL_H

#include <stdint.h>

/* Oldest default-domain opset accepted as a whole. Some ops (Conv, the
 * global pools, MatMul, ...) are unchanged since opset 1 and are accepted
 * from older opsets too; see the op table in onnx_import.c. */
#define DS_ONNX_MIN_OPSET 7
/* Newest default-domain opset whose semantics for our ops were checked.
 * Versions after it are refused rather than guessed. */
#define DS_ONNX_MAX_OPSET 22
/* What ds_onnx_export writes (14 when a Reshape needs allowzero). */
#define DS_ONNX_EXPORT_OPSET 13
/* IR version written by the exporter: 7 is what opset 13 was released with. */
#define DS_ONNX_EXPORT_IR_VERSION 7

/* Largest tensor one request may have, in elements (1 GiB of float32).
 * Real CNNs stay far below (VGG's biggest activation at 224x224 is 3.2M);
 * the bound keeps a corrupt dimension from asking the executors for
 * terabytes, and keeps every shape product far from int64 overflow. The
 * same bound applies to a Conv's im2col matrix (C/group x kH x kW x OH x OW). */
#define DS_ONNX_MAX_ELEMS ((int64_t)1 << 28)

/* Largest single dimension of a graph input; the element bound above
 * usually refuses first, this one names the dimension that is too large. */
#define DS_ONNX_MAX_DIM ((int64_t)1 << 31)

/* Bytes unpacking may hold beyond 16x the file size (see parse_budget). */
#define DS_ONNX_PARSE_SLACK ((uint64_t)64 << 20)

#endif
