#!/bin/sh
# make bench: the checks too slow for make check, with their results written
# under bench/results/ (the file names the machine).
#  1. every zoo model at 224x224 exported to ONNX and run by ONNX Runtime (CPU)
#     against libdstack's cpu backend (make check does only the small three);
#  2. torchvision models exported by PyTorch's own exporter, against PyTorch,
#     when torch is installed (not in CI: it drags 3 GB of CUDA wheels; the
#     GPU machine has it, see bench/gpu/run_api_checks.sh);
#  3. the GPU checks are separate: bench/gpu/run_gpu_checks.sh on a GPU machine.
set -u
cd "$(dirname "$0")/.."
LIBOUT=${LIBOUT:-lib}
host=$(hostname -s 2>/dev/null || echo host)
out=bench/results/cpu-oracles-$host.txt
models=${DSTACK_ORACLE_MODELS:-resnet18,resnet34,resnet50,resnet101,mobilenet_v2,squeezenet1_0,squeezenet1_1,alexnet,vgg16,vgg19,googlenet,densenet121}
{
    echo "# libdstack cpu backend vs ONNX Runtime and PyTorch"
    echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $host, $(nproc) cores, $(uname -m)"
    echo "# command: make bench   (DSTACK_ORACLE_MODELS=$models)"
    start=$(date +%s)
    LIBOUT=$LIBOUT DSTACK_ORACLE_MODELS=$models python3 tests/python/test_onnx_oracle.py
    echo "# onnxruntime oracle: $(( $(date +%s) - start )) s"
    if python3 -c 'import torch, torchvision' 2>/dev/null; then
        LIBOUT=$LIBOUT python3 bench/torch_export_check.py --backend cpu
    else
        echo "# PyTorch oracle skipped: torch/torchvision not installed here (run on the GPU machine)"
    fi
} 2>&1 | tee "$out"
echo "results: $out"
# the simulated GPU against the H100 measurements (last line: the summary)
BUILD=${BUILD:-build}
"$BUILD/bench/sim_calibration" | tee bench/results/sim-calibration.txt
! grep -q '^FAIL' "$out"
