#!/bin/sh
# The Triton backend's tests: the config unit tests and the backend against
# a stand-in for the server (cmocka), then a real
# tritonserver from PyPI's nvidia-pytriton wheel serving ONNX models through
# $BUILD/triton/backends/dstack (tests/triton/test_triton.py).
#
# The wheel and tritonclient[http] go into a virtual environment under
# $BUILD/triton/venv, made once and reused. nvidia-pytriton is installed
# without its dependencies: only its tritonserver binary and libraries are
# used, and its pin of numpy<2 would otherwise replace the numpy that
# onnxruntime was built against.
#
# Ends with "N passed, N failed". Exit status: 0 when all passed; 1 on a
# failure; when the wheel cannot be installed (no network, no venv), the
# server tests are skipped with the reason, which fails the run unless
# TRITON_ALLOW_SKIP=1 (set by make check, where a skip is not a failure of
# the rest).
set -u
BUILD=${BUILD:-build}
LIBOUT=${LIBOUT:-lib}
DSTACK_TRITON_BACKEND=${DSTACK_TRITON_BACKEND:-cpu}
VENV=$BUILD/triton/venv
passed=0; failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for t in test_triton_config test_triton_backend; do
    echo "== $BUILD/triton/$t"
    "$BUILD/triton/$t" >"$log" 2>&1; rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log"); p=${p:-0}
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log"); f=${f:-0}
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p)); failed=$((failed + f))
done

# Where the wheel put tritonserver (without importing pytriton, whose
# package imports need the dependencies left out on purpose).
FIND_SERVER='import importlib.util, os, tritonclient.http
spec = importlib.util.find_spec("pytriton")
print(os.path.join(spec.submodule_search_locations[0], "tritonserver", "bin", "tritonserver"))'
skip=""
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "$FIND_SERVER" >/dev/null 2>&1; then
    echo "== installing nvidia-pytriton (tritonserver) and tritonclient[http] into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv --system-site-packages "$VENV" >"$log" 2>&1; then
        skip="python3 -m venv failed ($(tail -1 "$log")); install python3-venv"
    elif ! { "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps nvidia-pytriton &&
             "$VENV/bin/pip" install -q --disable-pip-version-check 'tritonclient[http]'; } >"$log" 2>&1; then
        skip="pip could not install nvidia-pytriton / tritonclient[http]: $(tail -1 "$log")"
    fi
fi
if [ -z "$skip" ]; then
    TS=$("$VENV/bin/python" -c "$FIND_SERVER" 2>/dev/null)
    [ -x "$TS" ] || skip="the nvidia-pytriton wheel has no tritonserver binary at $TS"
fi
if [ -z "$skip" ] && ! "$VENV/bin/python" -c 'import onnx, onnxruntime, numpy' 2>/dev/null; then
    skip="python3 lacks onnx, onnxruntime or numpy (run tools/setup.sh)"
fi

if [ -n "$skip" ]; then
    echo "== triton server tests SKIPPED: $skip"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "${TRITON_ALLOW_SKIP:-0}" = 1 ]
    exit $?
fi

echo "== tests/triton/test_triton.py (tritonserver $("$VENV/bin/pip" show nvidia-pytriton 2>/dev/null | sed -n 's/^Version: //p' | sed 's/^/from nvidia-pytriton /'), backend $DSTACK_TRITON_BACKEND)"
timeout 600 "$VENV/bin/python" tests/triton/test_triton.py --tritonserver "$TS" \
    --backends "$BUILD/triton/backends" --libout "$LIBOUT" --backend "$DSTACK_TRITON_BACKEND" \
    --export-tool "$BUILD/triton/dstack_export" \
    >"$log" 2>&1; rc=$?
grep -v '^[0-9]* passed, [0-9]* failed$' "$log"
p=$(grep -c '^PASS' "$log"); f=$(grep -c '^FAIL' "$log")
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
passed=$((passed + p)); failed=$((failed + f))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
