"""Noise-level conditioning shared by the networks."""
import math

import torch


def logsnr_embedding(logsnr: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """PD's 'inv_cos' input: t_in = arctan(exp(-lambda / 2)) / (pi / 2) in [0, 1], then a
    sinusoidal embedding of 1000 * t_in (so any schedule's lambda maps to the same features)."""
    t_in = torch.atan(torch.exp(-0.5 * logsnr.clamp(-20.0, 20.0))) / (0.5 * math.pi)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=logsnr.device, dtype=torch.float32) / half)
    args = 1000.0 * t_in.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)
