"""Fréchet distance on raw pixels ("pixel FD"): a distributional quality metric cheap enough to
compute at every phase on a CPU.

Why it exists: the gap compares a sampler's output with the teacher's from the same noise, so it
can neither rank teachers (each is its own reference) nor score a stochastic sampler; FID needs an
Inception pass (minutes per call on a CPU). For 8x8 digits the 64 pixels are a usable feature
space. The values are not comparable with FID numbers; compare orderings. The Fréchet distance
itself is torch-fidelity's. A class-conditional model is sampled with class-balanced labels (y_i = i mod K).
"""
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

CHUNK = 1000  # samples per sampler call: bounds memory at large num_samples


def statistics(images: torch.Tensor) -> dict:
    """Mean and covariance (float64) of the flattened images."""
    return fid_features_to_statistics(images.detach().flatten(1).double().cpu())


def distance(stats_a: dict, stats_b: dict) -> float:
    return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])


class PixelFD:
    """Pixel FD of a model's samples against the data, from fixed noise (so values are comparable
    across phases, samplers and runs of the same seed)."""

    def __init__(self, reference: torch.Tensor, num_samples: int, seed: int = 0,
                 ancestral_gammas=(0.0, 0.5, 1.0), device: str = "cpu"):
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (a covariance needs two samples); got {num_samples}")
        self.reference = statistics(reference)
        self.shape = tuple(reference.shape[1:])
        self.seed, self.device = seed, device
        self.gammas = tuple(float(g) for g in ancestral_gammas)
        self.noise = torch.randn((num_samples, *self.shape), generator=torch.Generator().manual_seed(seed + 2))

    def _chunks(self, model):
        """(noise, labels) chunks; labels None for an unconditional model."""
        k = getattr(model, "num_classes", None)
        labels = torch.arange(self.noise.shape[0]) % k if k else None
        for i in range(0, self.noise.shape[0], CHUNK):
            yield self.noise[i:i + CHUNK].to(self.device), (labels[i:i + CHUNK] if k else None)

    def ddim(self, model, steps: int) -> float:
        with torch.inference_mode():
            samples = torch.cat([model.sample(z, steps, labels=y).cpu() for z, y in self._chunks(model)])
        return distance(statistics(samples), self.reference)

    def ancestral(self, model, steps: int) -> tuple[float, float]:
        """(best pixel FD over the gammas, its gamma): PD tuned the variance exponent per step count."""
        best = (float("inf"), float("nan"))
        for gamma in self.gammas:
            g = torch.Generator(device=self.device).manual_seed(self.seed + 3)
            with torch.inference_mode():
                samples = torch.cat([model.sample_ancestral(z, steps, gamma=gamma, generator=g, labels=y).cpu()
                                     for z, y in self._chunks(model)])
            best = min(best, (distance(statistics(samples), self.reference), gamma))
        return best
