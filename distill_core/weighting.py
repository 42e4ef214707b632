"""Loss weightings on the x-space error (DESIGN 3.3), as functions of log-SNR."""
import torch

WEIGHTINGS = ("snr", "truncated_snr", "snr_plus_one", "constant")


def check(kind: str) -> str:
    if kind not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {kind!r}")
    return kind


def loss_weight(kind: str, logsnr: torch.Tensor) -> torch.Tensor:
    """w(lambda): snr = eps-MSE, truncated_snr = max(snr, 1), snr_plus_one = v-MSE, constant = x-MSE."""
    snr = torch.exp(logsnr)
    if kind == "snr":
        return snr
    if kind == "truncated_snr":
        return torch.clamp(snr, min=1.0)
    if kind == "snr_plus_one":
        return snr + 1.0
    if kind == "constant":
        return torch.ones_like(snr)
    raise ValueError(check(kind))


def weighted_x_loss(kind: str, logsnr: torch.Tensor, x_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch mean of w(lambda) * per-example mean squared x-error."""
    err = (x_hat - target).pow(2).flatten(1).mean(1)
    return (loss_weight(kind, logsnr) * err).mean()
