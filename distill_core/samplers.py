"""Sampling steps and loops (DESIGN 3.4 and the VE steps of TRACT 3.3).

A `denoise(z, t) -> x_hat` callable is all a sampler needs, so teachers, students and EMAs
share one implementation. Steps are pure functions batched over per-example times (B,).
"""
from typing import Callable, Optional

import torch

from .schedules import alpha_sigma, expand, logsnr_cosine

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddim_step_from_x(x_hat: torch.Tensor, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """delta(z_t, t -> s) = alpha_s x_hat + sigma_s (z_t - alpha_t x_hat) / sigma_t; x_hat at s = 0."""
    a_t, s_t = (expand(v, z) for v in alpha_sigma(t))
    a_s, s_s = (expand(v, z) for v in alpha_sigma(s))
    return a_s * x_hat + s_s * (z - a_t * x_hat) / s_t


def ddim_step(denoise: Denoiser, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return ddim_step_from_x(denoise(z, t), z, t, s)


def time_grid(steps: int, batch: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (t, s) pairs 1 -> 1 - 1/N -> ... -> 0 of an N-step sampler, each as (B,) tensors."""
    if steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps}")
    grid = torch.arange(steps, -1, -1, device=device).to(torch.get_default_dtype()) / steps
    return [(grid[i].expand(batch), grid[i + 1].expand(batch)) for i in range(steps)]


@torch.no_grad()
def ddim_sample(denoise: Denoiser, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Deterministic N-step DDIM from z_1 = noise to x_0."""
    z = noise
    for t, s in time_grid(steps, noise.shape[0], noise.device):
        z = ddim_step(denoise, z, t, s)
    return z


@torch.no_grad()
def ancestral_sample(denoise: Denoiser, noise: torch.Tensor, steps: int, gamma: float = 1.0,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PD's stochastic baseline: z_s ~ N(mu(z_t, x_hat), (var_small)^(1 - gamma) (var_large)^gamma).

    gamma = 0 is DDPM's 'fixed small' variance, gamma = 1 'fixed large'; the last step returns x_hat.
    """
    z = noise
    for t, s in time_grid(steps, noise.shape[0], noise.device):
        x_hat = denoise(z, t)
        if float(s[0]) <= 0:
            return x_hat
        ratio = expand(torch.exp(logsnr_cosine(t) - logsnr_cosine(s)), z)  # e^(lambda_t - lambda_s)
        a_t, s_t = (expand(v, z) for v in alpha_sigma(t))
        a_s, s_s = (expand(v, z) for v in alpha_sigma(s))
        mean = ratio * (a_s / a_t) * z + (1 - ratio) * a_s * x_hat
        log_var = (1 - gamma) * torch.log((1 - ratio) * s_s ** 2) + gamma * torch.log((1 - ratio) * s_t ** 2)
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z = mean + torch.exp(0.5 * log_var) * eps
    return z


# --- VE / EDM probability-flow steps: denoise(x, sigma) -> x_hat, x = data + sigma * eps ---

def euler_step(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    d = (x - denoise(x, sigma)) / expand(sigma, x)
    return x + expand(sigma_next - sigma, x) * d


def heun_step(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """EDM's 2nd-order step; falls back to Euler where sigma_next = 0."""
    d = (x - denoise(x, sigma)) / expand(sigma, x)
    x_euler = x + expand(sigma_next - sigma, x) * d
    safe_next = torch.where(sigma_next > 0, sigma_next, torch.ones_like(sigma_next))
    d_next = (x_euler - denoise(x_euler, safe_next)) / expand(safe_next, x)
    x_heun = x + expand(sigma_next - sigma, x) * 0.5 * (d + d_next)
    return torch.where(expand(sigma_next > 0, x), x_heun, x_euler)


def ddim_ve_step_from_x(x_hat: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """TRACT's VE student step: x_hat (1 - s'/s) + (s'/s) x."""
    r = expand(sigma_next / sigma, x)
    return x_hat * (1 - r) + r * x
