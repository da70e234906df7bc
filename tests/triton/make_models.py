#!/usr/bin/env python3
"""Writes the small ONNX models of the Triton backend test.

    make_models.py OUT_DIR [EXPORT_TOOL]
        writes OUT_DIR/tiny_cnn.onnx and OUT_DIR/mlp2.onnx (onnx.helper), and
        with EXPORT_TOOL (dstack_export, built by make triton) also
        OUT_DIR/squeezenet.onnx, the library's zoo squeezenet1_1 at 32x32
        pixels with 10 classes (3 MB, a few ms per sample on the cpu backend)

tiny_cnn  Conv-Relu-MaxPool-GlobalAveragePool-Flatten-Gemm-Softmax, input
          "input" [N,3,8,8], output "probs" [N,5] (a copy of tests/data's)
mlp2      two inputs and two outputs, so that input order, requested-output
          subsets and several output tensors are exercised:
          a [N,16], b [N,16] -> hidden = Relu(Gemm(a + b)) [N,32],
          logits = Gemm(hidden) [N,4]
Weights come from a fixed seed, so every run writes the same files.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_mlp2(path):
    rng = np.random.default_rng(20261129)
    w1 = (rng.standard_normal((32, 16)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(32) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((4, 32)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(4) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Gemm", ["s", "w1", "b1"], ["z1"], transB=1),
        helper.make_node("Relu", ["z1"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "mlp2",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 16]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", 32])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copyfile(os.path.join(here, "..", "data", "tiny_cnn.onnx"),
                    os.path.join(out, "tiny_cnn.onnx"))
    write_mlp2(os.path.join(out, "mlp2.onnx"))
    if len(sys.argv) > 2:
        subprocess.run([sys.argv[2], "squeezenet1_1", os.path.join(out, "squeezenet.onnx"),
                        "32", "10", "5"], check=True)


if __name__ == "__main__":
    main()
