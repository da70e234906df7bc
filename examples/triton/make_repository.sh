#!/bin/sh
# Puts the ONNX files into examples/triton/model_repository (they are
# generated, not committed): tiny_cnn from tests/data, mlp2 written with
# onnx.helper by tests/triton/make_models.py. Needs python3 with onnx.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$here/../..
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$top/tests/triton/make_models.py" "$tmp"
for m in tiny_cnn mlp2; do
    mkdir -p "$here/model_repository/$m/1"
    cp "$tmp/$m.onnx" "$here/model_repository/$m/1/model.onnx"
done
echo "model repository ready: $here/model_repository"
