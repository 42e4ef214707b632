"""`DiffusionModel`: a network plus what is needed to read it (parameterisation, schedule).

It is the object users save, load, register and call: `sample(noise, steps)` runs
deterministic DDIM, on whatever device the model and the noise are on. It carries the
step counts it was distilled for and how it was made (`info`), so a registered teacher and
a registered student load and sample the same way.
"""
import copy
from typing import Optional

import torch
from torch import nn

from . import parameterization as param
from .models import build_network
from .samplers import ancestral_sample, ddim_sample
from .schedules import LOGSNR_MAX, LOGSNR_MIN, alpha_sigma_from_logsnr, expand, logsnr_cosine


def plain_call(net: nn.Module, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    return net(z, logsnr)


_compiled = None


def compiled_call(net: nn.Module, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """One compiled function for every network: with inlined nn.Modules (torch >= 2.5) the modules
    are inputs, not guards, so teacher, student and EMA copies of one architecture share graphs.
    Built on first use, so importing this module stays cheap."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(plain_call)
    return _compiled(net, z, logsnr)


class DiffusionModel(nn.Module):
    def __init__(self, preset: str, data_shape: tuple, parameterization: str = "v",
                 logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX,
                 network_overrides: Optional[dict] = None, info: Optional[dict] = None):
        super().__init__()
        param.check(parameterization)
        self.config = dict(preset=preset, data_shape=tuple(data_shape), parameterization=parameterization,
                           logsnr_min=logsnr_min, logsnr_max=logsnr_max,
                           network_overrides=dict(network_overrides or {}))
        self.info = dict(info or {})  # method, distilled step counts, dataset ... (plain values)
        self.amp = True  # bf16 autocast of the network on CUDA (no effect on the CPU)
        self.compiled = False  # torch.compile the network call (`use_fast_paths`); a runtime choice, not saved
        self.net = build_network(preset, data_shape[0], param.output_heads(parameterization),
                                 **self.config["network_overrides"])

    @property
    def parameterization(self) -> str:
        return self.config["parameterization"]

    @property
    def data_shape(self) -> tuple:
        return self.config["data_shape"]

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        return logsnr_cosine(t, self.config["logsnr_min"], self.config["logsnr_max"])

    def x_hat(self, z: torch.Tensor, t: torch.Tensor, clip: bool = False) -> torch.Tensor:
        """The model's estimate of the clean data at time t (optionally clipped to [-1, 1])."""
        logsnr = self.logsnr(t)
        alpha, sigma = (expand(v, z) for v in alpha_sigma_from_logsnr(logsnr))
        net = compiled_call if getattr(self, "compiled", False) else plain_call
        if z.is_cuda and getattr(self, "amp", True):  # bf16 autocast for the network only, on CUDA
            if z.dim() == 4:  # channels_last: the fast convolution layout under bf16
                z = z.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = net(self.net, z, logsnr)
            out = out.float()  # keeps channels_last: everything after is elementwise
        else:
            out = net(self.net, z, logsnr)
        x = param.x_from_output(self.parameterization, out, z, alpha, sigma)
        return x.clamp(-1.0, 1.0) if clip else x

    def use_fast_paths(self, device, compile: bool = False) -> "DiffusionModel":
        """Move to `device`; on CUDA with images, keep the weights channels_last (the inputs follow
        in `x_hat`); optionally compile the network call (graphs are built on first use)."""
        self.to(device)
        if str(device).startswith("cuda") and len(self.data_shape) == 3:
            self.to(memory_format=torch.channels_last)
        self.compiled = compile
        return self

    def denoiser(self, clip: bool):
        return lambda z, t: self.x_hat(z, t, clip)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, clip: bool = True) -> torch.Tensor:
        """Deterministic `steps`-step DDIM from `noise` (shape (B, *data_shape)) to data."""
        if tuple(noise.shape[1:]) != self.data_shape:
            raise ValueError(f"noise must have shape (B, {', '.join(map(str, self.data_shape))}); got {tuple(noise.shape)}")
        was_training = self.training
        self.eval()
        try:
            return ddim_sample(self.denoiser(clip), noise.to(next(self.parameters()).device), steps)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample_ancestral(self, noise: torch.Tensor, steps: int, gamma: float = 1.0,
                         generator: Optional[torch.Generator] = None, clip: bool = True) -> torch.Tensor:
        self.eval()
        return ancestral_sample(self.denoiser(clip), noise, steps, gamma, generator)

    # --- plain-data persistence (loads with torch.load(weights_only=True)) ---
    def to_state(self) -> dict:
        return {"config": copy.deepcopy(self.config), "info": copy.deepcopy(self.info),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict) -> "DiffusionModel":
        model = cls(**state["config"], info=state.get("info"))
        model.load_state_dict(state["state_dict"])
        return model

    def save(self, path) -> None:
        from .checkpoint import save_atomic
        save_atomic(self.to_state(), path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "DiffusionModel":
        from .checkpoint import load_checked
        return cls.from_state(load_checked(path, map_location))
