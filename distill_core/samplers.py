"""Sampler loops and EDM's probability-flow steps, as small pure functions of tensors.

A `denoise(z, t) -> x_hat` callable is all a step needs, so teachers, students and EMAs share one
implementation; the DDIM jump and PD's ancestral step are written once on the Gaussian path in
`families.base`. Times are per-example tensors (B,); a sampler walks a family's N + 1 times.
"""
from typing import Callable, Optional

import torch

from .schedules import expand

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t, s) -> z_s


@torch.no_grad()
def run(step: Step, z: torch.Tensor, times: torch.Tensor, denoise: Optional[Denoiser] = None,
        progress: Optional[str] = None) -> torch.Tensor:
    """Deterministic sampling: `step` from each time to the next (times noise end first). With
    `denoise`, a step that ends at the data (t = 0) returns x_hat, which is where every family's
    step lands there (exactly, for the DDIM jump), without a Heun step's discarded evaluation.
    `progress`: a progress bar with this label over the steps (on a terminal)."""
    batch, host = z.shape[0], times.cpu()
    steps = range(len(times) - 1)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc=progress, disable=None, leave=False, mininterval=2.0)
    for i in steps:
        t = times[i].expand(batch)
        if denoise is not None and float(host[i + 1]) == 0.0:
            z = denoise(z, t)
        else:
            z = step(z, t, times[i + 1].expand(batch))
    return z


@torch.no_grad()
def run_ancestral(family, denoise: Denoiser, z: torch.Tensor, times: torch.Tensor, gamma: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PD's stochastic baseline on `family`'s path; the last step returns x_hat."""
    batch = z.shape[0]
    for i in range(len(times) - 1):
        t, s = times[i].expand(batch), times[i + 1].expand(batch)
        x_hat = denoise(z, t)
        if float(s[0]) <= 0:
            return x_hat
        z = family.ancestral_step(x_hat, z, t, s, gamma, generator)
    return z


# --- EDM's probability-flow steps: denoise(x, sigma) -> x_hat, x = data + sigma * eps ---

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
