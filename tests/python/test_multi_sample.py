"""test_multi_sample.py - requests of several samples against ONNX Runtime.

Three small models with a symbolic batch dimension "N", built here with
onnx.helper (random weights, fixed seed):
  resnet_block     Conv+BatchNormalization+Relu, Conv+BatchNormalization,
                   Add (the residual), Relu
  mobilenet_block  1x1 Conv, Clip(0,6), depthwise 3x3 Conv (group = channels),
                   Clip(0,6), 1x1 Conv
  transpose_softmax  Transpose(0,2,3,1) then Softmax over axis 1
For each, registered through the public API (ctypes on lib/libdstack.so, cpu
backend, max_batch MAX_BATCH):
  (a) dstack_model_info says batchable, per-sample dims[0] == 1;
  (b) one request each of 1, 3 and MAX_BATCH samples (dstack_request.n_samples)
      matches ONNX Runtime run on the same N-sample tensor: max |ours - ort| /
      max |ort| < 1e-4 (normwise, as test_onnx_oracle.py);
  (c) the ONNX conformance runner (tests/onnx_conformance, or $CONFORMANCE)
      passes the model written as a node-test case directory whose data sets
      hold 1, 3 and MAX_BATCH samples (expected outputs from ONNX Runtime), and
      calls a Softmax over axis 0 (which mixes the samples) UNSUPPORTED.
One line per check starting with PASS or FAIL; exit status 1 on any FAIL.
Environment: LIBOUT (default lib) holds libdstack.so.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import dstack_ctypes as ds  # noqa: E402

REL_TOL = 1e-4
MAX_BATCH = 8
SAMPLES = (1, 3, MAX_BATCH)
failures = 0


def report(ok, what):
    global failures
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures += 1


def init(rng, name, shape, scale=0.3, positive=False):
    a = rng.standard_normal(shape).astype(np.float32) * scale
    if positive:
        a = np.abs(a) + 0.5
    return numpy_helper.from_array(a.astype(np.float32), name)


def model(name, nodes, inits, in_shape, out_shape):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"] + list(in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"] + list(out_shape))
    g = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="test_multi_sample")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def bn(rng, prefix, c, inp, out):
    inits = [init(rng, prefix + "_s", (c,), positive=True), init(rng, prefix + "_b", (c,)),
             init(rng, prefix + "_m", (c,)), init(rng, prefix + "_v", (c,), positive=True)]
    node = helper.make_node("BatchNormalization", [inp] + [t.name for t in inits], [out],
                            epsilon=1e-5)
    return node, inits


def resnet_block(rng):
    c = 8
    inits = [init(rng, "w1", (c, c, 3, 3)), init(rng, "w2", (c, c, 3, 3))]
    n1, i1 = bn(rng, "bn1", c, "c1", "b1")
    n2, i2 = bn(rng, "bn2", c, "c2", "b2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), n1,
             helper.make_node("Relu", ["b1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), n2,
             helper.make_node("Add", ["b2", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    return model("resnet_block", nodes, inits + i1 + i2, (c, 10, 10), (c, 10, 10))


def mobilenet_block(rng):
    c, e = 8, 24
    inits = [init(rng, "w_exp", (e, c, 1, 1)), init(rng, "b_exp", (e,)),
             init(rng, "w_dw", (e, 1, 3, 3)), init(rng, "b_dw", (e,)),
             init(rng, "w_proj", (c, e, 1, 1)),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w_exp", "b_exp"], ["e"]),
             helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]),
             helper.make_node("Conv", ["e6", "w_dw", "b_dw"], ["d"], group=e,
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
             helper.make_node("Conv", ["d6", "w_proj"], ["y"])]
    return model("mobilenet_block", nodes, inits, (c, 12, 12), (c, 6, 6))


def transpose_softmax(rng, axis=1):
    del rng
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Softmax", ["t"], ["y"], axis=axis)]
    return model("transpose_softmax" if axis == 1 else f"transpose_softmax_axis{axis}", nodes, [],
                 (4, 6, 5), (6, 5, 4))


def ort_run(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def norm_rel(ours, ref):
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref)))
    return float(diff.max()) / scale if scale > 0 else float(diff.max())


def inputs_for(m, rng, n):
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
    return rng.standard_normal([n] + dims).astype(np.float32) * 2


def check_api(lib, m, rng):
    name = m.graph.name
    ctx = ds.Context(lib, ds.BACKEND_CPU)
    try:
        h = ctx.register(ds.SOURCE_ONNX_BYTES, data=m.SerializeToString(), max_batch=MAX_BATCH)
        info = h.info
        per = h.shapes("in")[0]
        report(info.batchable == 1 and per[0] == 1 and info.max_batch == MAX_BATCH,
               f"{name}: model_info batchable={info.batchable}, per-sample input {per}, "
               f"max_batch {info.max_batch}")
        for n in SAMPLES:
            x = inputs_for(m, rng, n)
            want = ort_run(m, x)
            try:
                got = h.run([x], samples=n)[0]
            except ds.DstackError as e:
                report(False, f"{name}: one request of {n} samples: {e}")
                continue
            if got.shape != want.shape:
                report(False, f"{name}: {n} samples: shape {got.shape}, onnxruntime {want.shape}")
                continue
            err = norm_rel(got, want)
            report(err < REL_TOL, f"{name}: one request of {n} samples vs onnxruntime "
                   f"{ort.__version__}: max rel err {err:.3g} (< {REL_TOL:g}), shape {got.shape}")
        h.close()
    except ds.DstackError as e:
        report(False, f"{name}: through the public API: {e}")
    finally:
        ctx.close()


def write_case(root, m, rng):
    d = os.path.join(root, "test_" + m.graph.name)
    os.makedirs(d)
    onnx.save(m, os.path.join(d, "model.onnx"))
    for s, n in enumerate(SAMPLES):
        sd = os.path.join(d, f"test_data_set_{s}")
        os.makedirs(sd)
        x = inputs_for(m, rng, n)
        for fname, arr, tname in (("input_0.pb", x, "x"), ("output_0.pb", ort_run(m, x), "y")):
            with open(os.path.join(sd, fname), "wb") as f:
                f.write(numpy_helper.from_array(arr, tname).SerializeToString())
    return d


def runner_path():
    for r in (os.environ.get("CONFORMANCE"), os.path.join(ROOT, "tests", "onnx_conformance"),
              os.path.join(ROOT, "build", "tests", "onnx_conformance")):
        if r:
            r = r if os.path.isabs(r) else os.path.join(ROOT, r)
            if os.access(r, os.X_OK):
                return r
    return None


def check_runner(models, mixing, rng, workdir):
    runner = runner_path()
    if not runner:
        print("SKIP the conformance runner is not built (make tests/onnx_conformance)")
        return
    cases = [write_case(workdir, m, rng) for m in models]
    mix = write_case(workdir, mixing, rng)
    r = subprocess.run([runner, "--backend", "cpu"] + cases + [mix], capture_output=True,
                       text=True)
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines() if len(ln.split()) > 1}
    want_samples = "(samples: " + ",".join(str(n) for n in SAMPLES) + ")"
    for c in cases:
        ln = lines.get(c, "(no line)")
        report(ln.startswith("PASS ") and want_samples in ln,
               f"conformance runner, {os.path.basename(c)} as one request per data set "
               f"{want_samples}: {ln}")
    ln = lines.get(mix, "(no line)")
    report(ln.startswith("UNSUPPORTED ") and "not batchable" in ln,
           f"conformance runner, {os.path.basename(mix)} (mixes samples): {ln}")
    report(r.returncode == 0, f"conformance runner exit status {r.returncode} "
           f"({r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()})")


def main():
    libout = os.environ.get("LIBOUT", os.path.join(ROOT, "lib"))
    if not os.path.isabs(libout):
        libout = os.path.join(ROOT, libout)
    rng = np.random.default_rng(15)
    workdir = tempfile.mkdtemp(prefix="dstack_multi_")
    try:
        lib = ds.Library(libout)
        models = [resnet_block(rng), mobilenet_block(rng), transpose_softmax(rng)]
        for m in models:
            check_api(lib, m, rng)
        check_runner(models, transpose_softmax(rng, axis=0), rng, workdir)
    except Exception as e:  # a broken build or library is a failure, not a skip
        report(False, f"multi-sample setup: {e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'FAILED' if failures else 'OK'}: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
