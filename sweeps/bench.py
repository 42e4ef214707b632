"""`python -m sweeps.bench`: what a distillation step costs, against its arithmetic floor.

Measures in one process: teacher-training, BTD and TRACT step times at the same model and
batch (the ratios' floor is ~5/3: a training step is ~3 forward-equivalents, a distillation
step adds 2 frozen forwards), the DDIM sampler's overhead over bare forwards, evaluation and
sampling throughput, the step time with MLflow logging on vs off, the start-up time of
`python -m sweeps.run --help`, and peak memory. `--diffusion edm` measures the EDM family (EDM
teacher training; TRACT-VE and BTD-VE, whose Heun teacher step costs two frozen forwards).
`--devices N` measures data-parallel scaling instead: TRACT's step time and images/s on 1..N ranks at
`--batch` per rank (gloo processes on the CPU, one GPU each on CUDA) and the scaling efficiency
(images/s on n ranks over n times that on one). `--json` prints one JSON object last.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from distill_core import data as core_data
from distill_core.callbacks import Callback
from distill_core.diffusion import DiffusionModel
from distill_core.families import build as build_family
from distill_core.distill import DistillConfig, Distiller
from distill_core.loop import LoopSettings, run_updates
from distill_core.teacher import denoising_loss

DATA_FOR = {"unet_tiny": "digits", "unet_small": "fashion_mnist", "unet_cifar10": "cifar10", "mlp": "toy2d"}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def per_call(fn, reps: int, device: str, warmup: int = 3, blocks: int = 5) -> float:
    """Seconds per call: the fastest of `blocks` timed blocks (as timeit does), because a shared
    machine only ever adds time; `reps` calls in all."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    per_block = max(1, reps // blocks)
    for _ in range(max(1, min(blocks, reps))):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / per_block)
    return best


def synthetic_data(preset: str, shape, n=2048):
    return core_data.TensorData(preset, torch.randint(0, 256, (n, *shape), dtype=torch.uint8))


# dense bf16 peak of the GPUs this project is lent (NVIDIA datasheets, SXM parts), for MFU
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device_name: str):
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def step_flops(model, x, t) -> float:
    """FLOPs of one training step's forward + backward, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        model.x_hat(x, t).square().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


FAMILY = {"vp": ({"family": "vp", "parameterization": "v"}, "snr_plus_one", "truncated_snr"),
          "edm": ({"family": "edm"}, "edm", "edm")}  # (family, teacher weighting, distillation weighting)


def bench(preset="unet_tiny", batch=128, reps=20, device="cpu", steps=16, log_mlflow=False, data_root=None,
          compile=False, diffusion="vp"):
    torch.manual_seed(0)
    name = DATA_FOR[preset]
    try:
        data = core_data.load(name, root=data_root) if name in ("digits", "toy2d") or data_root else None
    except core_data.DataError:
        data = None
    shape = data.shape if data else {"unet_small": (1, 28, 28), "unet_cifar10": (3, 32, 32)}[preset]
    data = (data or synthetic_data(name, shape)).to(device)  # resident, as the jobs keep it
    family, teacher_weighting, distill_weighting = FAMILY[diffusion]
    family = build_family(family)
    teacher = DiffusionModel(preset, shape, family).use_fast_paths(device, compile)
    student = DiffusionModel(preset, shape, family).use_fast_paths(device, compile)
    opt = torch.optim.Adam(student.parameters(), lr=1e-4, fused=device == "cuda")
    g = torch.Generator().manual_seed(0)
    out = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "preset": preset, "batch": batch,
           "diffusion": diffusion, "compile": compile, "params": sum(p.numel() for p in student.parameters())}

    def train_step():
        x = data.batch(batch, g).to(device)
        loss = denoising_loss(student, x, family.train_times(batch, g).to(device),
                              torch.randn(x.shape, generator=g).to(device), teacher_weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out["train_step_s"] = per_call(train_step, reps, device)
    out["train_images_per_s"] = batch / out["train_step_s"]
    flops = step_flops(DiffusionModel(preset, shape, family).use_fast_paths(device), data.batch(batch, g),
                       family.train_times(batch, g).to(device))
    out["train_tflops_per_s"] = flops / out["train_step_s"] / 1e12
    peak = peak_tflops(out["device"]) if device == "cuda" else None
    if peak:
        out["mfu"] = out["train_tflops_per_s"] / peak  # of the dense bf16 peak
    frozen = teacher.eval().requires_grad_(False)
    x_fixed, t_fixed = data.batch(batch, g).to(device), family.train_times(batch, g).to(device)

    def frozen_forward():
        with torch.inference_mode():
            frozen.x_hat(x_fixed, t_fixed)

    out["frozen_forward_s"] = per_call(frozen_forward, reps, device)
    # what the ratios cannot beat on this device: the student's step plus the frozen forwards of a
    # target (a DDIM teacher step and the self-teacher's jump: 2; a Heun teacher step costs one more)
    frozen = 3 if diffusion == "edm" else 2
    out["floor_ratio"] = 1.0 + frozen * out["frozen_forward_s"] / out["train_step_s"]
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("btd", "tract"):
            cfg = DistillConfig(method=method, schedule=[2 * steps, steps], batch_size=batch, checkpoint_every=0,
                                compile=compile, weighting=distill_weighting)
            d = Distiller(teacher, data, cfg, Path(tmp), device=device, progress=False)

            def distill_step():
                loss = d.loss(2 * steps, steps)
                d.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                d.optimizer.step()
                if d.self_teacher is not None:
                    d.self_teacher.update(d.student)

            out[f"{method}_step_s"] = per_call(distill_step, reps, device)
            out[f"{method}_ratio"] = out[f"{method}_step_s"] / out["train_step_s"]
            out[f"{method}_images_per_s"] = batch / out[f"{method}_step_s"]

    noise = torch.randn((batch, *shape), device=device)
    teacher.eval()
    t_sample = per_call(lambda: teacher.sample(noise, steps), max(2, reps // 4), device, warmup=1)
    grid = torch.zeros(batch, device=device)  # the network's noise-level input (its value costs nothing)
    calls = 2 * steps - 1 if getattr(teacher.family, "sampler", "ddim") == "heun" else steps

    def bare():
        with torch.no_grad():
            for _ in range(calls):
                teacher.net(noise, grid)

    t_bare = per_call(bare, max(2, reps // 4), device, warmup=1)
    out["sampler_overhead"] = t_sample / t_bare - 1.0
    out["sampling_images_per_s_1step"] = batch / per_call(lambda: teacher.sample(noise, 1), reps, device)
    out["tracking_overhead"] = tracking_overhead(student, data, batch, device, g, reps, teacher_weighting)
    net, opt, loss_fn = synthetic_step(10.0)
    out["tracking_overhead_10ms_step"] = _overhead(net, opt, loss_fn, 400, "cpu")
    out.update(outage_stall(10.0))
    out["eval_images_per_s"] = inception_throughput(device)
    out["startup_s"] = startup_time()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    if log_mlflow:
        import mlflow
        with mlflow.start_run(run_name=f"bench {preset} b{batch} {device}", tags={"role": "bench"}):
            mlflow.log_params({"preset": preset, "batch": batch, "device": out["device"], "reps": reps,
                               "diffusion": diffusion})
            mlflow.log_metrics({k: float(v) for k, v in out.items() if isinstance(v, (int, float))})
    return out


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
    from sweeps.outbox import Outbox
    from sweeps.tracking import MlflowCallback

    class Tracked(MlflowCallback):  # + a checkpoint (artifact and tag) every 100 updates, as a job's
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


def _scaling_task(placement, device, preset, shape, batch_per_rank, reps, diffusion, precision):
    """TRACT updates on this rank's slice of a global batch of `batch_per_rank` x ranks (run on every rank)."""
    torch.manual_seed(0)
    family, _, weighting = FAMILY[diffusion]
    data = synthetic_data(preset, shape).to(device)
    teacher = DiffusionModel(preset, shape, build_family(family))
    cfg = DistillConfig(method="tract", schedule=[32, 16], batch_size=batch_per_rank * placement.world_size,
                        checkpoint_every=0, weighting=weighting, precision=precision, updates_per_phase=10 ** 6)
    with tempfile.TemporaryDirectory() as tmp:
        d = Distiller(teacher, data, cfg, Path(tmp), device=device, progress=False, placement=placement)
        d._x_hat = placement.wrap(d.student)  # as `Distiller.run` does at each phase start

        def updates(n):
            placement.barrier()
            sync(device)
            t0 = time.perf_counter()
            run_updates(d.student, d.optimizer, lambda: d.loss(32, 16), LoopSettings(updates=n, lr=1e-4, progress=False,
                        log_every=25), emas=[d.self_teacher], placement=placement)
            sync(device)
            return (time.perf_counter() - t0) / n

        updates(3)  # warm-up (and DDP's first-iteration bucket rebuild)
        return min(updates(max(1, reps // 2)) for _ in range(2))


def scaling(preset="unet_tiny", batch=128, reps=20, device="cpu", devices=2, diffusion="vp", precision="bf16") -> dict:
    """Images/s and step time of TRACT on 1..`devices` ranks at `batch` per rank, and the efficiency."""
    from sweeps.distributed import Ranks
    name = DATA_FOR[preset]
    shape = {"unet_tiny": (1, 8, 8), "unet_small": (1, 28, 28), "unet_cifar10": (3, 32, 32), "mlp": (2,)}[preset]
    out = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "preset": preset,
           "batch_per_rank": batch, "diffusion": diffusion, "precision": precision, "data": name}
    for n in range(1, devices + 1):
        step = Ranks(n, device).run(_scaling_task, preset, shape, batch, reps, diffusion, precision)
        out[f"ranks{n}_step_s"] = step
        out[f"ranks{n}_images_per_s"] = batch * n / step
        out[f"ranks{n}_efficiency"] = out[f"ranks{n}_images_per_s"] / (n * out["ranks1_images_per_s"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--preset", default="unet_tiny", choices=sorted(DATA_FOR))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--steps", type=int, default=16, help="sampler steps for the overhead measurement")
    p.add_argument("--data-root", default=None)
    p.add_argument("--mlflow", action="store_true", help="also log the figures as an MLflow run (MLFLOW_TRACKING_URI)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network calls (as compile=true)")
    p.add_argument("--diffusion", default="vp", choices=sorted(FAMILY), help="the noise family (as diffusion=...)")
    p.add_argument("--devices", type=int, default=None,
                   help="measure data-parallel scaling on 1..N ranks instead (batch is per rank)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="the network precision on CUDA")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.batch < 1 or a.reps < 1:
        p.error("--batch and --reps must be positive")
    if a.devices is not None:
        if a.devices < 1 or a.device == "cuda" and a.devices > torch.cuda.device_count():
            p.error(f"--devices must be between 1 and the number of visible GPUs ({torch.cuda.device_count()}) on CUDA")
        out = scaling(a.preset, a.batch, a.reps, a.device, a.devices, a.diffusion, a.precision)
    else:
        out = bench(a.preset, a.batch, a.reps, a.device, a.steps, a.mlflow, a.data_root, a.compile, a.diffusion)
    width = max(map(len, out))
    for k, v in out.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
