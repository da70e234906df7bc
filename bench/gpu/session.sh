#!/bin/bash
# session.sh - one lent-GPU session's checks and benchmarks, ordered by
# importance, each phase under its own time limit so that a slow phase
# cannot eat the next ones. The limits add up to more than one call may
# run (600 s): choose each call's phases by their usual times (on the H200:
# env 5 s, unit 60, demo 5, knee4 35, sched 80-230, peer 80-110, regtime 10,
# correct 5, kneerest 50) and give the call a timeout_s that leaves room.
#
# Here (no GPU):   sh bench/gpu/build_for_device.sh
# On the device:   bash bench/gpu/session.sh [phase,phase,...]    (carry .carry)
#
# Phases (default: the first call's list, in this order):
#   env      nvidia-smi, library paths, green-context split (gpu_bench info)
#   unit     test_gpu_partition (every unit is the whole device, 132 SMs;
#            fewer units a green context), test_cuda_plan, api tests
#   demo     serve_demo --backend cuda (the libdstack-cuda.so split, smoke)
#   knee4    knee_curve --backend cuda, the four-CNN models at b 1,4,16,32,
#            with the CUPTI trace knee (resnet50 b16 again without graphs)
#   sched    sched_compare --backend cuda, four-CNN mix, 4 policies
#   peer     torch_peer.py, the PyTorch one-stream-per-model peer
#   regtime  register_time resnet50 --backend cuda (first, cached)
#   correct  cuda vs cpu reference after the module split (2 models)
#   kneerest knee_curve on the other zoo models
# Results: $OUT/session.log and $OUT/results.tgz (every CSV and log),
# refreshed after each phase so a call cut at its limit still returns them.
set -u
PHASES=${1:-env,unit,demo,knee4,sched,peer,regtime}
R=/tmp/r
O=${OUT:-bench/out}
rm -rf "$R" # a warm machine keeps /tmp: no earlier call's files in this call's results
mkdir -p "$R" "$O"
SP=$(python3 -c 'import site;print(site.getsitepackages()[0])' 2>/dev/null)
LP=$PWD/.carry/lib
for d in "$SP"/nvidia/*/lib "$SP"/nvidia/cu13/lib; do [ -d "$d" ] && LP=$LP:$d; done
export LD_LIBRARY_PATH=$LP:${LD_LIBRARY_PATH:-}
export DSTACK_TEST_DATA=$PWD/tests/data
BIN=.carry/bin
T0=$(date +%s)
has() { [[ ",$PHASES," == *",$1,"* ]]; }
pack() { tar -C "$R" -czf "$O/results.tgz" . 2>/dev/null; }
phase() { echo; echo "=== $1 (t+$(( $(date +%s) - T0 )) s, $(date -u +%H:%M:%S))"; }
# run LIMIT_S NAME cmd...: the command under a time limit, its output to
# $R/NAME.txt and to the log; says when the limit cut it.
run() {
  local lim=$1 name=$2; shift 2
  timeout -k 5 "$lim" "$@" > "$R/$name.txt" 2>&1
  local rc=$?
  cat "$R/$name.txt"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo "!! $name cut at ${lim} s"
  [ $rc -ne 0 ] && echo "!! $name exit $rc"
  pack
  return 0
}
{
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')  phases: $PHASES"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ls "$SP"/nvidia/ 2>/dev/null | tr '\n' ' '; echo
if has env; then
  phase env
  run 60 env $BIN/gpu_bench info
  ls "$SP"/nvidia/*/lib/libcupti* 2>/dev/null
fi
if has unit; then
  phase unit
  run 90 test_gpu_partition $BIN/test_gpu_partition
  run 120 test_cuda_plan $BIN/test_cuda_plan
  for t in api_cuda_module api_basic api_concurrency api_onnx_malformed; do
    run 60 $t $BIN/$t
  done
fi
if has demo; then
  phase demo
  run 60 serve_demo_cuda $BIN/serve_demo --backend cuda --requests 600
fi
if has knee4; then
  phase knee4
  for m in resnet50 mobilenet_v2 vgg19 alexnet; do
    run 60 knee_$m $BIN/knee_curve $m --backend cuda --batch 1,4,16,32 --reps 3 --out $R
  done
  mkdir -p $R/nographs
  run 40 knee_resnet50_nographs env DSTACK_CUDA_GRAPHS=0 $BIN/knee_curve resnet50 --backend cuda --batch 16 --reps 3 \
      --out $R/nographs
fi
if has sched; then
  phase sched
  run 330 sched_cuda $BIN/sched_compare --backend cuda --start ${SCHED_START:-200} --seconds ${SCHED_SECONDS:-1.5} \
      --budget ${SCHED_BUDGET:-40}
fi
if has peer; then
  phase peer
  run 200 torch_peer python3 -u bench/gpu/torch_peer.py --start ${SCHED_START:-200} --seconds ${SCHED_SECONDS:-1.5} \
      --budget ${SCHED_BUDGET:-40} --csv $R/torch_peer.csv
fi
if has regtime; then
  phase regtime
  run 120 register_time_cuda $BIN/register_time resnet50 --backend cuda --reps 3
fi
if has correct; then
  phase correct
  for m in resnet50 mobilenet_v2; do run 90 correct_$m $BIN/gpu_bench correct $m 1,8; done
fi
if has kneerest; then
  phase kneerest
  for m in ${KNEE_REST:-resnet18 resnet101 googlenet densenet121 squeezenet1_1 vgg16}; do
    run 60 knee_$m $BIN/knee_curve $m --backend cuda --batch 1,4,16,32 --reps 3 --out $R
  done
fi
phase done
} 2>&1 | tee "$O/session.log"
cp "$O/session.log" "$R/" 2>/dev/null
pack
