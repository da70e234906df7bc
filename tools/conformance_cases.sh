#!/bin/sh
# Prints, one per line, every ONNX node-test case directory whose model uses
# only operator types libdstack implements. Variants of those ops it refuses
# (1-D/3-D pooling, integer inputs, MaxPool indices, ...) stay in the list:
# the runner reports them as UNSUPPORTED; only cases with another op type
# are left out.
#
# The op types are read by the conformance runner itself
# (onnx_conformance --list-supported), so no python is needed. The runner is
# $CONFORMANCE, else tests/onnx_conformance, else build/tests/onnx_conformance;
# python3 with onnx is the fallback when none is built.
#
#   tools/conformance_cases.sh [DATA_DIR]   (default /usr/share/libonnx-testdata/data/node)
set -u
data=${1:-/usr/share/libonnx-testdata/data/node}
[ -d "$data" ] || { echo "conformance_cases.sh: no test data at $data" >&2; exit 1; }
runner=""
for r in "${CONFORMANCE:-}" tests/onnx_conformance build/tests/onnx_conformance; do
    if [ -n "$r" ] && [ -x "$r" ]; then runner=$r; break; fi
done
if [ -n "$runner" ]; then
    # model.onnx present: a case directory
    find "$data" -mindepth 2 -maxdepth 2 -name model.onnx | sort | sed 's|/model.onnx$||' |
        xargs "$runner" --list-supported
    exit $?
fi
exec python3 - "$data" <<'PY'
import os, sys
import onnx
SUPPORTED = {"Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
             "HardSigmoid", "HardSwish", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool",
             "GlobalMaxPool", "Gemm", "MatMul", "Add", "Mul", "Sum", "Concat", "Flatten",
             "Reshape", "Transpose", "Softmax", "LRN", "Dropout", "Identity", "Constant"}
root = sys.argv[1]
for d in sorted(os.listdir(root)):
    path = os.path.join(root, d, "model.onnx")
    if not os.path.isfile(path):
        continue
    g = onnx.load(path).graph
    if all(n.domain in ("", "ai.onnx") and n.op_type in SUPPORTED for n in g.node):
        print(os.path.join(root, d))
PY
