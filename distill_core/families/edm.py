"""The EDM / variance-exploding family (Karras et al. 2022; TRACT section 3; DESIGN 3.8).

The time variable is sigma itself: x_sigma = x + sigma eps (alpha = 1). An N-step grid is EDM's
rho-spaced one, sigma_max ... sigma_min then 0 (index i >= 1 of N: (sigma_min^(1/rho) + (i - 1) /
(N - 1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho, as apple/ml-tract's `tc_distill_edm.py`
indexes it). Unlike VP, a coarse EDM grid is not a sub-grid of a fine one, so a student distilled
on a `grid_base`-step grid walks that grid's sub-grids (`for_student`), in sampling and as a teacher.

The denoiser is EDM's preconditioned D(x; sigma) = c_skip x + c_out F(c_in x, c_noise). The
network's noise-level input is -8 c_noise = -2 ln sigma, the log-SNR of a unit-scale signal at
noise sigma, so the one log-SNR embedding of our networks serves both families. Teacher training
draws ln sigma ~ N(p_mean, p_std^2); EDM's loss weight is `weighting=edm`. Teachers sample with
Heun (EDM Algorithm 1, S_churn = 0), Euler or the DDIM-VE jump (`sampler`); students with DDIM-VE.
"""
import math

import torch

from ..samplers import euler_step, heun_step
from ..schedules import expand
from .base import NoiseFamily


class EDM(NoiseFamily):
    name = "edm"
    samplers = ("heun", "euler", "ddim")

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, sigma_data: float = 0.5,
                 p_mean: float = -1.2, p_std: float = 1.2, sampler: str = "heun", grid_base=None,
                 parameterization: str = "edm"):
        numbers = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, sigma_data=sigma_data, p_mean=p_mean,
                       p_std=p_std)
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"diffusion.{key} must be a finite number; got {value!r}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"diffusion.sigma_min and sigma_max must satisfy 0 < sigma_min < sigma_max; "
                             f"got sigma_min={sigma_min}, sigma_max={sigma_max}")
        for key in ("rho", "sigma_data", "p_std"):
            if not numbers[key] > 0:
                raise ValueError(f"diffusion.{key} must be > 0; got {numbers[key]}")
        if sampler not in self.samplers:
            raise ValueError(f"diffusion.teacher_sampler must be one of {', '.join(self.samplers)}; got {sampler!r}")
        if parameterization != "edm":
            raise ValueError(f"distill.parameterization must be edm with diffusion=edm (EDM's preconditioned "
                             f"denoiser); got {parameterization!r}")
        if grid_base is not None and (isinstance(grid_base, bool) or not isinstance(grid_base, int) or grid_base < 1):
            raise ValueError(f"grid_base must be a positive integer or None; got {grid_base!r}")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.sigma_data, self.p_mean, self.p_std = float(sigma_data), float(p_mean), float(p_std)
        self.sampler, self.grid_base = sampler, grid_base
        self.parameterization = parameterization

    def config(self) -> dict:
        return dict(family=self.name, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho,
                    sigma_data=self.sigma_data, p_mean=self.p_mean, p_std=self.p_std, sampler=self.sampler,
                    grid_base=self.grid_base, parameterization=self.parameterization)

    def for_student(self, base: int) -> "EDM":
        """DDIM-VE jumps on the `base`-step grid (or on the finer grid this family already walks)."""
        keep = self.grid_base is not None and self.grid_base % int(base) == 0
        return self.replace(sampler="ddim", grid_base=self.grid_base if keep else int(base))

    # --- the process ---
    def alpha_sigma(self, t):
        return torch.ones_like(t), t

    def time(self, index, grid):
        """EDM's `grid`-step sigmas; for a student, the sub-grid of the grid it learnt on when `grid` divides it."""
        if self.grid_base is not None and self.grid_base % grid == 0:
            index, grid = index * (self.grid_base // grid), self.grid_base
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        ramp = (index.to(torch.float64) - 1).clamp(min=0) / (grid - 1) if grid > 1 else torch.ones_like(index, dtype=torch.float64)
        sigma = (lo + ramp * (hi - lo)) ** self.rho
        return torch.where(index > 0, sigma, torch.zeros_like(sigma)).to(torch.get_default_dtype())

    def train_times(self, batch, generator):
        return torch.exp(self.p_mean + self.p_std * torch.randn(batch, generator=generator))

    def prior(self, noise):
        return self.sigma_max * noise

    # --- EDM's preconditioning ---
    def c_skip(self, sigma):
        return self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)

    def c_out(self, sigma):
        return sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()

    def c_in(self, sigma):
        return 1 / (sigma ** 2 + self.sigma_data ** 2).sqrt()

    def c_noise(self, sigma):
        return 0.25 * torch.log(sigma)

    def denoise(self, net, z, t):
        c_skip, c_out, c_in = (expand(c, z) for c in (self.c_skip(t), self.c_out(t), self.c_in(t)))
        return c_skip * z + c_out * net(c_in * z, -8.0 * self.c_noise(t))

    def output_target(self, x, eps, t):
        z = self.noise(x, t, eps)
        return (x - expand(self.c_skip(t), x) * z) / expand(self.c_out(t), x)

    # --- sampling ---
    def step(self, denoise, z, t, s):
        if self.sampler == "heun":
            return heun_step(denoise, z, t, s)
        if self.sampler == "euler":
            return euler_step(denoise, z, t, s)
        return self.ddim_step(denoise, z, t, s)
