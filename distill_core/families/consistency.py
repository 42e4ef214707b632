"""A consistency model's reading of a network (DESIGN 3.12; Song, Dhariwal, Chen & Sutskever 2023), over the
teacher's own family.

The student of consistency distillation is the teacher's network read as a consistency function with the
boundary condition f(x, eps) = x. In EDM's variance-exploding terms (x_ve = z / alpha, sigma = sigma_t / alpha_t:
the identity on the edm family, the standard change of variables on vp and ddpm):

    f(z, t) = c_skip_b(sigma) x_ve + c_out_b(sigma) F,   F = (D(z, t) - c_skip(sigma) x_ve) / c_out(sigma)

where D is the inner family's denoiser (its parameterisation or EDM's preconditioning, so F is the network's raw
output on an EDM teacher), c_skip/c_out are EDM's and c_skip_b = sigma_d^2 / ((sigma - eps)^2 + sigma_d^2),
c_out_b = sigma_d (sigma - eps) / sqrt(sigma_d^2 + sigma^2) the paper's. Since c_out_b / c_out = (sigma - eps) /
sigma, f = c_skip_b x_ve + (1 - eps / sigma) (D - c_skip x_ve). eps is the sigma of the smallest nonzero time
of the teacher's `grid`-step grid (EDM's 0.002 on the edm family). A fresh student equals its teacher's
denoiser wherever sigma >> eps.

Sampling (the paper's multistep consistency sampling): x = f(z_T, T); for each chosen time tau (decreasing):
x = f(alpha_tau (x + sqrt(sigma_tau^2 - eps^2) z'), tau). The intermediate times of a k-step sample are grid
indices (`times[k]`, else evenly spaced on the grid); z' is drawn from a generator seeded by each sample's starting
noise and the step, so `sample(noise, steps)` stays deterministic for the given noise (and does not jump when the
weights change by float noise).
"""
import zlib

import torch

from ..schedules import expand
from .base import NoiseFamily


def seeds(noise: torch.Tensor) -> list:
    """A seed per sample from its starting noise's bytes: the re-noise of a sample depends on its noise alone."""
    host = noise.detach().float().cpu()
    return [zlib.crc32(host[i].numpy().tobytes()) for i in range(len(host))]


def renoise(shape: tuple, sample_seeds: list, step: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise of `shape` per sample, from a generator seeded by (its seed, the step)."""
    out = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1009 + step))
                       for seed in sample_seeds])
    return out.to(device=like.device, dtype=like.dtype)


def check_times(times: dict, grid: int) -> dict:
    """{step count: its k - 1 intermediate grid indices, decreasing, inside (0, grid)}; ValueError naming the key."""
    out = {}
    for key, indices in (times or {}).items():
        k = int(key)
        ok = isinstance(indices, (list, tuple)) and len(indices) == k - 1 and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 < i < grid for i in indices) and \
            all(a > b for a, b in zip(indices, list(indices)[1:]))
        if k < 2 or not ok:
            raise ValueError(f"distill.cd_times: {k} steps take {k - 1} grid indices, decreasing, each in "
                             f"1..{grid - 1} (the grid's {grid} is the noise end); got {indices!r}")
        out[str(k)] = [int(i) for i in indices]
    return out


class Consistency(NoiseFamily):
    name = "consistency"

    def __init__(self, inner=None, grid: int = 18, times: dict = None):
        from . import build
        self.inner = build(inner)
        if isinstance(self.inner, Consistency) or isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
            raise ValueError(f"a consistency reading needs a noise family and a grid of >= 2 steps; got {grid!r}")
        self.grid, self.times = grid, check_times(times, grid)
        self.sigma_data = self.inner.sigma_data
        self.eps = float(self.sigma_ve(self.inner.time(torch.ones(1, dtype=torch.long), grid))[0])

    def config(self) -> dict:
        return dict(family=self.name, inner=self.inner.config(), grid=self.grid, times=dict(self.times))

    @property
    def parameterization(self) -> str:
        return self.inner.parameterization

    @property
    def output_heads(self) -> int:
        return self.inner.output_heads

    # --- the process is the inner family's ---
    def alpha_sigma(self, t):
        return self.inner.alpha_sigma(t)

    def logsnr(self, t):
        return self.inner.logsnr(t)

    def time(self, index, grid):
        return self.inner.time(index, grid)

    def train_times(self, batch, generator):
        return self.inner.train_times(batch, generator)

    def prior(self, noise):
        return self.inner.prior(noise)

    def output_target(self, x, eps, t):
        return self.inner.output_target(x, eps, t)

    def sigma_ve(self, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.inner.alpha_sigma(t)
        return sigma / alpha

    # --- the consistency function ---
    def denoise(self, net, z, t):
        alpha, sigma = (expand(v, z) for v in self.inner.alpha_sigma(t))
        s, x = sigma / alpha, z / alpha
        d2 = self.sigma_data ** 2
        c_skip, c_skip_b = d2 / (s ** 2 + d2), d2 / ((s - self.eps) ** 2 + d2)
        return c_skip_b * x + (1 - self.eps / s) * (self.inner.denoise(net, z, t) - c_skip * x)

    # --- multistep consistency sampling ---
    def sampling_times(self, steps: int, device=None) -> torch.Tensor:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer; got {steps!r}")
        middle = self.times.get(str(steps)) or [round(self.grid - j * (self.grid - 1) / steps) for j in range(1, steps)]
        index = torch.tensor([self.grid, *middle, 0], device=device)
        return self.inner.time(index, self.grid)

    def sample_loop(self, model, noise, steps: int, clip: bool, progress=None) -> torch.Tensor:
        """x = f(z_T, T); then for each chosen time tau: x = f(alpha_tau (x + sqrt(sigma_tau^2 - eps^2) z'), tau),
        z' drawn per sample from its starting noise (stable under float noise in the weights)."""
        times, batch, own = self.sampling_times(steps, noise.device), len(noise), seeds(noise)
        z = self.prior(noise)
        for j in range(len(times) - 1):
            x = model.x_hat(z, times[j].expand(batch), clip)
            if float(times[j + 1]) == 0.0:
                return x
            alpha, sigma = (expand(v, z) for v in self.inner.alpha_sigma(times[j + 1].expand(batch)))
            spread = ((sigma / alpha) ** 2 - self.eps ** 2).clamp(min=0).sqrt()
            z = alpha * (x + spread * renoise(tuple(noise.shape[1:]), own, j, z))
        return z
