#!/usr/bin/env python3
"""torch_peer.py - the outside peer for benchmark issue 13: a plain PyTorch
server of the four-CNN mix (bench/workloads/four_cnn.txt), one CUDA stream per
model, whose goodput is compared with `bench/sched_compare --backend cuda`.

usage (GPU machine, from the repository root):
  python3 bench/gpu/torch_peer.py [--seconds 2] [--start 200] [--max-rate 20000]
                                  [--budget 150] [--seed 1] [--csv PATH]
usage (anywhere, no torch needed; models replaced by sleep(a*b + c)):
  python3 bench/gpu/torch_peer.py --fake --seconds 1 --budget 30

Models: torchvision resnet50, mobilenet_v2, vgg19, alexnet, weights=None, FP32,
TF32 off, cudnn.benchmark on, 3x224x224, inference_mode, warmed up at every
batch 1..max_batch before timing. Workload: 25 ms SLO each, open-loop Poisson
arrivals at equal rates (total R), precomputed from --seed and submitted on
time by one thread. Serving: one worker thread and torch.cuda.Stream per model;
Triton-like dynamic batching: take everything queued (up to --max-batch live
requests), drop requests already past their deadline (counted as misses), run
pinned H2D -> forward -> D2H, stream.synchronize(); met if completion -
arrival <= SLO. A point runs --seconds of arrivals plus drain; attainment =
met / arrived per model. Goodput search: rates x1.25 from --start while
slo_min >= 99%, then two geometric bisection steps between the last good and
first failing rate; goodput = highest rate that held. --budget bounds the
search's wall time (warm-up excluded; it is printed separately).
Last line: peer=torch_streams goodput=.. slo_min=.. seconds_per_point=.. device=..
"""
import argparse
import collections
import math
import os
import random
import sys
import threading
import time
import traceback

MODELS = ["resnet50", "mobilenet_v2", "vgg19", "alexnet"]
# --fake cost per batch of b: c ms outside a shared "GPU" lock (launch
# overhead, runs concurrently) + a*b ms inside it (compute, one device).
# Roughly torch eager FP32 on an H100 (bench/results/gpu-h100.md).
FAKE_COST = {"resnet50": (0.30, 2.5), "mobilenet_v2": (0.06, 2.5), "vgg19": (0.80, 1.5), "alexnet": (0.03, 0.8)}
clock = time.perf_counter  # monotonic on Linux


def log(*a):
    print(*a, flush=True)


class FakeRunner:
    def __init__(self, name, gpu_lock):
        self.a, self.c = (v / 1e3 for v in FAKE_COST[name])
        self.gpu_lock = gpu_lock

    def run(self, b):
        time.sleep(self.c)
        with self.gpu_lock:
            time.sleep(self.a * b)


class TorchRunner:
    def __init__(self, name, max_batch):
        import torch, torchvision
        self.torch = torch
        self.model = getattr(torchvision.models, name)(weights=None).eval().cuda()
        self.stream = torch.cuda.Stream()
        self.x_host = torch.randn(max_batch, 3, 224, 224).pin_memory()  # random, not zeros
        self.out_host = torch.empty(max_batch, 1000).pin_memory()
        with torch.cuda.stream(self.stream):
            self.x_dev = torch.empty(max_batch, 3, 224, 224, device="cuda")
        self.stream.synchronize()

    def run(self, b):
        torch = self.torch
        # inference_mode and the current stream are thread-local: set them here.
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            xd = self.x_dev[:b]
            xd.copy_(self.x_host[:b], non_blocking=True)
            y = self.model(xd)
            self.out_host[:b].copy_(y, non_blocking=True)
        self.stream.synchronize()


class ModelQueue:
    """One model's queued requests: (scheduled arrival, the point's stats)."""

    def __init__(self):
        self.q, self.cv = collections.deque(), threading.Condition()

    def put(self, t, st):
        with self.cv:
            self.q.append((t, st))
            self.cv.notify()

    def take(self, max_batch, slo, abort):
        """Up to max_batch live requests; expired ones are dropped (counted)."""
        with self.cv:
            while not self.q and not abort.is_set():
                self.cv.wait(0.05)
            now, batch = clock(), []
            while self.q and len(batch) < max_batch:
                t, st = self.q.popleft()
                if now - t > slo:
                    st["dropped"] += 1
                    st["finished"] += 1
                else:
                    batch.append((t, st))
            return batch


class Worker:
    """One model's serving thread, alive for the whole run: PyTorch makes its
    cuDNN and cuBLAS handles per thread, so a thread per point would pay
    handle creation (tens of ms) inside every point's first batches. The
    warm-up runs on this thread for the same reason."""

    def __init__(self, name, runner, args, abort, errors):
        self.name, self.r, self.args, self.abort, self.errors = name, runner, args, abort, errors
        self.q = ModelQueue()
        self.warm_turn, self.warm = threading.Event(), threading.Event()
        self.alone_turn, self.alone_done = threading.Event(), threading.Event()
        self.warm_s, self.alone_ms = 0.0, (0.0, 0.0)
        self.th = threading.Thread(target=self.main, daemon=True)
        self.th.start()

    def main(self):
        try:
            self.warm_turn.wait()  # one model at a time: autotuning timed without neighbours
            t0 = clock()
            for b in range(1, self.args.max_batch + 1):  # cudnn.benchmark autotunes per shape
                self.r.run(b)
            self.warm_s = clock() - t0
            self.warm.set()
            self.alone_turn.wait()  # one model at a time: "alone" means alone
            med = []
            for b in (1, self.args.max_batch):
                ts = []
                for _ in range(10):
                    t1 = clock()
                    self.r.run(b)
                    ts.append(clock() - t1)
                med.append(sorted(ts)[5] * 1e3)
            self.alone_ms = tuple(med)
            self.alone_done.set()
            slo = self.args.slo_ms / 1e3
            while not self.abort.is_set():
                batch = self.q.take(self.args.max_batch, slo, self.abort)
                if not batch:
                    continue
                self.r.run(len(batch))
                done = clock()
                for t, st in batch:
                    st["met" if done - t <= slo else "late"] += 1
                    st["finished"] += 1
                batch[0][1]["batches"] += 1
        except BaseException:
            self.errors.append(traceback.format_exc())
            self.abort.set()


def arrivals(R, seconds, seed):
    """Sorted (offset s, model index): independent Poisson streams of R/4 each."""
    out = []
    for i in range(len(MODELS)):
        rng, t = random.Random(seed * 1000003 + i), 0.0
        while True:
            t += rng.expovariate(R / len(MODELS))
            if t >= seconds:
                break
            out.append((t, i))
    out.sort()
    return out


def run_point(workers, R, args, errors, abort):
    """One rate on the persistent workers: per-model stats, or None after an error/hang."""
    arr = arrivals(R, args.seconds, args.seed)
    stats = [dict(arrived=0, met=0, late=0, dropped=0, batches=0, finished=0) for _ in workers]
    for _, i in arr:
        stats[i]["arrived"] += 1
    t0 = clock() + 0.01
    for off, i in arr:  # the submitter: the main thread, on time
        when = t0 + off
        d = when - clock()
        if d > 0:
            time.sleep(d)
        if abort.is_set():
            break
        # latency counts from the enqueue, as libdstack's does from dstack_submit:
        # a submitter late for the GIL is not charged to the server
        workers[i].q.put(clock(), stats[i])
    deadline = clock() + args.drain_timeout
    while not abort.is_set() and any(s["finished"] < s["arrived"] for s in stats):
        if clock() > deadline:
            errors.append(f"point {R:.0f} req/s did not drain within {args.drain_timeout} s after the arrivals")
            abort.set()
            break
        time.sleep(0.005)
    if errors:
        return None
    return stats


def attainment(st):
    return st["met"] / st["arrived"] if st["arrived"] else 1.0


def point_line(R, stats):
    att = [attainment(s) for s in stats]
    per = ", ".join(f"{m} {100 * a:.2f}%" for m, a in zip(MODELS, att))
    drop, late = sum(s["dropped"] for s in stats), sum(s["late"] for s in stats)
    mb = " ".join(f"{(s['met'] + s['late']) / max(1, s['batches']):.1f}" for s in stats)
    return min(att), (f"  torch_streams {R:8.0f} req/s: slo_min {100 * min(att):.2f}%, per-model [{per}]"
                      f" dropped {drop} late {late} mean_batch [{mb}]")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fake", action="store_true", help="no torch: models are sleep(a*b + c)")
    p.add_argument("--seconds", type=float, default=2.0, help="arrival window per point")
    p.add_argument("--start", type=float, default=200.0, help="first total rate, req/s")
    p.add_argument("--max-rate", type=float, default=20000.0)
    p.add_argument("--budget", type=float, default=150.0, help="wall seconds for the search")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slo-ms", type=float, default=25.0)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--drain-timeout", type=float, default=30.0, help="a point that has not drained by then fails")
    p.add_argument("--csv", help="write every point here")
    args = p.parse_args()

    t_start = clock()
    if args.fake:
        lock = threading.Lock()
        runners, device = [FakeRunner(m, lock) for m in MODELS], "fake"
    else:
        import torch
        # five Python threads (submitter and four workers) share the GIL: switch
        # often, so a worker done with its batch is not held for the default 5 ms
        sys.setswitchinterval(5e-4)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        device = torch.cuda.get_device_name()
        log(f"device {device}, torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}")
        runners = [TorchRunner(m, args.max_batch) for m in MODELS]
    # Warm-up on the serving threads, one model at a time (cudnn.benchmark
    # autotunes each shape, best without neighbours), then each model alone at
    # batch 1 and max batch, median of 10, one model at a time.
    errors, abort = [], threading.Event()
    workers = [Worker(m, r, args, abort, errors) for m, r in zip(MODELS, runners)]

    def wait_turn(turn, done):
        # start one worker's turn and wait for it, stopping if any worker failed
        turn.set()
        while not done.wait(0.1):
            if abort.is_set():
                log("ERROR:\n" + "\n".join(errors))
                os._exit(1)

    for w in workers:
        wait_turn(w.warm_turn, w.warm)
    for w in workers:
        wait_turn(w.alone_turn, w.alone_done)
        log(f"alone {w.name:13s} b1 {w.alone_ms[0]:7.2f} ms  b{args.max_batch} {w.alone_ms[1]:7.2f} ms  "
            f"(warm-up {w.warm_s:.1f} s)")
    log(f"warm-up total {clock() - t_start:.1f} s; search: start {args.start:.0f} req/s, x1.25 while slo_min >= 99%, "
        f"{args.seconds:g} s per point, budget {args.budget:g} s")

    points = []
    t_search = clock()
    good = fail = None  # (rate, slo_min)
    note = ""

    def measure(R):
        stats = run_point(workers, R, args, errors, abort)
        if stats is None:
            log("ERROR:\n" + "\n".join(errors))
            os._exit(1)  # workers may be stuck in CUDA: do not wait for them
        smin, line = point_line(R, stats)
        log(line)
        points.append((R, [attainment(s) for s in stats], smin, stats))
        return smin

    def budget_ok():
        # A point costs about --seconds plus a short drain.
        return clock() - t_search + args.seconds + 0.5 <= args.budget

    R = min(args.start, args.max_rate)
    while True:  # rise
        if not budget_ok():
            note = "budget ran out while rising"
            break
        smin = measure(R)
        if smin < 0.99:
            fail = (R, smin)
            break
        good = (R, smin)
        if R >= args.max_rate:
            note = f"capped at --max-rate {args.max_rate:g}"
            break
        R = min(R * 1.25, args.max_rate)
    if good and fail:  # narrow [good, fail] twice on the geometric midpoint
        for _ in range(2):
            if not budget_ok():
                note = "budget ran out while bisecting"
                break
            mid = math.sqrt(good[0] * fail[0])
            smin = measure(mid)
            if smin >= 0.99:
                good = (mid, smin)
            else:
                fail = (mid, smin)
    if fail and not good:
        note = f"the start rate {args.start:g} already failed; rerun with a lower --start"
    if note:
        log(f"note: {note}")
    log(f"search {clock() - t_search:.1f} s, {len(points)} points; bracket "
        f"[{good[0] if good else 0:.0f}, {f'{fail[0]:.0f}' if fail else '-'}] req/s")

    if args.csv:
        with open(args.csv, "w") as f:
            f.write("peer,rate_rps," + ",".join(f"{m}_pct" for m in MODELS) + ",slo_min_pct,dropped,late\n")
            for R, att, smin, stats in points:
                f.write(f"torch_streams,{R:.1f}," + ",".join(f"{100 * a:.3f}" for a in att) +
                        f",{100 * smin:.3f},{sum(s['dropped'] for s in stats)},{sum(s['late'] for s in stats)}\n")
    log(f"peer=torch_streams goodput={good[0] if good else 0:.0f} slo_min={100 * good[1] if good else 0:.2f} "
        f"seconds_per_point={args.seconds:g} device={device.replace(' ', '_')}")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown with CUDA threads around


if __name__ == "__main__":
    main()
