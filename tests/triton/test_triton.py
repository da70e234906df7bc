#!/usr/bin/env python3
"""The dstack Triton backend under a real tritonserver (pip's nvidia-pytriton).

    test_triton.py --tritonserver BIN --backends DIR --libout LIBDIR [--backend cpu]

Starts tritonserver on 127.0.0.1 (explicit model control) with a model
repository of two ONNX models written by make_models.py, drives it with
tritonclient[http], and checks: outputs against ONNX Runtime and against
libdstack's own cpu backend, concurrent clients, bad requests, statistics
and metrics, config refusals, unload/load/reload through the repository
API, unload and server stop with requests in flight. One line per check,
PASS or FAIL, then "N passed, N failed". Every wait is bounded.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import onnxruntime as ort
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

MODELS = ("tiny_cnn", "mlp2", "squeezenet")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import dstack_ctypes as ds  # noqa: E402

results = {"passed": 0, "failed": 0}


def report(ok, what):
    results["passed" if ok else "failed"] += 1
    print(("PASS " if ok else "FAIL ") + what, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_CONFIG = """name: "{name}"
backend: "dstack"
max_batch_size: 8
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 3, 8, 8 ] }} ]
output [ {{ name: "probs" data_type: TYPE_FP32 dims: [ 5 ] }} ]
parameters {{ key: "slo_us" value: {{ string_value: "200000" }} }}
{extra}
"""

# squeezenet (the library's zoo, exported to ONNX) runs as two instances
# of one model: both submit to the model's one registration.
SQUEEZENET_CONFIG = """name: "squeezenet"
backend: "dstack"
max_batch_size: 4
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
parameters { key: "slo_us" value: { string_value: "500000" } }
"""

# mlp2 says nothing but its backend: inputs, outputs and max_batch_size
# are completed by the backend from the ONNX model.
MLP2_CONFIG = 'backend: "dstack"\n'


def write_repo(root, models):
    def model(name, onnx_file, config):
        os.makedirs(os.path.join(root, name, "1"), exist_ok=True)
        shutil.copyfile(os.path.join(models, onnx_file), os.path.join(root, name, "1", "model.onnx"))
        with open(os.path.join(root, name, "config.pbtxt"), "w") as f:
            f.write(config)

    model("tiny_cnn", "tiny_cnn.onnx", TINY_CONFIG.format(name="tiny_cnn", extra=""))
    model("mlp2", "mlp2.onnx", MLP2_CONFIG)
    model("squeezenet", "squeezenet.onnx", SQUEEZENET_CONFIG)
    model("bad_batcher", "tiny_cnn.onnx",
          TINY_CONFIG.format(name="bad_batcher", extra="dynamic_batching { }"))
    model("bad_dims", "tiny_cnn.onnx",
          TINY_CONFIG.format(name="bad_dims", extra="").replace("dims: [ 5 ]", "dims: [ 6 ]"))
    model("bad_param", "tiny_cnn.onnx", TINY_CONFIG.format(
        name="bad_param", extra='parameters { key: "slo" value: { string_value: "1" } }'))
    model("late", "tiny_cnn.onnx", TINY_CONFIG.format(
        name="late", extra='parameters { key: "deadline_us" value: { string_value: "1" } }'))


class Server:
    def __init__(self, binary, repo, backends, backend, logpath,
                 models=("tiny_cnn", "mlp2", "squeezenet"),
                 backend_config=()):
        self.http = free_port()
        self.metrics = free_port()
        self.logpath = logpath
        args = [binary, "--model-repository=" + repo, "--backend-directory=" + backends,
                "--model-control-mode=explicit", "--backend-config=dstack,backend=" + backend,
                "--http-address=127.0.0.1", "--http-port=%d" % self.http,
                "--allow-grpc=false", "--allow-metrics=true", "--allow-gpu-metrics=false",
                "--metrics-address=127.0.0.1", "--metrics-port=%d" % self.metrics,
                "--exit-timeout-secs=30", "--log-verbose=0"]
        args += ["--load-model=" + m for m in models]
        args += ["--backend-config=dstack," + kv for kv in backend_config]
        self.log = open(logpath, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = "127.0.0.1:%d" % self.http

    def wait_ready(self, seconds=90):
        end = time.time() + seconds
        while time.time() < end:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen("http://%s/v2/health/ready" % self.url, timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.logpath) as f:
            return f.read()

    def wait_log(self, *needles, seconds=10):
        """True once every needle is in the log (the server's output to a
        file is buffered, so a line may come a little after its event)."""
        end = time.time() + seconds
        while True:
            text = self.text()
            if all(n in text for n in needles):
                return True
            if time.time() > end:
                return False
            time.sleep(0.1)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Oracles:
    """ONNX Runtime and libdstack's cpu backend, sample by sample."""

    def __init__(self, models, libout):
        self.ort = {m: ort.InferenceSession(os.path.join(models, m + ".onnx"),
                                            providers=["CPUExecutionProvider"])
                    for m in MODELS}
        self.lib = ds.Library(libout)
        self.ctx = ds.Context(self.lib, ds.BACKEND_CPU)
        self.dstack = {m: self.ctx.register(ds.SOURCE_ONNX_FILE,
                                            path=os.path.join(models, m + ".onnx"))
                       for m in MODELS}

    def ort_run(self, model, feeds):
        sess = self.ort[model]
        return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))

    def dstack_run(self, model, feeds):
        m = self.dstack[model]
        names = [m.info.inputs[i].name.decode() for i in range(m.info.n_inputs)]
        outs = [m.info.outputs[i].name.decode() for i in range(m.info.n_outputs)]
        n = next(iter(feeds.values())).shape[0]
        per = [m.run([feeds[k][s:s + 1] for k in names]) for s in range(n)]
        return {o: np.concatenate([p[j] for p in per]) for j, o in enumerate(outs)}

    def close(self):
        self.ctx.close()


def feeds_for(model, n, rng):
    if model == "tiny_cnn":
        return {"input": rng.standard_normal((n, 3, 8, 8)).astype(np.float32)}
    if model == "squeezenet":
        return {"input": rng.standard_normal((n, 3, 32, 32)).astype(np.float32)}
    return {"a": rng.standard_normal((n, 16)).astype(np.float32),
            "b": rng.standard_normal((n, 16)).astype(np.float32)}


def infer(client, model, feeds, outputs=None, order=None, retries=20, parameters=None):
    inputs = []
    for name in order or feeds:
        x = feeds[name]
        i = th.InferInput(name, list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        inputs.append(i)
    req_outs = [th.InferRequestedOutput(o) for o in outputs] if outputs else None
    for attempt in range(retries):
        try:
            return client.infer(model, inputs, outputs=req_outs, parameters=parameters)
        except InferenceServerException as e:
            # QUEUE_FULL comes back as UNAVAILABLE: retry, as a client should.
            if "queue full" in str(e).lower() and attempt + 1 < retries:
                time.sleep(0.01 * (attempt + 1))
                continue
            raise


def max_err(a, b):
    return float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")


def check_outputs(oracles, client, model, n, rng, order=None, outputs=None):
    feeds = feeds_for(model, n, rng)
    r = infer(client, model, feeds, outputs=outputs, order=order)
    ref = oracles.ort_run(model, feeds)
    lib = oracles.dstack_run(model, feeds)
    worst_ort, worst_lib = 0.0, 0.0
    for name in outputs or ref:
        y = r.as_numpy(name)
        if y is None:
            return False, "output %s missing" % name
        worst_ort = max(worst_ort, max_err(y, ref[name]) / (1e-6 + float(np.max(np.abs(ref[name])))))
        worst_lib = max(worst_lib, max_err(y, lib[name]))
    ok = worst_ort < 1e-4 and worst_lib <= 1e-6
    return ok, "rel err vs onnxruntime %.2e, abs err vs libdstack cpu %.2e" % (worst_ort, worst_lib)


def test_log_and_shared_context(server):
    report(server.wait_log("dstack backend loaded"), "server log shows the dstack backend loaded")
    report(server.wait_log("successfully loaded 'tiny_cnn'", "successfully loaded 'mlp2'"),
           "server log shows tiny_cnn and mlp2 ready")
    shared = server.wait_log("model tiny_cnn registered on context #1",
                             "model mlp2 registered on context #1",
                             "model squeezenet registered on context #1",
                             "which now serves 3 models")
    report(shared, "tiny_cnn, mlp2 and squeezenet share one libdstack context (#1)")
    report(server.wait_log("instance squeezenet_0_0 of model squeezenet submits to context #1",
                           "instance squeezenet_0_1 of model squeezenet submits to context #1") and
           server.text().count("model squeezenet registered") == 1,
           "squeezenet's two instances submit to its one registration")


def test_autocomplete(client):
    cfg = client.get_model_config("mlp2")
    names = [i["name"] for i in cfg.get("input", [])]
    outs = [o["name"] for o in cfg.get("output", [])]
    dims = [list(map(int, i["dims"])) for i in cfg.get("input", [])]
    ok = (cfg.get("max_batch_size", 0) > 0 and names == ["a", "b"] and dims == [[16], [16]] and
          outs == ["logits", "hidden"])
    report(ok, "mlp2's config (backend only) completed from ONNX: max_batch_size %s, inputs %s, "
           "outputs %s" % (cfg.get("max_batch_size"), names, outs))


def test_outputs(oracles, client, rng, counts):
    for n in (1, 3, 8):
        ok, how = check_outputs(oracles, client, "tiny_cnn", n, rng)
        counts["tiny_cnn"] += 1
        counts["tiny_samples"] += n
        report(ok, "tiny_cnn, %d sample(s): %s" % (n, how))
    for n in (1, 4):
        ok, how = check_outputs(oracles, client, "squeezenet", n, rng)
        report(ok, "squeezenet (zoo squeezenet1_1 exported to ONNX), %d sample(s): %s" % (n, how))
    mbs = client.get_model_config("mlp2")["max_batch_size"]
    for n in (1, mbs):
        ok, how = check_outputs(oracles, client, "mlp2", n, rng, order=["b", "a"])
        report(ok, "mlp2, %d sample(s), inputs sent b before a, both outputs: %s" % (n, how))
    feeds = feeds_for("mlp2", 2, rng)
    r = infer(client, "mlp2", feeds, outputs=["hidden"])
    ref = oracles.ort_run("mlp2", feeds)
    ok = (r.as_numpy("logits") is None and r.as_numpy("hidden") is not None and
          max_err(r.as_numpy("hidden"), ref["hidden"]) < 1e-5)
    report(ok, "mlp2 asked for 'hidden' only gets 'hidden' only, and right")


def test_concurrent(oracles, url, counts, clients=4, per_client=20):
    failures = []
    lock = threading.Lock()

    def run(seed):
        rng = np.random.default_rng(seed)
        c = th.InferenceServerClient(url, connection_timeout=60, network_timeout=60)
        for _ in range(per_client):
            model = "tiny_cnn" if rng.random() < 0.5 else "mlp2"
            n = int(rng.integers(1, 5))
            feeds = feeds_for(model, n, rng)
            try:
                r = infer(c, model, feeds)
                ref = oracles.ort_run(model, feeds)
                bad = [k for k in ref if max_err(r.as_numpy(k), ref[k]) > 1e-4]
                with lock:
                    if model == "tiny_cnn":
                        counts["tiny_cnn"] += 1
                        counts["tiny_samples"] += n
                    if bad:
                        failures.append("%s outputs %s differ" % (model, bad))
            except Exception as e:  # noqa: BLE001
                with lock:
                    failures.append("%s: %s" % (model, e))
        c.close()

    t0 = time.time()
    threads = [threading.Thread(target=run, args=(100 + i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    hung = any(t.is_alive() for t in threads)
    report(not failures and not hung,
           "%d concurrent clients x %d requests over both models: all answered and right "
           "(%.1f s)%s" % (clients, per_client, time.time() - t0,
                           "" if not failures else ": " + "; ".join(failures[:3])))


def expect_error(what, fn, needle=None):
    try:
        fn()
    except InferenceServerException as e:
        ok = needle is None or needle.lower() in str(e).lower()
        report(ok, "%s is refused: %s" % (what, str(e)[:160]))
        return
    report(False, "%s is refused (it was accepted)" % what)


def test_bad_requests(oracles, client, rng, counts):
    x = rng.standard_normal((1, 3, 8, 9)).astype(np.float32)
    expect_error("wrong shape", lambda: infer(client, "tiny_cnn", {"input": x}), "shape")

    def wrong_type():
        i = th.InferInput("input", [1, 3, 8, 8], "FP64")
        i.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float64))
        client.infer("tiny_cnn", [i])
    expect_error("wrong data type (FP64)", wrong_type, "FP64")
    expect_error("unknown model", lambda: infer(client, "nope", feeds_for("tiny_cnn", 1, rng)))
    expect_error("9 samples with max_batch_size 8",
                 lambda: infer(client, "tiny_cnn", feeds_for("tiny_cnn", 9, rng)), "batch")
    expect_error("a missing input", lambda: infer(client, "mlp2",
                                                  {"a": feeds_for("mlp2", 1, rng)["a"]}), "input")
    ok, how = check_outputs(oracles, client, "tiny_cnn", 2, rng)
    counts["tiny_cnn"] += 1
    counts["tiny_samples"] += 2
    report(ok, "the server keeps serving after bad requests: %s" % how)


def test_deadline(client, rng):
    client.load_model("late")
    expect_error("a request whose deadline (deadline_us 1) passes before its batch",
                 lambda: infer(client, "late", feeds_for("tiny_cnn", 1, rng), retries=1),
                 "deadline")
    client.unload_model("late")
    expect_error("a request with parameter deadline_us 1",
                 lambda: infer(client, "tiny_cnn", feeds_for("tiny_cnn", 2, rng), retries=1,
                               parameters={"deadline_us": 1}), "deadline missed")
    expect_error("a request with parameter deadline_us -5",
                 lambda: infer(client, "tiny_cnn", feeds_for("tiny_cnn", 1, rng), retries=1,
                               parameters={"deadline_us": -5}), "deadline_us")
    try:
        infer(client, "tiny_cnn", feeds_for("tiny_cnn", 2, rng), parameters={"deadline_us": 10**7})
        report(True, "a request with parameter deadline_us 10 s is served")
    except InferenceServerException as e:
        report(False, "a request with parameter deadline_us 10 s is served: %s" % e)


def test_statistics(server, client, counts):
    st = client.get_inference_statistics("tiny_cnn")["model_stats"][0]
    inf = st["inference_stats"]
    batches = st.get("batch_stats", [])
    ok = (int(inf["success"]["count"]) == counts["tiny_cnn"] and
          int(st["inference_count"]) == counts["tiny_samples"] and
          int(st["execution_count"]) >= 1 and len(batches) >= 1)
    report(ok, "tiny_cnn statistics: %s successes (sent %d), %s samples (sent %d), %s "
           "executions, batch sizes %s" % (inf["success"]["count"], counts["tiny_cnn"],
                                           st["inference_count"], counts["tiny_samples"],
                                           st["execution_count"],
                                           sorted(int(b["batch_size"]) for b in batches)))
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % server.metrics,
                                    timeout=10) as r:
            text = r.read().decode()
        line = [ln for ln in text.splitlines()
                if ln.startswith("nv_inference_count{") and 'model="tiny_cnn"' in ln]
        ok = bool(line) and float(line[0].split()[-1]) == counts["tiny_samples"]
        report(ok, "Triton metrics: %s" % (line[0] if line else "no nv_inference_count"))
    except OSError as e:
        report(False, "Triton metrics: %s" % e)


def test_repository(oracles, server, client, rng):
    expect_error("loading a config with dynamic_batching", lambda: client.load_model("bad_batcher"),
                 "dynamic_batching")
    expect_error("loading a config whose output dims differ from the ONNX model",
                 lambda: client.load_model("bad_dims"), "dims")
    expect_error("loading a config with an unknown parameter", lambda: client.load_model("bad_param"),
                 "unknown parameter 'slo'")
    client.unload_model("mlp2")
    gone = not client.is_model_ready("mlp2")
    try:
        infer(client, "mlp2", feeds_for("mlp2", 1, rng), retries=1)
        refused = False
    except InferenceServerException:
        refused = True
    report(gone and refused, "unloaded mlp2 is not ready and refuses requests")
    client.load_model("mlp2")
    ok, how = check_outputs(oracles, client, "mlp2", 2, rng)
    report(ok and client.is_model_ready("mlp2") and
           server.wait_log("model mlp2 unregistered from context #1"),
           "mlp2 loaded again through the repository API: %s" % how)
    cfg = client.get_model_config("tiny_cnn")
    cfg["parameters"] = {"slo_us": {"string_value": "300000"}}
    client.load_model("tiny_cnn", config=json.dumps(cfg))
    ok, how = check_outputs(oracles, client, "tiny_cnn", 4, rng)
    report(ok and server.wait_log("SLO 300000 us"),
           "tiny_cnn reloaded with a new slo_us from the repository API: %s" % how)


class Load:
    """Clients in threads sending requests back to back, each recording when
    its answer came and whether it was ok, until told to stop or done."""

    def __init__(self, url, models, samples, per_client):
        self.answers = []  # (time answered, ok)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(url, m, samples, per_client, i))
                        for i, m in enumerate(models)]
        for t in self.threads:
            t.start()

    def run(self, url, model, samples, n, seed):
        rng = np.random.default_rng(seed)
        c = th.InferenceServerClient(url, connection_timeout=30, network_timeout=60)
        for _ in range(n):
            try:
                infer(c, model, feeds_for(model, samples, rng), retries=1)
                ok = True
            except Exception:  # noqa: BLE001
                ok = False
            with self.lock:
                self.answers.append((time.time(), ok))
        c.close()

    def wait_answers(self, n, seconds=60):
        end = time.time() + seconds
        while len(self.answers) < n and time.time() < end:
            time.sleep(0.01)

    def join(self, seconds=120):
        for t in self.threads:
            t.join(seconds)
        return not any(t.is_alive() for t in self.threads)


def test_unload_in_flight(server, client):
    load = Load(server.url, ["tiny_cnn"] * 4, 8, 40)
    load.wait_answers(20)
    t0 = time.time()
    client.unload_model("tiny_cnn")
    t1 = time.time()
    done = load.join()
    ok_during = sum(1 for t, ok in load.answers if ok and t0 <= t <= t1)
    oks = sum(1 for _, ok in load.answers if ok)
    report(done and len(load.answers) == 160,
           "unload with 4 clients sending: all %d requests answered (%d ok, %d of them while the "
           "unload ran, %d refused after it), unload took %.2f s"
           % (len(load.answers), oks, ok_during, len(load.answers) - oks, t1 - t0))
    client.load_model("tiny_cnn")


def test_stop_in_flight(server):
    load = Load(server.url, ["tiny_cnn", "mlp2", "tiny_cnn", "mlp2"], 4, 60)
    load.wait_answers(20)
    t0 = time.time()
    rc = server.stop()
    done = load.join()
    ok_after = sum(1 for t, ok in load.answers if ok and t >= t0)
    oks = sum(1 for _, ok in load.answers if ok)
    log = server.text()
    closed = "dstack context #1 closed" in log
    # The backend's own error lines (logged from file "dstack"), over the whole run.
    errors = [ln for ln in log.splitlines() if re.match(r"E\S+ \S+ +\d+ dstack:\d+\]", ln)]
    report(done and len(load.answers) == 240 and rc == 0 and closed and not errors,
           "server stopped (SIGTERM) with 4 clients sending: exit %s in %.2f s, all %d requests "
           "answered (%d ok, %d of them after the signal, %d refused), context closed: %s%s"
           % (rc, time.time() - t0, len(load.answers), oks, ok_after, len(load.answers) - oks,
              closed, "; errors: " + errors[0] if errors else ""))


def test_queue_full(args, repo, work, oracles):
    """A server whose context queues 8 samples per model, sent 8 requests of
    8 samples at once, 10 times over: the requests that do not fit must come
    back UNAVAILABLE (HTTP 503) saying the queue is full, after the samples
    of theirs already queued have run; the others must be right."""
    server = Server(args.tritonserver, repo, args.backends, args.backend,
                    os.path.join(work, "tritonserver-queue.log"), models=("tiny_cnn",),
                    backend_config=("queue_capacity=8",))
    try:
        if not server.wait_ready():
            report(False, "server with queue_capacity 8 ready")
            return
        outcomes = []
        lock = threading.Lock()

        def run(seed):
            rng = np.random.default_rng(seed)
            c = th.InferenceServerClient(server.url, connection_timeout=30, network_timeout=60)
            for _ in range(10):
                feeds = feeds_for("tiny_cnn", 8, rng)
                try:
                    r = infer(c, "tiny_cnn", feeds, retries=1)
                    right = max_err(r.as_numpy("probs"), oracles.ort_run("tiny_cnn", feeds)["probs"])
                    out = "ok" if right < 1e-4 else "wrong"
                except InferenceServerException as e:
                    out = "full" if (e.status() == "503" or "503" in str(e)) and \
                        "queue full" in str(e) else "other: " + str(e)[:120]
                with lock:
                    outcomes.append(out)
            c.close()

        threads = [threading.Thread(target=run, args=(300 + i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        hung = any(t.is_alive() for t in threads)
        others = [o for o in outcomes if o not in ("ok", "full")]
        st = th.InferenceServerClient(server.url).get_inference_statistics("tiny_cnn")
        inf = st["model_stats"][0]["inference_stats"]
        ok = (not hung and len(outcomes) == 80 and not others and outcomes.count("full") > 0 and
              int(inf["fail"]["count"]) == outcomes.count("full") and
              int(inf["success"]["count"]) == outcomes.count("ok"))
        report(ok, "queue_capacity 8, 8 clients x 10 requests of 8 samples: %d right, %d "
               "UNAVAILABLE 'queue full', %d other%s; Triton counts %s ok / %s failed"
               % (outcomes.count("ok"), outcomes.count("full"), len(others),
                  ": " + others[0] if others else "", inf["success"]["count"],
                  inf["fail"]["count"]))
    finally:
        rc = server.stop()
        report(rc == 0, "server with queue_capacity 8 stopped cleanly (exit %s)" % rc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tritonserver", required=True)
    ap.add_argument("--backends", required=True)
    ap.add_argument("--libout", required=True)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--export-tool", required=True, help="dstack_export, for the zoo model")
    ap.add_argument("--keep", action="store_true", help="keep the work folder and log")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="dstack-triton-")
    models = os.path.join(work, "onnx")
    subprocess.run([sys.executable, os.path.join(HERE, "make_models.py"), models,
                    args.export_tool], check=True)
    repo = os.path.join(work, "repo")
    write_repo(repo, models)
    oracles = Oracles(models, args.libout)
    rng = np.random.default_rng(20261129)
    counts = {"tiny_cnn": 0, "tiny_samples": 0}
    t0 = time.time()
    server = Server(args.tritonserver, repo, args.backends, args.backend,
                    os.path.join(work, "tritonserver.log"))
    try:
        ready = server.wait_ready()
        report(ready, "tritonserver ready on %s in %.1f s" % (server.url, time.time() - t0))
        if not ready:
            print(server.text()[-4000:])
            return
        client = th.InferenceServerClient(server.url, connection_timeout=60, network_timeout=60)
        test_log_and_shared_context(server)
        test_autocomplete(client)
        test_outputs(oracles, client, rng, counts)
        test_concurrent(oracles, server.url, counts)
        test_bad_requests(oracles, client, rng, counts)
        test_statistics(server, client, counts)
        test_deadline(client, rng)
        test_repository(oracles, server, client, rng)
        test_unload_in_flight(server, client)
        client.close()
        test_stop_in_flight(server)
        test_queue_full(args, repo, work, oracles)
    finally:
        if server.proc.poll() is None:
            server.stop()
        oracles.close()
        print("server log: %s" % server.logpath if args.keep else "")
        if not args.keep and results["failed"] == 0:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep:
            print("work folder kept for the failure: %s" % work)
        print("triton tests took %.1f s" % (time.time() - t0))
        print("%d passed, %d failed" % (results["passed"], results["failed"]))


if __name__ == "__main__":
    main()
    sys.exit(1 if results["failed"] else 0)
