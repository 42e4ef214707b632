"""Noise schedules: the VP cosine schedule through clipped log-SNR (EDM's sigma grid is in families/edm.py).

Everything is a small pure function of a tensor of times so it batches over t.
Time t = 0 is the clean-data end of the process: `alpha_sigma` returns exactly (1, 0)
there, so a DDIM step to t = 0 returns x_hat and the distillation targets reduce to their
closed forms exactly (as the reference code's last sampling step does).
"""
import math

import torch

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def logsnr_cosine(t: torch.Tensor, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> torch.Tensor:
    """lambda(t) = -2 log tan(a t + b), rescaled so lambda(0) = logsnr_max and lambda(1) = logsnr_min."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t + b))


def alpha_sigma_from_logsnr(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda): a variance-preserving pair."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def alpha_sigma(t: torch.Tensor, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) of the clipped cosine schedule, exactly (1, 0) at t <= 0."""
    alpha, sigma = alpha_sigma_from_logsnr(logsnr_cosine(t, logsnr_min, logsnr_max))
    at_data = t <= 0
    return torch.where(at_data, torch.ones_like(alpha), alpha), torch.where(at_data, torch.zeros_like(sigma), sigma)


def expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-example vector (B,) against a batch (B, ...)."""
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))
