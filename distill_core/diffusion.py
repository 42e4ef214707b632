"""`DiffusionModel`: a network plus the noise family that reads it.

It is the object users save, load, register and call: `sample(noise, steps)` runs the model's own
deterministic sampler (DDIM for VP models and distilled students, Heun by default for EDM teachers)
from standard normal noise, on whatever device the model and the noise are on. It carries its
family's config (parameterisation or preconditioning, grid, sampler), the step counts it was
distilled for and how it was made (`info`), so registered teachers and students of either family
load and sample the same way.

A class-conditional model (its network built with `num_classes`) takes one class index per sample wherever
the network is called: `sample(noise, steps, labels=...)`, `x_hat(z, t, labels=...)`; `conditioned(labels)`
is the same model with its labels bound, which is what families and methods call (DESIGN 3.10: teacher,
self-teacher and student of one update see the same labels).
"""
import copy
from typing import Optional

import torch
from torch import nn

from . import families
from .models import build_network
from .samplers import run_ancestral


def plain_call(net: nn.Module, z: torch.Tensor, cond: torch.Tensor, labels=None) -> torch.Tensor:
    return net(z, cond) if labels is None else net(z, cond, labels)


_compiled = None
PRECISIONS = ("bf16", "fp32")


def compiled_call(net: nn.Module, z: torch.Tensor, cond: torch.Tensor, labels=None) -> torch.Tensor:
    """One compiled function for every network: with inlined nn.Modules (torch >= 2.5) the modules
    are inputs, not guards, so teacher, student and EMA copies of one architecture share graphs.
    Built on first use, so importing this module stays cheap."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(plain_call)
    return _compiled(net, z, cond, labels)


class DiffusionModel(nn.Module):
    def __init__(self, preset: str, data_shape: tuple, family=None, network_overrides: Optional[dict] = None,
                 info: Optional[dict] = None):
        """`family`: a NoiseFamily or its plain config (default: VP with v-prediction)."""
        super().__init__()
        self.family = families.build(family)
        self.config = dict(preset=preset, data_shape=tuple(data_shape),
                           network_overrides=dict(network_overrides or {}))
        self.info = dict(info or {})  # method, distilled step counts, dataset ... (plain values)
        self.amp = True  # bf16 autocast of the network on CUDA (no effect on the CPU)
        self.compiled = False  # torch.compile the network call (`use_fast_paths`); a runtime choice, not saved
        self.net = build_network(preset, data_shape[0], self.family.output_heads, **self.config["network_overrides"])

    def __setstate__(self, state):
        """Models pickled before noise families existed (registered VP models) get their VP family."""
        super().__setstate__(state)
        if "family" not in self.__dict__:
            self.family = families.build(families.legacy_config(self.config))

    @property
    def parameterization(self) -> str:
        return self.family.parameterization

    @property
    def data_shape(self) -> tuple:
        return self.config["data_shape"]

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of a class-conditional model; None for an unconditional one."""
        return getattr(self.net, "num_classes", None) or None

    def check_labels(self, labels, n: int) -> Optional[torch.Tensor]:
        """`labels` as a long tensor of `n` class indices in [0, num_classes), or None for an unconditional
        model; ValueError (one line) for labels a model cannot take."""
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("labels given to an unconditional model (model.num_classes is null); leave them out")
            return None
        if labels is None:
            raise ValueError(f"this model is class-conditional on {self.num_classes} classes: pass labels, "
                             f"one class index per sample")
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or tuple(labels.shape) != (n,):
            raise ValueError(f"labels must be {n} integer class indices (one per sample); got shape "
                             f"{tuple(labels.shape)} of {labels.dtype}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}); got {int(labels.min())}..{int(labels.max())}")
        return labels.long().to(self._device())

    def conditioned(self, labels) -> "DiffusionModel":
        """This model with `labels` bound to every network call (itself when `labels` is None)."""
        return self if labels is None else Conditioned(self, labels)

    def _net(self, z: torch.Tensor, cond: torch.Tensor, labels=None) -> torch.Tensor:
        if z.dtype == torch.float64:  # double-precision arithmetic around a float32 network (target_precision)
            return self._net(z.float(), cond.float(), labels).double()
        if (labels is None) != (self.num_classes is None):
            self.check_labels(labels, len(z))  # (raises: conditional without labels, or the reverse)
        call = compiled_call if getattr(self, "compiled", False) else plain_call
        if z.is_cuda and getattr(self, "amp", True):  # bf16 autocast for the network only, on CUDA
            if z.dim() == 4:  # channels_last: the fast convolution layout under bf16
                z = z.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = call(self.net, z, cond, labels)
            return out.float()  # keeps channels_last: everything after is elementwise
        return call(self.net, z, cond, labels)

    def x_hat(self, z: torch.Tensor, t: torch.Tensor, clip: bool = False, labels=None) -> torch.Tensor:
        """The model's estimate of the clean data at time t (optionally clipped to [-1, 1])."""
        net = self._net if labels is None else (lambda z_, cond: self._net(z_, cond, labels))
        x = self.family.denoise(net, z, t)
        return x.clamp(-1.0, 1.0) if clip else x

    def use_fast_paths(self, device, compile: bool = False, precision: str = "bf16") -> "DiffusionModel":
        """Move to `device`; on CUDA with images, keep the weights channels_last (the inputs follow
        in `_net`); optionally compile the network call (graphs are built on first use). `precision`:
        bf16 autocast of the network on CUDA, or fp32; the family's arithmetic (targets, inversions)
        stays float32 either way, outside autocast."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.amp = precision == "bf16"
        self.to(device)
        if str(device).startswith("cuda") and len(self.data_shape) == 3:
            self.to(memory_format=torch.channels_last)
        self.compiled = compile
        return self

    def denoiser(self, clip: bool, labels=None):
        return lambda z, t: self.x_hat(z, t, clip, labels)

    def step(self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, clip: bool = False, labels=None) -> torch.Tensor:
        """One step t -> s of this model's own sampler (how it samples, and how it teaches)."""
        return self.family.step(self.denoiser(clip, labels), z, t, s)

    def jump(self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, clip: bool = False, labels=None) -> torch.Tensor:
        """One DDIM jump t -> s (a student's step, whatever this model samples with)."""
        return self.family.ddim_step(self.denoiser(clip, labels), z, t, s)

    def _device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, clip: bool = True, labels=None,
               progress: Optional[str] = None) -> torch.Tensor:
        """Deterministic `steps`-step sampling from `noise` ~ N(0, I) of shape (B, *data_shape); `labels`: one
        class index per sample, for a class-conditional model (and only for one); `progress`: a progress bar with
        this label (on a terminal)."""
        if tuple(noise.shape[1:]) != self.data_shape:
            raise ValueError(f"noise must have shape (B, {', '.join(map(str, self.data_shape))}); got {tuple(noise.shape)}")
        model = self.conditioned(self.check_labels(labels, len(noise)))
        was_training = self.training
        self.eval()
        try:
            return self.family.sample_loop(model, noise.to(self._device()), steps, clip, progress)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample_ancestral(self, noise: torch.Tensor, steps: int, gamma: float = 1.0,
                         generator: Optional[torch.Generator] = None, clip: bool = True, labels=None) -> torch.Tensor:
        model = self.conditioned(self.check_labels(labels, len(noise)))
        self.eval()
        noise = noise.to(self._device())
        return run_ancestral(self.family, model.denoiser(clip), self.family.prior(noise),
                             self.family.sampling_times(steps, noise.device), gamma, generator)

    # --- plain-data persistence (loads with torch.load(weights_only=True)) ---
    def to_state(self) -> dict:
        return {"config": {**copy.deepcopy(self.config), "family": self.family.config()},
                "info": copy.deepcopy(self.info),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict) -> "DiffusionModel":
        config = dict(state["config"])
        if "family" not in config:  # saved before noise families existed
            config = {"family": families.legacy_config(config),
                      **{k: v for k, v in config.items() if k not in ("parameterization", "logsnr_min", "logsnr_max")}}
        model = cls(**config, info=state.get("info"))
        model.load_state_dict(state["state_dict"])
        return model

    def save(self, path) -> None:
        from .checkpoint import save_atomic
        save_atomic(self.to_state(), path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "DiffusionModel":
        from .checkpoint import load_checked
        return cls.from_state(load_checked(path, map_location))


class Conditioned:
    """A `DiffusionModel` with its labels bound: the calls families and methods make (`_net`, `x_hat`,
    `denoiser`, `step`, `jump`) pass the same labels to the network every time; anything else is the model's."""

    def __init__(self, model: DiffusionModel, labels: torch.Tensor):
        self.model, self.labels = model, labels

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _net(self, z, cond):
        return self.model._net(z, cond, self.labels)

    def x_hat(self, z, t, clip: bool = False):
        return self.model.x_hat(z, t, clip, self.labels)

    def denoiser(self, clip: bool):
        return self.model.denoiser(clip, self.labels)

    def step(self, z, t, s, clip: bool = False):
        return self.model.step(z, t, s, clip, self.labels)

    def jump(self, z, t, s, clip: bool = False):
        return self.model.jump(z, t, s, clip, self.labels)
