"""Step times at one model and batch: teacher training, BTD and TRACT against their arithmetic floor,
the sampler's overhead over bare forwards, and (from `overheads`) tracking, stall, FID and start-up."""
import resource
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from distill_core import data as core_data
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller
from distill_core.families import build as build_family
from distill_core.teacher import denoising_loss

from .overheads import _overhead, inception_throughput, outage_stall, startup_time, synthetic_step, tracking_overhead
from .timing import DATA_FOR, FAMILY, peak_tflops, per_call, step_flops, synthetic_data


@dataclass
class Setup:
    preset: str
    batch: int
    reps: int
    device: str
    compile: bool
    diffusion: str
    data: object = None
    shape: tuple = ()
    family: object = None
    teacher: object = None
    student: object = None
    generator: object = None


def bench(preset="unet_tiny", batch=128, reps=20, device="cpu", steps=16, log_mlflow=False, data_root=None,
          compile=False, diffusion="vp"):
    """Every figure of `python -m sweeps.bench` (without --devices), as a dict."""
    b = prepare(Setup(preset, batch, reps, device, compile, diffusion), data_root)
    out = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "preset": preset, "batch": batch,
           "diffusion": diffusion, "compile": compile, "params": sum(p.numel() for p in b.student.parameters())}
    out.update(train_figures(b, out["device"]))
    out.update(distill_figures(b, steps, out["train_step_s"]))
    out.update(sampler_figures(b, steps))
    out["tracking_overhead"] = tracking_overhead(b.student, b.data, batch, device, b.generator, reps, FAMILY[diffusion][1])
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


def prepare(b: Setup, data_root=None) -> Setup:
    """The data (resident on the device, as the jobs keep it; synthetic where the set is not here), a teacher
    and a student of the preset."""
    torch.manual_seed(0)
    name = DATA_FOR[b.preset]
    try:
        data = core_data.load(name, root=data_root) if name in ("digits", "toy2d") or data_root else None
    except core_data.DataError:
        data = None
    b.shape = data.shape if data else core_data.SHAPES[name]
    b.data = (data or synthetic_data(name, b.shape)).to(b.device)
    b.family = build_family(FAMILY[b.diffusion][0])
    b.teacher = DiffusionModel(b.preset, b.shape, b.family).use_fast_paths(b.device, b.compile)
    b.student = DiffusionModel(b.preset, b.shape, b.family).use_fast_paths(b.device, b.compile)
    b.generator = torch.Generator().manual_seed(0)
    return b


def train_figures(b: Setup, device_name: str) -> dict:
    """A teacher-training step (time, images/s, TFLOP/s, MFU on a known GPU) and a frozen forward."""
    data, g, family, batch, device = b.data, b.generator, b.family, b.batch, b.device
    opt = torch.optim.Adam(b.student.parameters(), lr=1e-4, fused=device == "cuda")

    def train_step():
        x = data.batch(batch, g).to(device)
        loss = denoising_loss(b.student, x, family.train_times(batch, g).to(device),
                              torch.randn(x.shape, generator=g).to(device), FAMILY[b.diffusion][1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"train_step_s": per_call(train_step, b.reps, device)}
    out["train_images_per_s"] = batch / out["train_step_s"]
    flops = step_flops(DiffusionModel(b.preset, b.shape, family).use_fast_paths(device), data.batch(batch, g),
                       family.train_times(batch, g).to(device))
    out["train_tflops_per_s"] = flops / out["train_step_s"] / 1e12
    peak = peak_tflops(device_name) if device == "cuda" else None
    if peak:
        out["mfu"] = out["train_tflops_per_s"] / peak  # of the dense bf16 peak
    frozen = b.teacher.eval().requires_grad_(False)
    x_fixed, t_fixed = data.batch(batch, g).to(device), family.train_times(batch, g).to(device)

    def frozen_forward():
        with torch.inference_mode():
            frozen.x_hat(x_fixed, t_fixed)

    out["frozen_forward_s"] = per_call(frozen_forward, b.reps, device)
    # what the ratios cannot beat on this device: the student's step plus the frozen forwards of a
    # target (a DDIM teacher step and the self-teacher's jump: 2; a Heun teacher step costs one more)
    out["floor_ratio"] = 1.0 + (3 if b.diffusion == "edm" else 2) * out["frozen_forward_s"] / out["train_step_s"]
    return out


def distill_figures(b: Setup, steps: int, train_step_s: float) -> dict:
    """BTD's and TRACT's step: time, ratio to a training step, images/s."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("btd", "tract"):
            cfg = DistillConfig(method=method, schedule=[2 * steps, steps], batch_size=b.batch, checkpoint_every=0,
                                compile=b.compile, weighting=FAMILY[b.diffusion][2])
            d = Distiller(b.teacher, b.data, cfg, Path(tmp), device=b.device, progress=False)

            def distill_step():
                loss = d.loss(2 * steps, steps)
                d.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                d.optimizer.step()
                if d.self_teacher is not None:
                    d.self_teacher.update(d.student)

            out[f"{method}_step_s"] = per_call(distill_step, b.reps, b.device)
            out[f"{method}_ratio"] = out[f"{method}_step_s"] / train_step_s
            out[f"{method}_images_per_s"] = b.batch / out[f"{method}_step_s"]
    return out


def sampler_figures(b: Setup, steps: int) -> dict:
    """The sampler's overhead over bare network calls, and 1-step sampling throughput."""
    teacher, device, reps = b.teacher.eval(), b.device, b.reps
    noise = torch.randn((b.batch, *b.shape), device=device)
    t_sample = per_call(lambda: teacher.sample(noise, steps), max(2, reps // 4), device, warmup=1)
    grid = torch.zeros(b.batch, device=device)  # the network's noise-level input (its value costs nothing)
    calls = 2 * steps - 1 if getattr(teacher.family, "sampler", "ddim") == "heun" else steps

    def bare():
        with torch.no_grad():
            for _ in range(calls):
                teacher.net(noise, grid)

    t_bare = per_call(bare, max(2, reps // 4), device, warmup=1)
    return {"sampler_overhead": t_sample / t_bare - 1.0,
            "sampling_images_per_s_1step": b.batch / per_call(lambda: teacher.sample(noise, 1), reps, device)}
