"""Teacher training: the continuous-time denoising objective (DESIGN 3.5, 3.8).

t from the family's training draw (VP: t ~ U[0, 1]; EDM: ln sigma ~ N(p_mean, p_std^2)),
z_t = alpha_t x + sigma_t eps, loss w(t) ||x_hat(z_t) - x||^2 with the family's parameterisation
or preconditioning and the configured weighting; Adam with warm-up, gradient clipping and a
bias-corrected EMA of the weights, which is the teacher that is returned. Deterministic on
CPU for a given seed; resumable from its checkpoint. A class-conditional teacher (`num_classes`) trains on
(x, y) pairs drawn uniformly, the network seeing each example's label. Under data parallelism (`placement`) every
rank draws the global batch and trains on its slice; rank 0 reports and checkpoints.
"""
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from . import rng
from .callbacks import Callback
from .checkpoint import CheckpointError, load_checked, save_atomic
from .data import TensorData
from .diffusion import DiffusionModel
from .ema import EMA
from .loop import LoopSettings, run_updates
from .placement import Single
from .families import build as build_family
from .weighting import check as check_weighting


@dataclass
class TeacherConfig:
    preset: str = "unet_tiny"
    parameterization: str = "v"
    weighting: str = "snr_plus_one"
    updates: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.999
    dropout: Optional[float] = None  # None: the preset's
    width: Optional[int] = None  # None: the preset's (U-Net base channels, MLP hidden units)
    num_classes: Optional[int] = None  # None: unconditional; K: class-conditional on K classes
    seed: int = 0
    checkpoint_every: int = 500
    compile: bool = False  # torch.compile the network call: a speed choice, not part of the teacher's identity
    precision: str = "bf16"  # the network's precision on CUDA (bf16 autocast or fp32); no effect on the CPU
    family: dict = field(default_factory=lambda: {"family": "vp"})  # the noise family (`parameterization` joins it)

    def noise_family(self):
        return build_family({**self.family, "parameterization": self.parameterization})

    def network_overrides(self) -> dict:
        """(`num_classes` only when set: an unconditional teacher's config is what it always was)"""
        return {"dropout": self.dropout, "width": self.width, **({"num_classes": self.num_classes}
                                                                  if self.num_classes else {})}


def denoising_loss(model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, weighting: str,
                   labels=None) -> torch.Tensor:
    family = model.family
    return family.loss(weighting, t, model.x_hat(family.noise(x, t, eps), t, labels=labels), x)


def resume_state(checkpoint_path, device):
    """The training state to resume from, or None (none yet, or a damaged file: a warning, then from scratch)."""
    if checkpoint_path is None or not Path(checkpoint_path).exists():
        return None
    try:
        return load_checked(checkpoint_path, map_location=device)
    except CheckpointError as e:
        logging.getLogger(__name__).warning("%s; training the teacher from the start", e)
        return None


def train_teacher(data: TensorData, cfg: TeacherConfig, callback: Optional[Callback] = None,
                  checkpoint_path: Optional[Path] = None, device: str = "cpu", progress: bool = True,
                  placement=None) -> DiffusionModel:
    """Train (or resume training) a teacher; returns its EMA weights as a DiffusionModel."""
    check_weighting(cfg.weighting)
    placement = placement or Single()
    callback = callback if callback is not None and placement.is_main else Callback()
    progress = progress and placement.is_main
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = DiffusionModel(cfg.preset, data.shape, cfg.noise_family(), network_overrides=cfg.network_overrides(),
                           info={"role": "teacher", "method": "teacher", "dataset": data.name,
                                 "teacher_config": asdict(cfg)}).use_fast_paths(device, cfg.compile, cfg.precision)
    ema = EMA(model, cfg.ema)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=str(device).startswith("cuda"))
    start = 0
    state = resume_state(checkpoint_path, device)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        rng.restore(state["rng"], generator)
        start = state["step"]

    def save(step: int) -> None:
        if checkpoint_path is None or not placement.is_main:
            return
        callback.on_save("teacher")
        digest = save_atomic({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                              "step": step, "rng": rng.capture(generator)}, checkpoint_path)
        callback.on_checkpoint(Path(checkpoint_path), digest, "teacher")

    x_hat = placement.wrap(model)

    def loss_fn() -> torch.Tensor:  # the global batch is drawn on every rank; each trains on its slice
        x, y = data.draw(cfg.batch_size, generator)
        x = placement.shard(x).to(device)
        t = placement.shard(model.family.train_times(cfg.batch_size, generator)).to(device)
        eps = placement.shard(torch.randn((cfg.batch_size, *data.shape), generator=generator)).to(device)
        z = model.family.noise(x, t, eps)
        if not model.num_classes:
            return model.family.loss(cfg.weighting, t, x_hat(z, t), x)
        return model.family.loss(cfg.weighting, t, x_hat(z, t, labels=placement.shard(y).to(device)), x)

    settings = LoopSettings(updates=cfg.updates, lr=cfg.lr, warmup=cfg.warmup, grad_clip=cfg.grad_clip,
                            checkpoint_every=cfg.checkpoint_every, desc="teacher", metric_prefix="teacher",
                            progress=progress)
    if start < cfg.updates:
        run_updates(model, optimizer, loss_fn, settings, start=start, emas=[ema], callback=callback, save_checkpoint=save,
                    placement=placement)
        save(cfg.updates)
    placement.check_in_step("teacher EMA", ema)
    teacher = ema.module
    teacher.info = dict(model.info, updates=cfg.updates)
    return teacher.eval()
