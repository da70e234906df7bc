#!/bin/bash
# run_api_checks.sh - the public API on the GPU machine: the request path on
# the cuda backend (serve_demo: 3 zoo models, 2 submitting threads, poll),
# the integration tests with a GPU present, and PyTorch's own ONNX exports
# run by libdstack on cuda and cpu. Build first, here:
#   sh bench/gpu/build_for_device.sh
# then on the device, from the repository root, with .carry carried:
#   bash bench/gpu/run_api_checks.sh
set -u
R=${OUT:-bench/out}
mkdir -p "$R"
SP=$(python3 -c 'import site;print(site.getsitepackages()[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/.carry/lib:$SP/nvidia/cu13/lib:$SP/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
{
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "== serve_demo, backend auto (cuda), 600 requests"
.carry/bin/serve_demo --requests 600
echo "== serve_demo, backend cuda, 600 requests at 112x112"
.carry/bin/serve_demo --backend cuda --requests 600 --image 112
echo "== integration tests with a GPU present"
for t in api_basic api_concurrency api_onnx_malformed; do
  (DSTACK_TEST_DATA=$PWD/tests/data .carry/bin/$t 2>&1 | grep -E 'PASSED|FAILED|SKIPPED|ERROR')
done
echo "== PyTorch-exported ONNX on cuda"
LIBOUT=.carry/lib python3 bench/torch_export_check.py --backend cuda 2>&1 | grep -v Warning
echo "== PyTorch-exported ONNX on cpu"
LIBOUT=.carry/lib python3 bench/torch_export_check.py --backend cpu 2>&1 | grep -v Warning
echo "== done $(date -u +%H:%M:%S)"
} 2>&1 | tee "$R/api_checks.log"
