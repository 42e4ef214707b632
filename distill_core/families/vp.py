"""The variance-preserving cosine family of both papers (DESIGN 3.1-3.5).

Time t in [0, 1] through the clipped log-SNR of the cosine schedule; an N-step grid is t = i / N,
so every coarser grid is a sub-grid of a finer one; the network predicts eps, x, both or v
(`parameterization`) and is conditioned on log-SNR; teacher training draws t ~ U[0, 1]; models
sample with DDIM.
"""
import torch

from .. import parameterization as param
from ..schedules import LOGSNR_MAX, LOGSNR_MIN, alpha_sigma, alpha_sigma_from_logsnr, expand, logsnr_cosine
from .base import NoiseFamily


class VP(NoiseFamily):
    name = "vp"

    def __init__(self, parameterization: str = "v", logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX,
                 sampler: str = "ddim", t0: str = "exact"):
        """`t0`: the data end t = 0 at (alpha, sigma) = (1, 0) exactly (`exact`, PD's sampler) or at the
        clipped log-SNR logsnr_max like every other time (`clipped`, apple/ml-tract: lambda(0) = 20)."""
        if t0 not in ("exact", "clipped"):
            raise ValueError(f"diffusion.t0 must be one of exact, clipped; got {t0!r}")
        self.t0 = t0
        if parameterization not in param.PARAMETERIZATIONS:
            raise ValueError(f"distill.parameterization must be one of {', '.join(param.PARAMETERIZATIONS)} "
                             f"with diffusion=vp; got {parameterization!r}")
        if sampler not in self.samplers:
            raise ValueError(f"diffusion.teacher_sampler must be ddim with diffusion=vp; got {sampler!r}")
        if not logsnr_min < logsnr_max:
            raise ValueError(f"diffusion.logsnr_min must be below logsnr_max; got {logsnr_min}, {logsnr_max}")
        self.parameterization, self.logsnr_min, self.logsnr_max = parameterization, float(logsnr_min), float(logsnr_max)

    def config(self) -> dict:
        extra = {"t0": self.t0} if getattr(self, "t0", "exact") != "exact" else {}  # (configs saved before the key read as exact)
        return dict(family=self.name, parameterization=self.parameterization, logsnr_min=self.logsnr_min,
                    logsnr_max=self.logsnr_max, **extra)

    @property
    def output_heads(self) -> int:
        return param.output_heads(self.parameterization)

    def logsnr(self, t):
        return logsnr_cosine(t, self.logsnr_min, self.logsnr_max)

    def alpha_sigma(self, t):
        if getattr(self, "t0", "exact") == "clipped":  # (VP families pickled before the key: exact)
            return alpha_sigma_from_logsnr(self.logsnr(t))
        return alpha_sigma(t, self.logsnr_min, self.logsnr_max)

    def time(self, index, grid):
        return index.to(torch.get_default_dtype()) / grid

    def train_times(self, batch, generator):
        return torch.rand(batch, generator=generator)

    def denoise(self, net, z, t):
        logsnr = self.logsnr(t)
        alpha, sigma = (expand(v, z) for v in alpha_sigma_from_logsnr(logsnr))
        return param.x_from_output(self.parameterization, net(z, logsnr), z, alpha, sigma)

    def output_target(self, x, eps, t):
        alpha, sigma = (expand(v, x) for v in alpha_sigma_from_logsnr(self.logsnr(t)))
        return param.output_from_target(self.parameterization, x, eps, alpha, sigma)
