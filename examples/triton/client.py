#!/usr/bin/env python3
"""Sends one request to each example model and prints the answers.

    python3 client.py [HOST:PORT]        (default 127.0.0.1:8000)

Needs tritonclient[http] and numpy.
"""
import sys

import numpy as np
import tritonclient.http as th

url = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000"
client = th.InferenceServerClient(url)
rng = np.random.default_rng(1)

x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)  # two samples
inp = th.InferInput("input", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
print("tiny_cnn probs:\n", client.infer("tiny_cnn", [inp]).as_numpy("probs"))

a = rng.standard_normal((1, 16)).astype(np.float32)
b = rng.standard_normal((1, 16)).astype(np.float32)
ia, ib = th.InferInput("a", [1, 16], "FP32"), th.InferInput("b", [1, 16], "FP32")
ia.set_data_from_numpy(a)
ib.set_data_from_numpy(b)
r = client.infer("mlp2", [ia, ib], outputs=[th.InferRequestedOutput("logits")])
print("mlp2 logits:", r.as_numpy("logits"))

stats = client.get_inference_statistics("tiny_cnn")["model_stats"][0]
print("tiny_cnn batches run by libdstack:",
      [(int(s["batch_size"]), int(s["compute_infer"]["count"])) for s in stats["batch_stats"]])
