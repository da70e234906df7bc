#!/bin/sh
# Installs what libdstack's build and tests need, if it is missing:
# Debian packages (cmocka, protobuf-c, ONNX schema and conformance data,
# pkg-config, valgrind, clang with libFuzzer for the fuzz smoke run of make
# check) and the Python oracles (onnx, onnxruntime, numpy).
# The CUDA toolkit is optional: without it the cuda backend is left out.
# Safe to run again; it does nothing when everything is there.
set -eu
PKGS="build-essential pkg-config libcmocka-dev libcjson-dev protobuf-c-compiler libprotobuf-c-dev libonnx-dev libonnx-testdata valgrind python3 python3-pip python3-venv"
# clang's libFuzzer and sanitizer runtimes (libclang-rt-*-dev on Debian 12).
PKGS="$PKGS clang libclang-rt-$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1 | grep . || echo 14)-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
if ! python3 -c 'import onnx, onnxruntime, numpy' 2>/dev/null; then
    echo "setup: installing the Python oracles (onnx, onnxruntime, numpy)"
    python3 -m pip install -q onnx onnxruntime numpy 2>/dev/null ||
        python3 -m pip install -q --break-system-packages onnx onnxruntime numpy
fi
if [ -f "${CUDA_HOME:-/usr/local/cuda}/include/cudnn.h" ]; then
    echo "setup: CUDA toolkit with cuDNN found: the cuda backend will be built"
else
    echo "setup: no CUDA toolkit with cuDNN under ${CUDA_HOME:-/usr/local/cuda}: building cpu only"
fi
