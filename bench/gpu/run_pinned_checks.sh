#!/bin/bash
# run_pinned_checks.sh - the page-locked input path (dstack_host_alloc) on the
# GPU machine: latency with pageable vs page-locked inputs beside PyTorch in
# one run, correctness of both input paths against the cpu reference, the
# conformance cases and the public-API checks again. Build first, here:
#   sh bench/gpu/build_for_device.sh
# then on the device, with .carry carried: bash bench/gpu/run_pinned_checks.sh
set -u
R=${OUT:-bench/out}
mkdir -p "$R"
SP=$(python3 -c 'import site;print(site.getsitepackages()[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/.carry/lib:$SP/nvidia/cu13/lib:$SP/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
B=.carry/bin/gpu_bench
{
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "== latency: pageable inputs (latency,...) and page-locked inputs (latency_pinned,...), then torch"
for m in resnet50 mobilenet_v2; do for b in 1 32; do
  $B latency $m $b 100 none
  DSTACK_BENCH_PINNED=1 $B latency $m $b 100 none | sed 's/^latency,/latency_pinned,/'
done; done
python3 bench/gpu/torch_ref.py 100 2>&1 | grep -v Warning
echo "== correctness, both input paths"
for m in resnet50 mobilenet_v2 squeezenet1_1; do
  $B correct $m 1,8,32 | grep -v '^correct,model'
  DSTACK_BENCH_PINNED=1 $B correct $m 1,8,32 | grep -v '^correct,model' | sed 's/^correct,/correct_pinned,/'
done
echo "== conformance on cuda"
.carry/bin/onnx_conformance --backend cuda .carry/onnx-node/* | tail -1
echo "== public API on cuda"
.carry/bin/serve_demo --requests 600 | tail -5
for t in api_basic api_concurrency; do DSTACK_TEST_DATA=$PWD/tests/data .carry/bin/$t 2>&1 | grep -E 'PASSED|FAILED'; done
echo "== done $(date -u +%H:%M:%S)"
} 2>&1 | tee "$R/pinned_checks.log"
