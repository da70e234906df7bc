#!/bin/bash
# run_gpu_checks.sh - every GPU check of the cuda backend in one call on the
# GPU machine. Build first, here: sh bench/gpu/build_for_device.sh; then on
# the device, from the repository root, with .carry carried:
#   bash bench/gpu/run_gpu_checks.sh [phases]
# phases (default all): env,unit,latency,torch,graphs,ort,sweep,concurrent,conformance,correct
# Results: $OUT (or bench/out) /gpu_checks.log and CSV files.
set -u
PHASES=${1:-env,unit,latency,torch,graphs,ort,sweep,concurrent,conformance,correct}
R=${OUT:-bench/out}
mkdir -p "$R"
SP=$(python3 -c 'import site;print(site.getsitepackages()[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/.carry/lib:$SP/nvidia/cu13/lib:$SP/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
B=.carry/bin/gpu_bench
has() { [[ ",$PHASES," == *",$1,"* ]]; }
log() { echo "== $* ($(date -u +%H:%M:%S))"; }
{
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')  host: $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
if has env; then
  log env; $B info
fi
if has unit; then
  log unit
  for t in .carry/bin/test_gpu_partition .carry/bin/test_cuda_plan; do [ -x $t ] && $t 2>&1 | tail -3; done
fi
if has ort; then
  log "ort (cuda vs ONNX Runtime on the exported folded graph)"
  mkdir -p /tmp/ort
  for m in ${ORT_MODELS:-resnet50 mobilenet_v2 squeezenet1_1 googlenet densenet121 alexnet vgg16}; do
    $B dump $m ${ORT_BATCH:-4} /tmp/ort >/dev/null && python3 bench/gpu/ort_check.py /tmp/ort $m ${ORT_BATCH:-4}
  done | tee "$R/ort.csv"
fi
if has latency; then
  log "latency (dstack cuda, whole GPU, no partitioning)"
  echo "latency,model,batch,partitioning,precision,sms,median_ms,p10_ms,p90_ms,extra" | tee "$R/latency.csv"
  for m in resnet50 mobilenet_v2; do for b in 1 32; do $B latency $m $b 100 none; done; done | tee -a "$R/latency.csv"
  for b in 1 32; do $B latency resnet50 $b 100 none tf32; done | tee -a "$R/latency.csv"
fi
if has torch; then
  log "torch reference"
  python3 bench/gpu/torch_ref.py 100 2>&1 | grep -v Warning | tee -a "$R/latency.csv"
fi
if has graphs; then
  log "without CUDA graphs (DSTACK_CUDA_GRAPHS=0): latency, sweep"
  for m in resnet50 mobilenet_v2; do for b in 1 32; do
    DSTACK_CUDA_GRAPHS=0 $B latency $m $b 100 none | sed 's/^latency,/latency_nographs,/'; done; done | tee -a "$R/latency.csv"
  DSTACK_CUDA_GRAPHS=0 $B sweep resnet50 16 20 | sed 's/^sweep,/sweep_nographs,/' | tee -a "$R/sweep.csv"
fi
if has sweep; then
  log "sweep resnet50 b16 on green contexts"
  $B sweep resnet50 16 30 | tee -a "$R/sweep.csv"
fi
if has concurrent; then
  log "concurrent resnet50 b16 (7 units) + mobilenet_v2 b16 (8 units)"
  $B concurrent resnet50 16 mobilenet_v2 16 7 40 "$R/timeline.csv" | tee "$R/concurrent.csv"
fi
if has conformance; then
  log conformance
  if [ -x .carry/bin/onnx_conformance ]; then
    .carry/bin/onnx_conformance --backend cuda .carry/onnx-node/* > "$R/conformance_cuda.txt" 2>&1
    DSTACK_CUDA_GRAPHS=0 .carry/bin/onnx_conformance --backend cuda .carry/onnx-node/* > /tmp/conformance_cuda_nographs.txt 2>&1
    echo "cuda without graphs: $(tail -1 /tmp/conformance_cuda_nographs.txt)"
    .carry/bin/onnx_conformance --backend cpu .carry/onnx-node/* > /tmp/conformance_cpu.txt 2>&1
    grep -v '^PASS' "$R/conformance_cuda.txt" | cut -c1-200 | tail -40; echo "cpu: $(tail -1 /tmp/conformance_cpu.txt)"; echo "cuda: $(tail -1 $R/conformance_cuda.txt)"
  else echo "no conformance runner built"; fi
fi
if has correct; then
  log "correct (cuda vs cpu reference, 16 cores)"
  $B correct all 1,8,32 | tee -a "$R/correct.csv"
  for m in resnet50 mobilenet_v2; do $B correct $m 8 tf32 | grep -v model; done | tee -a "$R/correct.csv"
  $B correct resnet18 1 fp16 2>&1 | grep -i fail | tee -a "$R/correct.csv"
fi
log done
} 2>&1 | tee "$R/gpu_checks.log"
