#!/usr/bin/env python3
"""PyTorch reference latency for the same architectures, FP32 (TF32 off).

usage: torch_ref.py [iters]   -> CSV lines: torch,<model>,<batch>,<mode>,<median_ms>,<p10>,<p90>
Modes: eager (cudnn.benchmark on), cudagraph (the eager model captured in a
CUDA graph and replayed). Timing: host time around one forward including the
H2D copy of the input from pinned memory and the D2H of the logits, then
synchronize, to match gpu_bench's run()->done measurement. torch.compile is
tried only when TORCH_COMPILE=1 (minutes of compile time).
"""
import os
import sys
import time

import torch
import torchvision

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 50
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True
dev = torch.device("cuda")


def timed(fn, x_host, x_dev, out_host):
    ts = []
    for i in range(10 + iters):
        t0 = time.perf_counter_ns()
        x_dev.copy_(x_host, non_blocking=True)
        y = fn(x_dev)
        out_host.copy_(y, non_blocking=True)
        torch.cuda.synchronize()
        if i >= 10:
            ts.append(time.perf_counter_ns() - t0)
    ts.sort()
    return ts[len(ts) // 2] / 1e6, ts[len(ts) // 10] / 1e6, ts[(len(ts) * 9) // 10] / 1e6


for name in ["resnet50", "mobilenet_v2"]:
    model = getattr(torchvision.models, name)(weights=None).eval().to(dev)
    params = sum(p.numel() for p in model.parameters())
    for b in [1, 32]:
        x_host = torch.randn(b, 3, 224, 224).pin_memory()
        x_dev = torch.empty(b, 3, 224, 224, device=dev)
        out_host = torch.empty(b, 1000).pin_memory()
        with torch.inference_mode():
            r = timed(model, x_host, x_dev, out_host)
            print(f"torch,{name},{b},eager,{r[0]:.3f},{r[1]:.3f},{r[2]:.3f},params={params}", flush=True)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    model(x_dev)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                y_static = model(x_dev)

            def replay(_x):
                g.replay()
                return y_static

            r = timed(replay, x_host, x_dev, out_host)
            print(f"torch,{name},{b},cudagraph,{r[0]:.3f},{r[1]:.3f},{r[2]:.3f}", flush=True)
            if os.environ.get("TORCH_COMPILE") == "1":
                cm = torch.compile(model, mode="max-autotune-no-cudagraphs")
                r = timed(cm, x_host, x_dev, out_host)
                print(f"torch,{name},{b},compile,{r[0]:.3f},{r[1]:.3f},{r[2]:.3f}", flush=True)
