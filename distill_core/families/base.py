"""What every noise family shares: the Gaussian path z = alpha_t x + sigma_t eps.

A family says how its time variable maps to (alpha, sigma), where its N-step sampler puts its
times, how training draws a time, how the network's output becomes x_hat (parameterisation or
preconditioning) and which step its models sample with. Everything written on the Gaussian path
is here, once: noising, the DDIM jump and its inversion into a target (VP: DESIGN 3.4/3.6; with
alpha = 1 they are TRACT's DDIM-VE step and target, 3.8), PD's ancestral step and the loss
weights. The time t = 0 is the data end, where (alpha, sigma) = (1, 0) exactly, so a jump to
t = 0 returns x_hat and the inversion at t = 0 returns its endpoint.
"""
from typing import Callable, Optional

import torch

from .. import weighting as core_weighting
from ..schedules import expand

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z, t) -> x_hat
NetCall = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (network input, noise-level input) -> output


class NoiseFamily:
    name = "?"
    samplers: tuple = ("ddim",)
    sigma_data = 0.5  # data scale in model space ([-1, 1] images); used by the `edm` loss weight

    # --- what a family defines ---
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return 2.0 * (torch.log(alpha) - torch.log(sigma))

    def time(self, index: torch.Tensor, grid: int) -> torch.Tensor:
        """The time of integer `index` on an N = `grid`-step grid (index 0 is the data, N the noise end)."""
        raise NotImplementedError

    def train_times(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Teacher training's time draw (B,), from `generator`."""
        raise NotImplementedError

    def prior(self, noise: torch.Tensor) -> torch.Tensor:
        """The sampler's starting point from standard normal noise."""
        return noise

    def denoise(self, net: NetCall, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_hat from the network, with the family's parameterisation or preconditioning."""
        raise NotImplementedError

    def output_target(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network output that is exactly right for data x and noise eps (round-trip checks)."""
        raise NotImplementedError

    output_heads = 1

    def config(self) -> dict:
        """Plain values that rebuild this family (`families.build`); saved with every model."""
        raise NotImplementedError

    def for_student(self, base: int) -> "NoiseFamily":
        """The family a student distilled on a `base`-step grid samples with."""
        return self

    # --- written once for every family ---
    def replace(self, **changes) -> "NoiseFamily":
        from . import build
        return build({**self.config(), **changes})

    def sampling_times(self, steps: int, device=None) -> torch.Tensor:
        """The N + 1 times of an N-step sampler, noise end first."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer; got {steps!r}")
        return self.time(torch.arange(steps, -1, -1, device=device), steps)

    def noise(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (expand(v, x) for v in self.alpha_sigma(t))
        return alpha * x + sigma * eps

    def _coefficients(self, like, t, s):
        a_t, s_t = (expand(v, like) for v in self.alpha_sigma(t))
        a_s, s_s = (expand(v, like) for v in self.alpha_sigma(s))
        return a_t, s_t, a_s, s_s

    def jump(self, x_hat: torch.Tensor, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The DDIM jump t -> s given x_hat: alpha_s x_hat + sigma_s (z_t - alpha_t x_hat) / sigma_t
        (VE: x_hat (1 - sigma_s / sigma_t) + (sigma_s / sigma_t) z_t); x_hat itself at s = 0."""
        a_t, s_t, a_s, s_s = self._coefficients(z, t, s)
        return a_s * x_hat + s_s * (z - a_t * x_hat) / s_t

    def invert(self, z_t: torch.Tensor, t: torch.Tensor, z_s: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The x_hat for which one jump t -> s from z_t lands exactly on z_s:
        (z_s sigma_t - z_t sigma_s) / (alpha_s sigma_t - alpha_t sigma_s); z_s itself at s = 0."""
        a_t, s_t, a_s, s_s = self._coefficients(z_t, t, s)
        return (z_s * s_t - z_t * s_s) / (a_s * s_t - a_t * s_s)

    def ddim_step(self, denoise: Denoiser, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.jump(denoise(z, t), z, t, s)

    def step(self, denoise: Denoiser, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The step this family's models sample with (and teach with): DDIM unless a family says otherwise."""
        return self.ddim_step(denoise, z, t, s)

    def sample_step(self, model, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, clip: bool) -> torch.Tensor:
        """The step `model` (a DiffusionModel of this family) samples with: its own step (`model.step`, which the
        distillation targets are also built from) unless a family samples as a reference library does."""
        return model.step(z, t, s, clip)

    def sample_loop(self, model, noise: torch.Tensor, steps: int, clip: bool, progress=None) -> torch.Tensor:
        """`model`'s deterministic `steps`-step sample from standard normal `noise`: its step along this family's
        N-step times (a consistency model samples otherwise: `families.consistency`)."""
        from ..samplers import run
        return run(lambda z, t, s: self.sample_step(model, z, t, s, clip), self.prior(noise),
                   self.sampling_times(steps, noise.device), model.denoiser(clip), progress)

    def ancestral_step(self, x_hat: torch.Tensor, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, gamma: float,
                       generator: Optional[torch.Generator]) -> torch.Tensor:
        """PD's stochastic step: z_s ~ N(mu(z_t, x_hat), (var_small)^(1 - gamma) (var_large)^gamma);
        gamma = 0 is DDPM's 'fixed small' variance, 1 'fixed large'. Not for s = 0."""
        ratio = expand(torch.exp(self.logsnr(t) - self.logsnr(s)), z)  # e^(lambda_t - lambda_s)
        a_t, s_t, a_s, s_s = self._coefficients(z, t, s)
        mean = ratio * (a_s / a_t) * z + (1 - ratio) * a_s * x_hat
        log_var = (1 - gamma) * torch.log((1 - ratio) * s_s ** 2) + gamma * torch.log((1 - ratio) * s_t ** 2)
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return mean + torch.exp(0.5 * log_var) * eps

    def loss_weight(self, kind: str, t: torch.Tensor) -> torch.Tensor:
        return core_weighting.loss_weight(kind, self.logsnr(t), self.sigma_data)

    def loss(self, kind: str, t: torch.Tensor, x_hat: torch.Tensor, target: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
        """Batch mean of w(t) * per-example squared x-error, averaged (`mean`) or summed (`sum`,
        ml-tract's `.mean(0).sum()`) over the pixels."""
        err = (x_hat - target).pow(2).flatten(1)
        err = err.sum(1) if reduction == "sum" else err.mean(1)
        return (self.loss_weight(kind, t) * err).mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items() if k != 'family')})"
