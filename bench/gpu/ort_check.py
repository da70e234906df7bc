#!/usr/bin/env python3
"""Compare gpu_bench's cuda outputs with ONNX Runtime (CPU) on the same folded model.

usage: ort_check.py DIR MODEL BATCH
Reads DIR/MODEL.onnx, .in.bin, .out.bin (written by `gpu_bench dump`).
Metric as in gpu_bench: max|cuda-ort| / max|ort|, and L2 relative.
"""
import sys

import numpy as np
import onnxruntime as ort

d, name, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
sess = ort.InferenceSession(f"{d}/{name}.onnx", so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
shape = [batch] + [int(x) for x in inp.shape[1:]]
x = np.fromfile(f"{d}/{name}.in.bin", dtype=np.float32).reshape(shape)
ref = sess.run(None, {inp.name: x})[0].astype(np.float64)
got = np.fromfile(f"{d}/{name}.out.bin", dtype=np.float32).reshape(ref.shape).astype(np.float64)
diff = np.abs(got - ref)
rel = diff.max() / max(np.abs(ref).max(), 1e-30)
l2 = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)
ok = np.isfinite(got).all() and rel < 1e-4
print(f"ort,{name},{batch},{rel:.3e},{l2:.3e},{np.abs(ref).max():.4g},{'PASS' if ok else 'FAIL'}")
