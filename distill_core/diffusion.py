"""`DiffusionModel`: a network plus the noise family that reads it.

It is the object users save, load, register and call: `sample(noise, steps)` runs the model's own
deterministic sampler (DDIM for VP models and distilled students, Heun by default for EDM teachers)
from standard normal noise, on whatever device the model and the noise are on. It carries its
family's config (parameterisation or preconditioning, grid, sampler), the step counts it was
distilled for and how it was made (`info`), so registered teachers and students of either family
load and sample the same way.
"""
import copy
from typing import Optional

import torch
from torch import nn

from . import families
from .models import build_network
from .samplers import run, run_ancestral


def plain_call(net: nn.Module, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return net(z, cond)


_compiled = None
PRECISIONS = ("bf16", "fp32")


def compiled_call(net: nn.Module, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """One compiled function for every network: with inlined nn.Modules (torch >= 2.5) the modules
    are inputs, not guards, so teacher, student and EMA copies of one architecture share graphs.
    Built on first use, so importing this module stays cheap."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(plain_call)
    return _compiled(net, z, cond)


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

    def _net(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if z.dtype == torch.float64:  # double-precision arithmetic around a float32 network (target_precision)
            return self._net(z.float(), cond.float()).double()
        call = compiled_call if getattr(self, "compiled", False) else plain_call
        if z.is_cuda and getattr(self, "amp", True):  # bf16 autocast for the network only, on CUDA
            if z.dim() == 4:  # channels_last: the fast convolution layout under bf16
                z = z.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = call(self.net, z, cond)
            return out.float()  # keeps channels_last: everything after is elementwise
        return call(self.net, z, cond)

    def x_hat(self, z: torch.Tensor, t: torch.Tensor, clip: bool = False) -> torch.Tensor:
        """The model's estimate of the clean data at time t (optionally clipped to [-1, 1])."""
        x = self.family.denoise(self._net, z, t)
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

    def denoiser(self, clip: bool):
        return lambda z, t: self.x_hat(z, t, clip)

    def step(self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, clip: bool = False) -> torch.Tensor:
        """One step t -> s of this model's own sampler (how it samples, and how it teaches)."""
        return self.family.step(self.denoiser(clip), z, t, s)

    def jump(self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, clip: bool = False) -> torch.Tensor:
        """One DDIM jump t -> s (a student's step, whatever this model samples with)."""
        return self.family.ddim_step(self.denoiser(clip), z, t, s)

    def _device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, clip: bool = True) -> torch.Tensor:
        """Deterministic `steps`-step sampling from `noise` ~ N(0, I) of shape (B, *data_shape)."""
        if tuple(noise.shape[1:]) != self.data_shape:
            raise ValueError(f"noise must have shape (B, {', '.join(map(str, self.data_shape))}); got {tuple(noise.shape)}")
        was_training = self.training
        self.eval()
        try:
            noise = noise.to(self._device())
            return run(lambda z, t, s: self.family.sample_step(self, z, t, s, clip), self.family.prior(noise),
                       self.family.sampling_times(steps, noise.device), self.denoiser(clip))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample_ancestral(self, noise: torch.Tensor, steps: int, gamma: float = 1.0,
                         generator: Optional[torch.Generator] = None, clip: bool = True) -> torch.Tensor:
        self.eval()
        noise = noise.to(self._device())
        return run_ancestral(self.family, self.denoiser(clip), self.family.prior(noise),
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
