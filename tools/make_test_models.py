#!/usr/bin/env python3
"""Writes the small ONNX models the integration tests use, and their expected
outputs computed by ONNX Runtime (an oracle independent of libdstack).

tests/data/tiny_cnn.onnx        Conv-Relu-MaxPool-GlobalAveragePool-Flatten-Gemm-Softmax,
                                 input [N,3,8,8] with a symbolic batch N, output [N,5]
tests/data/tiny_cnn.input.bin   4 requests' inputs, float32, little-endian
tests/data/tiny_cnn.output.bin  ONNX Runtime's outputs for them

Run again only to change the models: the files are committed.
"""
import os
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import onnxruntime as ort

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
rng = np.random.default_rng(20261124)

w = (rng.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32)
b = (rng.standard_normal(4) * 0.1).astype(np.float32)
fc = (rng.standard_normal((5, 4)) * 0.8).astype(np.float32)
fcb = (rng.standard_normal(5) * 0.1).astype(np.float32)
nodes = [
    helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c"], ["r"]),
    helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("GlobalAveragePool", ["p"], ["g"]),
    helper.make_node("Flatten", ["g"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "fc", "fcb"], ["z"], transB=1),
    helper.make_node("Softmax", ["z"], ["probs"], axis=1),
]
graph = helper.make_graph(
    nodes, "tiny_cnn",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
    [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5])],
    [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
     numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(fcb, "fcb")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
path = os.path.join(here, "tiny_cnn.onnx")
onnx.save(model, path)

x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
x.tofile(os.path.join(here, "tiny_cnn.input.bin"))
y.astype(np.float32).tofile(os.path.join(here, "tiny_cnn.output.bin"))
print("wrote", path, "and", y.shape, "reference outputs")
