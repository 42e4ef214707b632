"""Data-parallel scaling: TRACT's step time and images/s on 1..N ranks, and the efficiency."""
import tempfile
import time
from pathlib import Path

import torch

from distill_core import data as core_data
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller
from distill_core.families import build as build_family
from distill_core.loop import LoopSettings, run_updates

from .timing import DATA_FOR, FAMILY, synthetic_data, sync


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
    from ...ranks.launch import Ranks
    name = DATA_FOR[preset]
    shape = core_data.SHAPES[name]
    out = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "preset": preset,
           "batch_per_rank": batch, "diffusion": diffusion, "precision": precision, "data": name}
    for n in range(1, devices + 1):
        step = Ranks(n, device).run(_scaling_task, preset, shape, batch, reps, diffusion, precision)
        out[f"ranks{n}_step_s"] = step
        out[f"ranks{n}_images_per_s"] = batch * n / step
        out[f"ranks{n}_efficiency"] = out[f"ranks{n}_images_per_s"] / (n * out["ranks1_images_per_s"])
    return out
