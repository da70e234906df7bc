#!/bin/bash
# record_profile.sh - record, on a lent GPU, the measurements the simulated
# GPU is fitted to (bench/profiles/<name>-sim.txt) for every zoo model in one
# call: batches 1, 8 and 32, each on 1..n green-context units from unit 0
# and on the whole device without partitions (gpu_bench sweep), pageable
# inputs. Build first, here:
#   sh bench/gpu/build_for_device.sh
# then on the device, from the repository root, with .carry carried:
#   bash bench/gpu/record_profile.sh [profile_in]
# Output in $OUT (or bench/out): sweep.csv (gpu_bench's rows) and
# profile-points.txt, `point` lines in the profile format
#   point <model> <batch> <first_unit> <units|none> <pageable 0/1> <ms>
# to replace the points of profile_in (default bench/profiles/h100-sim.txt),
# whose `const` and `pair` lines are kept: profile.txt is the merged file.
# Then, here: cp profile.txt bench/profiles/h100-sim.txt, mark the points to
# hold out with `heldout`, build/bench/sim_calibration --fit, and paste the
# constants into the profile and src/sim/kernels.c.
#
# Per-kernel records: not recorded. The repository has no CUPTI path yet;
# `nsys profile --stats=true` on one gpu_bench latency run per model is the
# nearest, by hand.
#
# UNTESTED ON A GPU: written and syntax-checked without one. Budget: models x
# 3 batches x (units + 1) runs of ITERS iterations after warm-up; with the
# defaults (ITERS=10) the zoo takes minutes, set MODELS to a subset when the
# device time is short.
#   MODELS   zoo models (default: every model src/graph/zoo.c names)
#   BATCHES  default "1 8 32"
#   ITERS    timed iterations per point (default 10; the median is recorded)
set -u
PROFILE_IN=${1:-bench/profiles/h100-sim.txt}
R=${OUT:-bench/out}
mkdir -p "$R"
SP=$(python3 -c 'import site;print(site.getsitepackages()[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/.carry/lib:$SP/nvidia/cu13/lib:$SP/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
B=${GPU_BENCH:-.carry/bin/gpu_bench}
MODELS=${MODELS:-$(grep -o 'X("[a-z0-9_]*", "[a-z0-9_]*"' src/graph/zoo.c | cut -d'"' -f4 | sort -u | tr '\n' ' ')}
BATCHES=${BATCHES:-1 8 32}
ITERS=${ITERS:-10}
[ -x "$B" ] || { echo "no $B: run sh bench/gpu/build_for_device.sh here first" >&2; exit 1; }

CSV="$R/sweep.csv"
POINTS="$R/profile-points.txt"
: >"$CSV"
{
  echo "# recorded $(date -u '+%Y-%m-%d %H:%M:%S UTC') by bench/gpu/record_profile.sh on"
  echo "# $(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null)"
  echo "# gpu_bench sweep, pageable inputs, median of $ITERS runs"
  echo "# point <model> <batch> <first_unit> <units|none> <pageable 0/1> <ms>"
} >"$POINTS"
fails=0
for m in $MODELS; do
  for b in $BATCHES; do
    echo "== $m b$b ($(date -u +%H:%M:%S))"
    # a model that does not fit or fails stays out of the profile, said so
    if ! $B sweep "$m" "$b" "$ITERS" >"$R/one.csv" 2>"$R/one.err"; then
      echo "# $m b$b failed: $(tail -1 "$R/one.err")" | tee -a "$POINTS"
      fails=$((fails + 1))
      continue
    fi
    grep '^sweep,' "$R/one.csv" | grep -v '^sweep,model,' | tee -a "$CSV" |
      awk -F, '{ printf "point %s %s 0 %s 1 %s\n", $2, $3, $4, $6 }' >>"$POINTS"
  done
done
rm -f "$R/one.csv" "$R/one.err"

# the merged profile: the old file without its points, the new points before
# the old `pair` lines (sim_calibration reads the lines in any order)
grep -v '^point ' "$PROFILE_IN" >"$R/profile.txt.tmp"
{ cat "$POINTS"; cat "$R/profile.txt.tmp"; } >"$R/profile.txt"
rm -f "$R/profile.txt.tmp"
echo "points: $(grep -c '^point ' "$POINTS")  failed model/batch pairs: $fails"
