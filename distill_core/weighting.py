"""Loss weightings on the x-space error (DESIGN 3.3), as functions of log-SNR.

`edm` is EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = SNR + 1 / sigma_data^2
(with SNR = 1 / sigma^2 on the VE path, alpha^2 / sigma^2 on VP): weight 1 on the preconditioned
network output, as apple/ml-tract's TRACT-VE loss.
"""
import torch

WEIGHTINGS = ("snr", "truncated_snr", "snr_plus_one", "constant", "edm")


def check(kind: str) -> str:
    if kind not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {kind!r}")
    return kind


def loss_weight(kind: str, logsnr: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """w(lambda): snr = eps-MSE, truncated_snr = max(snr, 1), snr_plus_one = v-MSE, constant = x-MSE,
    edm = snr + 1 / sigma_data^2."""
    snr = torch.exp(logsnr)
    if kind == "snr":
        return snr
    if kind == "truncated_snr":
        return torch.clamp(snr, min=1.0)
    if kind == "snr_plus_one":
        return snr + 1.0
    if kind == "constant":
        return torch.ones_like(snr)
    if kind == "edm":
        return snr + 1.0 / sigma_data ** 2
    raise ValueError(check(kind))

