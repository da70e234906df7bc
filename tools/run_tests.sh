#!/bin/sh
# Runs every test binary given, then the ONNX conformance runner and the
# Python oracle tests when their inputs are there; prints one summary line.
# Exit status: non-zero if anything failed or if no test ran at all.
set -u
passed=0; failed=0; suites_failed=""
log=$(mktemp)
# Contexts made with default options keep a profile cache under
# $XDG_CACHE_HOME/dstack: give the tests a fresh one, not the user's.
XDG_CACHE_HOME=$(mktemp -d); export XDG_CACHE_HOME
# tally SUITE RC PASSED FAILED: add a suite's counts; a suite that exits
# non-zero without reporting a failure (a crash) counts as one failure.
tally() {
    passed=$((passed + $3)); failed=$((failed + $4))
    if [ "$2" -ne 0 ] && [ "$4" -eq 0 ]; then failed=$((failed + 1)); fi
    if [ "$2" -ne 0 ]; then suites_failed="$suites_failed $1"; fi
}
# tally_rc SUITE RC: a suite that reports only its exit status, one check.
tally_rc() { tally "$1" "$2" $(($2 == 0)) $(($2 != 0)); }
# The policy benchmark (bench/sched_compare --quick, below) checks the
# ideal bound on every workload of bench/workloads; the eight-model mix
# takes a few minutes, so it runs in the background beside the unit tests,
# niced so that the tests which time themselves keep their core. An
# interrupted run stops it too (a background job ignores SIGINT in sh).
sc="${BUILD:-build}/bench/sched_compare"
sc8_pid=""; sc8_dir=""
if [ -x "$sc" ] && [ -z "${SANITIZED:-}" ]; then
    sc8_dir=$(mktemp -d)
    trap 'kill "$sc8_pid" 2>/dev/null; rm -rf "$sc8_dir" "$log"' EXIT
    trap 'exit 130' INT TERM
    nice -n 10 "$sc" --quick --workload bench/workloads/eight_models.txt --out "$sc8_dir" \
        >"$sc8_dir/log" 2>&1 &
    sc8_pid=$!
fi
for t in "$@"; do
    echo "== $t"
    "$t" >"$log" 2>&1; rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    tally "$t" $rc "$p" "$f"
done
if [ -x "${CONFORMANCE:-}" ] && [ -d /usr/share/libonnx-testdata/data/node ]; then
    echo "== $CONFORMANCE (ONNX node conformance, cpu backend)"
    sh tools/conformance_cases.sh | xargs "$CONFORMANCE" --backend cpu >"$log" 2>&1; rc=$?
    grep -v '^PASS' "$log"
    echo "(PASS lines omitted: $(grep -c '^PASS' "$log"))"
    tally "$CONFORMANCE" $rc "$(grep -c '^PASS' "$log")" "$(grep -c '^FAIL' "$log")"
fi
# Fuzz smoke: replay the corpora, then fuzz each harness briefly (ASan +
# UBSan, per-input limits). Needs clang with libFuzzer; make sanitize skips
# it since the fuzz build is sanitized already.
fuzz_ok() {
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
        > "$log.c" && ${FUZZ_CC:-clang} -fsanitize=fuzzer -o "$log.bin" "$log.c" 2>/dev/null
    r=$?; rm -f "$log.c" "$log.bin"; return $r
}
# The policies side by side on the simulated H100 (bench/sched_compare
# --quick: every workload of bench/workloads, goodput by bisection). Two
# suites of their own (the eight-model mix started above): each fails when
# a policy beats the ideal bound or the tool breaks; their figures go to
# bench/results/ only through make bench.
if [ -n "$sc8_pid" ]; then
    # the four-CNN mix always runs first; then every other workload file
    set --
    for w in bench/workloads/*.txt; do
        case "$w" in */four_cnn.txt | */eight_models.txt) ;; *) set -- "$@" --workload "$w" ;; esac
    done
    echo "== $sc --quick $*"
    "$sc" --quick "$@" --out "${TMPDIR:-/tmp}" >"$log" 2>&1; rc=$?
    cat "$log"
    tally_rc sched_compare $rc
    echo "== $sc --quick --workload bench/workloads/eight_models.txt"
    wait "$sc8_pid"; rc=$?
    sc8_pid=""
    cat "$sc8_dir/log"
    tally_rc sched_compare-eight $rc
else
    echo "== sched_compare skipped: $([ -n "${SANITIZED:-}" ] && echo 'a sanitized build' || echo "no $sc")"
fi
# make install, then a program built against it with pkg-config, shared
# and static (the README's lines).
if [ -z "${SANITIZED:-}" ]; then
    echo "== tests/install/run.sh (make install, pkg-config, shared and static)"
    sh tests/install/run.sh >"$log" 2>&1; rc=$?
    cat "$log"
    tally tests/install $rc "$(grep -c '^PASS' "$log")" "$(grep -c '^FAIL' "$log")"
fi
if [ -n "${SANITIZED:-}" ]; then
    echo "== fuzz smoke skipped: it runs under make check (its build is sanitized already)"
elif [ -n "${DSTACK_SKIP_FUZZ:-}" ]; then
    echo "== fuzz smoke skipped: DSTACK_SKIP_FUZZ is set"
elif ! fuzz_ok; then
    echo "== fuzz smoke skipped: ${FUZZ_CC:-clang} with libFuzzer is missing (apt-get install clang)"
else
    echo "== fuzz smoke (make fuzz-smoke: corpus replay + ${FUZZ_SMOKE_TIME:-15} s per harness)"
    ${MAKE:-make} --no-print-directory fuzz-smoke FUZZ_SMOKE_TIME=${FUZZ_SMOKE_TIME:-15} >"$log" 2>&1; rc=$?
    grep -E '^(stat::number_of_executed_units|Done|INFO: Running with entropic)|ERROR|SUMMARY' "$log" | grep -v '^INFO' 
    [ $rc -ne 0 ] && tail -40 "$log"
    tally "fuzz-smoke" $rc $((rc == 0)) 0
fi
if [ -n "${SANITIZED:-}" ]; then
    echo "== tests/python skipped: a sanitized library cannot be loaded into python3"
elif [ -d tests/python ] && python3 -c 'import onnx, onnxruntime, numpy' 2>/dev/null; then
    for py in tests/python/test_*.py; do
        [ -f "$py" ] || continue
        echo "== $py"
        LIBOUT=${LIBOUT:-lib} python3 "$py" >"$log" 2>&1; rc=$?
        cat "$log"
        tally "$py" $rc "$(grep -c '^PASS' "$log")" "$(grep -c '^FAIL' "$log")"
    done
elif [ -d tests/python ]; then
    echo "== tests/python skipped: python3 with onnx, onnxruntime and numpy is missing (run tools/setup.sh)"
    failed=$((failed + 1))
fi
tb=${BUILD:-build}/triton
if [ ! -x "$tb/test_triton_config" ]; then
    echo "== tests/triton skipped: the Triton backend was not built (it needs cJSON: libcjson-dev, which tools/setup.sh installs)"
elif [ -n "${SANITIZED:-}" ]; then
    echo "== tests/triton: the server tests are skipped (a sanitized libdstack cannot be loaded into tritonserver); the unit tests run"
    for t in "$tb/test_triton_config" "$tb/test_triton_backend"; do
        echo "== $t"
        "$t" >"$log" 2>&1; rc=$?
        cat "$log"
        tally "$t" $rc \
            "$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | awk '{s+=$1} END {print s+0}')" \
            "$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')"
    done
else
    echo "== tests/triton/run.sh (the Triton backend under tritonserver: make triton-check)"
    BUILD=${BUILD:-build} LIBOUT=${LIBOUT:-lib} TRITON_ALLOW_SKIP=1 sh tests/triton/run.sh >"$log" 2>&1; rc=$?
    grep -v '^[0-9]* passed, [0-9]* failed$' "$log"
    last=$(grep '^[0-9]* passed, [0-9]* failed$' "$log" | tail -1)
    echo "(tests/triton: ${last:-no summary})"
    tally tests/triton/run.sh $rc "$(echo "$last" | awk '{print $1+0}')" "$(echo "$last" | awk '{print $3+0}')"
fi
rm -f "$log"
rm -rf "$XDG_CACHE_HOME"
[ -n "$suites_failed" ] && echo "failing:$suites_failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
