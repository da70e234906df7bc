#!/bin/sh
# make bench: the checks too slow for make check, with their results written
# under bench/results/ (the file names the machine).
#  1. every zoo model at 224x224 exported to ONNX and run by ONNX Runtime (CPU)
#     against libdstack's cpu backend (make check does only the small three);
#  2. torchvision models exported by PyTorch's own exporter, against PyTorch,
#     when torch is installed (not in CI: it drags 3 GB of CUDA wheels; the
#     GPU machine has it, see bench/gpu/run_api_checks.sh);
#  3. the GPU checks are separate: bench/gpu/run_gpu_checks.sh on a GPU machine,
#     and bench/gpu/record_profile.sh refreshes the simulator's profile there;
#  4-7. the simulator's calibration and speed, the policies compared, a knee
#     curve (see the numbered steps below).
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
BUILD=${BUILD:-build}
# run NAME COMMAND...: COMMAND's output, headed by the command and the
# machine, into bench/results/NAME
run() {
    name=$1; shift
    {
        echo "# command: $*"
        echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $host, $(nproc) cores, $(uname -m)"
        "$@"
    } 2>&1 | tee "bench/results/$name"
}
# 4. the simulated GPU against the H100 measurements (last line: the summary)
run sim-calibration.txt "$BUILD/bench/sim_calibration" bench/profiles/h100-sim.txt
# 5. the discrete-event driver's speed: 60 virtual s of four CNNs at 1000 req/s
run sim-speed.txt "$BUILD/bench/sim_speed"
# 6. the policies side by side on the simulated H100, every workload
run sched-compare-sim.txt "$BUILD/bench/sched_compare" --workload bench/workloads/two_models.txt \
    --workload bench/workloads/bursty.txt --workload bench/workloads/step.txt \
    --workload bench/workloads/mixed_slo.txt --out bench/results
# eight models: profiling eight models on two devices dominates; 3 s points
run sched-compare-eight-sim.txt "$BUILD/bench/sched_compare" --quick \
    --workload bench/workloads/eight_models.txt --out bench/results
# 7. resnet50's latency against SMs, the knee marked (swept and analytic)
run knee_curve-resnet50-sim.txt "$BUILD/bench/knee_curve" resnet50 --backend sim --batch 1,8,32
! grep -q '^FAIL' "$out"
