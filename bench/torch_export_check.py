#!/usr/bin/env python3
"""torch_export_check.py - PyTorch as the oracle for models its own exporter wrote.

For torchvision resnet18, mobilenet_v2, squeezenet1_1 and resnet50 (random
weights from a fixed seed, eval mode, 224x224):
  1. export with torch.onnx.export (TorchScript exporter, opset 13, dynamic
     batch axis "N"),
  2. run the same input through PyTorch and through libdstack (public API via
     tests/python/dstack_ctypes.py, ONNX_FILE source, the backend given),
  3. compare: max |ours - torch| / max |torch| < 1e-4 on cpu (1e-3 on cuda,
     where cuDNN picks its own convolution algorithms), and also against
     onnxruntime when it is installed.
One line per check starting with PASS or FAIL; exit 1 on any FAIL.

torch is NOT installed on the development machine: this script is meant to be
run later on the GPU machine (pip install torch torchvision there):

    make lib && LIBOUT=lib python3 bench/torch_export_check.py --backend cpu
    LIBOUT=lib python3 bench/torch_export_check.py --backend cuda

Without torch it says so and exits 0 (nothing was checked).
"""
import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

MODELS = ["resnet18", "mobilenet_v2", "squeezenet1_1", "resnet50"]


def rel_err(ours, ref):
    ref = ref.astype(np.float64)
    scale = float(np.max(np.abs(ref)))
    d = float(np.max(np.abs(ours.astype(np.float64) - ref)))
    return d / scale if scale > 0 else d


def export(torch, torchvision, name, path, size, seed):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    kwargs = dict(opset_version=13, input_names=["input"], output_names=["output"],
                  dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                  do_constant_folding=True)
    with torch.no_grad():
        y = model(x).numpy()
        try:
            torch.onnx.export(model, (x,), path, dynamo=False, **kwargs)
        except TypeError:  # torch without the dynamo switch
            torch.onnx.export(model, (x,), path, **kwargs)
    return x.numpy(), y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    try:
        import torch
        import torchvision
    except ImportError as e:
        print(f"torch_export_check: needs torch and torchvision ({e}); they are not installed "
              "here. Run this on the GPU machine after `pip install torch torchvision`. "
              "Nothing was checked.")
        return 0
    import dstack_ctypes as ds
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None

    libout = os.environ.get("LIBOUT", os.path.join(ROOT, "lib"))
    if not os.path.isabs(libout):
        libout = os.path.join(ROOT, libout)
    lib = ds.Library(libout)
    backend = ds.BACKEND_CUDA if args.backend == "cuda" else ds.BACKEND_CPU
    tol = 1e-3 if args.backend == "cuda" else 1e-4
    failures = 0

    def report(ok, what):
        nonlocal failures
        print(("PASS " if ok else "FAIL ") + what, flush=True)
        failures += 0 if ok else 1

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"backend {args.backend}, image {args.size}")
    ctx = ds.Context(lib, backend)
    with tempfile.TemporaryDirectory(prefix="dstack_torch_") as tmp:
        for i, name in enumerate(args.models.split(",")):
            path = os.path.join(tmp, name + ".onnx")
            try:
                x, y_torch = export(torch, torchvision, name, path, args.size, 100 + i)
            except Exception as e:  # noqa: BLE001 - report and go on
                report(False, f"{name}: torch.onnx.export failed: {e}")
                continue
            try:
                m = ctx.register(ds.SOURCE_ONNX_FILE, path=path)
                y = m.run([x])[0]
                m.close()
            except ds.DstackError as e:
                report(False, f"{name}: libdstack: {e}")
                continue
            if y.shape != y_torch.shape:
                report(False, f"{name}: output shape {y.shape} vs torch {y_torch.shape}")
                continue
            e = rel_err(y, y_torch)
            report(e < tol, f"{name}@{args.size} {args.backend} vs PyTorch: max rel err {e:.3g} "
                   f"(< {tol:g}), argmax {int(np.argmax(y))}/{int(np.argmax(y_torch))}")
            if ort is not None:
                sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                y_ort = sess.run(None, {sess.get_inputs()[0].name: x})[0]
                e = rel_err(y, y_ort)
                report(e < tol, f"{name}@{args.size} {args.backend} vs onnxruntime: max rel err "
                       f"{e:.3g} (< {tol:g})")
    ctx.close()
    print(f"{'FAILED' if failures else 'OK'}: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
