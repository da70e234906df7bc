#!/bin/sh
# Build here what the GPU machine runs, into .carry/ (ignored by git; name it
# in the run tool's `carry`). The device image has CUDA 13 + cuDNN/cuBLAS as
# Python wheels but no protobuf-c or cmocka, so those libraries travel too.
#   sh bench/gpu/build_for_device.sh      (from the repository root)
set -e
B=${B:-/tmp/b-gpu-dev}
make BUILD=$B LIBOUT=$B/lib lib $B/libdstack-internal.a -j2 >/dev/null
rm -rf .carry && mkdir -p .carry/lib .carry/bin
cp -a $B/lib/libdstack.so* $B/lib/libdstack-cuda.so* .carry/lib/
cp -a /usr/lib/x86_64-linux-gnu/libprotobuf-c.so.1* /usr/lib/x86_64-linux-gnu/libcmocka.so.0* .carry/lib/
cc -std=c11 -O2 -Wall -Wextra -Wshadow -D_GNU_SOURCE -Iinclude -Isrc -I$B/gen -I/usr/local/cuda/include \
   -DDS_WITH_CUDA=1 -pthread bench/gpu/gpu_bench.c $B/libdstack-internal.a -o .carry/bin/gpu_bench \
   -lprotobuf-c -lm -ldl -L/usr/local/cuda/lib64 -lcudnn -lcublas -lcudart -lstdc++
for t in test_gpu_partition test_cuda_plan; do
  [ -f tests/$t.c ] && make BUILD=$B LIBOUT=$B/lib $B/tests/$t >/dev/null && cp $B/tests/$t .carry/bin/
done
if [ -f tests/onnx_conformance.c ]; then
  if make BUILD=$B LIBOUT=$B/lib $B/tests/onnx_conformance >/dev/null 2>&1; then
    cp $B/tests/onnx_conformance .carry/bin/
    # the ONNX node cases the IR supports travel with it (the device has no libonnx-testdata)
    mkdir -p .carry/onnx-node
    for d in $($B/tests/onnx_conformance --list-supported /usr/share/libonnx-testdata/data/node/*); do
      cp -r "$d" .carry/onnx-node/
    done
  else echo "conformance runner did not build"; fi
fi
# the public-API programs (bench/gpu/run_api_checks.sh)
make BUILD=$B LIBOUT=$B/lib $B/examples/serve_demo $B/tests/api_basic $B/tests/api_concurrency \
     $B/tests/api_onnx_malformed $B/tests/api_cuda_module >/dev/null
cp $B/examples/serve_demo $B/tests/api_basic $B/tests/api_concurrency $B/tests/api_onnx_malformed \
   $B/tests/api_cuda_module .carry/bin/
# the bench tools that take --backend cuda (bench/gpu/session.sh)
make BUILD=$B LIBOUT=$B/lib $B/bench/knee_curve $B/bench/sched_compare $B/bench/register_time >/dev/null
cp $B/bench/knee_curve $B/bench/sched_compare $B/bench/register_time .carry/bin/
cp bench/gpu/probe_env.c .carry/ 2>/dev/null || true
du -sh .carry
