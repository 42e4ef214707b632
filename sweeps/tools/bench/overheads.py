"""What tracking costs a training step (an Outbox to a real SQLite store), how long a step stalls while the
store does not answer, and the FID extractor's throughput and the entry point's start-up time."""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from distill_core.callbacks import Callback
from distill_core.loop import LoopSettings, run_updates
from distill_core.teacher import denoising_loss

from .timing import per_call, sync


def tracking_overhead(model, data, batch, device, g, reps, weighting="snr_plus_one") -> float:
    """Step time through the real loop with tracking as jobs do it (an Outbox to a SQLite store, metrics
    every 25 updates, a checkpoint tag and artifact every 100) vs a callback that does nothing."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss_fn():
        x = data.batch(batch, g).to(device)
        return denoising_loss(model, x, model.family.train_times(batch, g).to(device),
                              torch.randn(x.shape, generator=g).to(device), weighting)

    return _overhead(model, opt, loss_fn, max(100, 5 * reps), device)


def synthetic_step(ms: float = 10.0):
    """A stand-in for a GPU step of `ms` milliseconds that leaves the CPU free (the host waits on the device)."""
    net = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)

    def loss_fn():
        time.sleep(ms / 1000)
        return net(x).pow(2).mean()
    return net, torch.optim.SGD(net.parameters(), lr=1e-3), loss_fn


def _tracked(run_id, tmp, uri=None, limit=600.0):
    from ...tracking.outbox import Outbox
    from ...tracking.run_logger import RunLogger

    class Tracked(RunLogger):  # + a checkpoint (artifact and tag) every 100 updates, as a job's
        def on_metrics(self, metrics, step, model_id=None):
            super().on_metrics(metrics, step, model_id)
            if step % 100 == 0:
                path = Path(tmp) / "ckpt.pt"
                path.write_bytes(b"0" * 4096)
                self.on_checkpoint(path, "0" * 64, f"phase{step // 100}_1steps.pt")
    return Tracked(run_id, outbox=Outbox(run_id, limit, retry_s=1.0, tracking_uri=uri))


def _overhead(model, opt, loss_fn, updates, device) -> float:
    import mlflow
    settings = LoopSettings(updates=updates, lr=1e-4, log_every=25, progress=False)  # the jobs' default
    run_updates(model, opt, loss_fn, LoopSettings(updates=3, lr=1e-4, progress=False))  # warm-up
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/bench.db")
        with mlflow.start_run() as run:
            for label in ("off", "on", "off2", "on2"):
                cb = _tracked(run.info.run_id, tmp) if label.startswith("on") else Callback()
                sync(device)
                t0 = time.perf_counter()
                run_updates(model, opt, loss_fn, settings, callback=cb)
                sync(device)
                times[label] = time.perf_counter() - t0
                if label.startswith("on"):
                    cb.close()
    return min(times["on"], times["on2"]) / min(times["off"], times["off2"]) - 1.0


def outage_stall(ms: float = 10.0, updates: int = 600) -> dict:
    """Synthetic `ms` steps with tracking to a server that does not answer (a closed port on 127.0.0.1):
    the longest step, and how many metric values were kept for later."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    import os
    old = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    net, opt, loss_fn = synthetic_step(ms)
    steps = []

    try:
        with tempfile.TemporaryDirectory() as tmp:
            cb = _tracked("0" * 32, tmp, uri=f"http://127.0.0.1:{port}")
            last = time.perf_counter()

            def timed_loss():
                nonlocal last
                now = time.perf_counter()
                steps.append(now - last)
                last = now
                return loss_fn()
            run_updates(net, opt, timed_loss, LoopSettings(updates=updates, lr=1e-3, log_every=25, progress=False),
                        callback=cb)
            kept = cb.out._pending
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return {"outage_max_step_ms": 1000 * max(steps[1:]), "outage_median_step_ms": 1000 * sorted(steps)[len(steps) // 2],
            "outage_kept_calls": kept}


def inception_throughput(device, n=32) -> float:
    """Images per second through the FID feature extractor (8x8 inputs resized to 299)."""
    try:
        from distill_core import fid
        weights = fid.resolve_weights("offline")
    except Exception:
        return float("nan")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    fe = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights).to(device).eval()
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, device=device)
    with torch.no_grad():
        return n / per_call(lambda: fe(x), 2, device, warmup=1)


def startup_time() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweeps.run", "--help"], capture_output=True, check=True)
    return time.perf_counter() - t0
