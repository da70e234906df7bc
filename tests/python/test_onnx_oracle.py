"""test_onnx_oracle.py - whole models against an independent runtime.

For each zoo model (resnet18, mobilenet_v2, squeezenet1_1 at 224x224 unless
DSTACK_ORACLE_IMAGE_SIZE says otherwise):
  (a) write it as ONNX with ds_onnx_export (through the small C tool
      tests/python/dstack_export.c, built here against build/libdstack-internal.a) and
      check it with onnx.checker (full_check: types and shapes infer),
  (b) register the zoo model and the exported file through the public API
      (ctypes on lib/libdstack.so, cpu backend) and check the two give
      bit-identical outputs for the same input,
  (c) run the exported file in ONNX Runtime (CPU) and check our cpu backend
      against it: max |ours - ort| / max |ort| < 1e-4 (normwise relative: the
      logits cross zero, so element-wise relative error is meaningless there;
      the element-wise figure over elements with |ort| > 1e-3 max is printed
      too).
One line per check starting with PASS or FAIL; exit status 1 on any FAIL.
Environment: LIBOUT (default lib) holds libdstack.so; BUILD (default build)
holds libdstack-internal.a, which the export tool links.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import dstack_ctypes as ds  # noqa: E402

REL_TOL = 1e-4
MODELS = os.environ.get("DSTACK_ORACLE_MODELS", "resnet18,mobilenet_v2,squeezenet1_1").split(",")
failures = 0


def report(ok, what):
    global failures
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures += 1


def sanitized(libout):
    """Was the library built with ASan (make sanitize)?"""
    with open(os.path.join(libout, "libdstack.so"), "rb") as f:
        return b"libasan" in f.read()


def reexec_under_asan(libout):
    """An ASan-built libdstack.so can only be loaded into a process whose
    first library is the ASan runtime: restart python with it preloaded
    (leak checking off: the interpreter itself keeps memory at exit)."""
    if not sanitized(libout) or os.environ.get("DSTACK_ORACLE_ASAN_REEXEC"):
        return
    cc = os.environ.get("CC", "cc")
    rt = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True,
                        text=True).stdout.strip()
    env = dict(os.environ, DSTACK_ORACLE_ASAN_REEXEC="1", LD_PRELOAD=rt,
               ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def internal_archive():
    """The archive whose internal names (ds_*) stay global: BUILD (default
    build)/libdstack-internal.a; lib/libdstack.a defines only dstack_*."""
    build = os.environ.get("BUILD", "build")
    if not os.path.isabs(build):
        build = os.path.join(ROOT, build)
    return os.path.join(build, "libdstack-internal.a")


def build_export_tool(libout, workdir):
    exe = os.path.join(workdir, "dstack_export")
    cc = os.environ.get("CC", "cc")
    base = [cc, "-std=c11", "-O1", "-I" + os.path.join(ROOT, "include"),
            "-I" + os.path.join(ROOT, "src"), os.path.join(HERE, "dstack_export.c"),
            internal_archive(), "-o", exe]
    libs = ["-lprotobuf-c", "-lpthread", "-lm", "-ldl"]
    cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    cuda_libs = ["-L" + cuda + "/lib64", "-Wl,-rpath," + cuda + "/lib64", "-lcudnn", "-lcublas",
                 "-lcudart", "-lstdc++"]
    san = ["-fsanitize=address,undefined"] if sanitized(libout) else []
    last = None
    for extra in ([], cuda_libs):
        r = subprocess.run(base + san + libs + extra, capture_output=True, text=True)
        if r.returncode == 0:
            return exe
        last = r.stderr
    raise RuntimeError("cannot build dstack_export:\n" + (last or ""))


def check_struct_sizes(exe):
    out = subprocess.run([exe, "--sizes"], capture_output=True, text=True, check=True).stdout
    c_sizes = dict(line.split() for line in out.splitlines())
    bad = [f"{k}: C {c_sizes[k]} ctypes {ds.C.sizeof(t)}"
           for k, t in ds.STRUCT_SIZES.items() if int(c_sizes[k]) != ds.C.sizeof(t)]
    # offsets of the last fields: a field appended into padding keeps the size
    for key, off in c_sizes.items():
        if "." not in key:
            continue
        struct, field = key.split(".")
        f = getattr(ds.STRUCT_SIZES[struct], field, None)
        if f is None or f.offset != int(off):
            bad.append(f"{key}: C offset {off} ctypes {f.offset if f is not None else 'missing'}")
    report(not bad, "ctypes struct layouts match dstack.h" + (": " + "; ".join(bad) if bad else ""))
    return not bad


def errors(ours, ref):
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref)))
    norm_rel = float(diff.max()) / scale if scale > 0 else float(diff.max())
    big = np.abs(ref) > 1e-3 * scale
    elem_rel = float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0
    return norm_rel, elem_rel, float(diff.max())


def check_model(lib, exe, workdir, name, size, classes, seed):
    path = os.path.join(workdir, f"{name}_{size}.onnx")
    r = subprocess.run([exe, name, path, str(size), str(classes), str(seed)],
                       capture_output=True, text=True)
    report(r.returncode == 0, f"{name}@{size} exported with ds_onnx_export "
           f"({os.path.getsize(path) if r.returncode == 0 else 0} bytes) {r.stderr.strip()}")
    if r.returncode != 0:
        return
    try:
        onnx.checker.check_model(path, full_check=True)
        report(True, f"{name}@{size} export passes onnx.checker (full_check, onnx {onnx.__version__})")
    except Exception as e:  # noqa: BLE001 - any checker complaint is a failure
        report(False, f"{name}@{size} export rejected by onnx.checker: {e}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)

    ctx = ds.Context(lib, ds.BACKEND_CPU)
    try:
        zoo = ctx.register(ds.SOURCE_ZOO, path=name, seed=seed, image_size=size, classes=classes)
        y_zoo = zoo.run([x])[0]
        zoo.close()
        onnx_m = ctx.register(ds.SOURCE_ONNX_FILE, path=path)
        y_onnx = onnx_m.run([x])[0]
        onnx_m.close()
    except ds.DstackError as e:
        report(False, f"{name}@{size} through the public API: {e}")
        ctx.close()
        return
    ctx.close()
    same = y_zoo.shape == y_onnx.shape and np.array_equal(y_zoo, y_onnx)
    report(same, f"{name}@{size} re-imported ONNX gives outputs identical to the zoo graph "
           f"(max abs diff {float(np.max(np.abs(y_zoo - y_onnx))) if y_zoo.shape == y_onnx.shape else 'shape'})")

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if y_ort.shape != y_onnx.shape:
        report(False, f"{name}@{size} onnxruntime shape {y_ort.shape} vs ours {y_onnx.shape}")
        return
    norm_rel, elem_rel, max_abs = errors(y_onnx, y_ort)
    report(norm_rel < REL_TOL,
           f"{name}@{size} cpu backend vs onnxruntime {ort.__version__}: max rel err "
           f"{norm_rel:.3g} (< {REL_TOL:g}), element-wise {elem_rel:.3g}, max abs {max_abs:.3g}, "
           f"argmax {int(np.argmax(y_onnx))}/{int(np.argmax(y_ort))}")


def main():
    libout = os.environ.get("LIBOUT", os.path.join(ROOT, "lib"))
    if not os.path.isabs(libout):
        libout = os.path.join(ROOT, libout)
    reexec_under_asan(libout)
    size = int(os.environ.get("DSTACK_ORACLE_IMAGE_SIZE", "224"))
    workdir = tempfile.mkdtemp(prefix="dstack_oracle_")
    try:
        exe = build_export_tool(libout, workdir)
        lib = ds.Library(libout)
        if check_struct_sizes(exe):
            for i, name in enumerate(MODELS):
                check_model(lib, exe, workdir, name, size, 1000, 11 + i)
    except Exception as e:  # a broken build or library is a failure, not a skip
        report(False, f"oracle setup: {e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'FAILED' if failures else 'OK'}: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
