#!/bin/sh
# Runs every test binary given, then the ONNX conformance runner and the
# Python oracle tests when their inputs are there; prints one summary line.
# Exit status: non-zero if anything failed or if no test ran at all.
set -u
passed=0; failed=0; suites_failed=""
log=$(mktemp)
for t in "$@"; do
    echo "== $t"
    "$t" >"$log" 2>&1; rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p)); failed=$((failed + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
    [ $rc -ne 0 ] && suites_failed="$suites_failed $t"
done
if [ -x "${CONFORMANCE:-}" ] && [ -d /usr/share/libonnx-testdata/data/node ]; then
    echo "== $CONFORMANCE (ONNX node conformance, cpu backend)"
    sh tools/conformance_cases.sh | xargs "$CONFORMANCE" --backend cpu >"$log" 2>&1; rc=$?
    grep -v '^PASS' "$log"
    echo "(PASS lines omitted: $(grep -c '^PASS' "$log"))"
    p=$(grep -c '^PASS' "$log"); f=$(grep -c '^FAIL' "$log")
    passed=$((passed + p)); failed=$((failed + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
    [ $rc -ne 0 ] && suites_failed="$suites_failed $CONFORMANCE"
fi
if [ -n "${SANITIZED:-}" ]; then
    echo "== tests/python skipped: a sanitized library cannot be loaded into python3"
elif [ -d tests/python ] && python3 -c 'import onnx, onnxruntime, numpy' 2>/dev/null; then
    for py in tests/python/test_*.py; do
        [ -f "$py" ] || continue
        echo "== $py"
        LIBOUT=${LIBOUT:-lib} python3 "$py" >"$log" 2>&1; rc=$?
        cat "$log"
        p=$(grep -c '^PASS' "$log"); f=$(grep -c '^FAIL' "$log")
        passed=$((passed + p)); failed=$((failed + f))
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
        [ $rc -ne 0 ] && suites_failed="$suites_failed $py"
    done
elif [ -d tests/python ]; then
    echo "== tests/python skipped: python3 with onnx, onnxruntime and numpy is missing (run tools/setup.sh)"
    failed=$((failed + 1))
fi
rm -f "$log"
[ -n "$suites_failed" ] && echo "failing:$suites_failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
