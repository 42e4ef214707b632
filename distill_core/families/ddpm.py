"""The discrete-time DDPM family of diffusers teachers (DESIGN 3.9; TRACT's own discrete form).

A DDPM teacher knows K noise levels (`num_train_timesteps`): abar_k, k = 0..K-1, built here from
its scheduler config with diffusers' own formulas (linear, scaled_linear, squaredcos_cap_v2,
`trained_betas`, `rescale_betas_zero_snr`), in float32 as diffusers builds them; the tests check
the table against `DDIMScheduler` itself. This module does not import diffusers: the core stays
plain PyTorch, and `import diffusers` costs seconds.

The family's time is the position t = k + 1 in {0, 1, ..., K}: t = 0 is the clean end, outside the
table ((alpha, sigma) = (1, 0), diffusers' `set_alpha_to_one`), t >= 1 the table entry k = t - 1,
which is what the network is called with (an integer, as trained). An N-step grid is diffusers'
"trailing" one, t_i = round(i K / N) (i = N ... 0): every coarser grid whose step count divides a
finer one's lies inside it. Models sample with DDIM as diffusers' `DDIMScheduler` does, clipping
included: the clipped x_hat, the noise direction from the unclipped output (`sample_step`); the
distillation targets are built from the family's consistent DDIM step, as for the other families.
"""
import math

import torch

from .. import parameterization as param
from ..schedules import expand
from .base import NoiseFamily

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x"}  # diffusers' name -> ours
PARAMETERIZATIONS = tuple(PREDICTION_TYPES.values())


def cosine_betas(k: int, max_beta: float = 0.999) -> torch.Tensor:
    """diffusers' `betas_for_alpha_bar` (cosine), term by term in Python floats."""
    def abar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - abar((i + 1) / k) / abar(i / k), max_beta) for i in range(k)], dtype=torch.float32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """diffusers' rescaling (Lin et al. 2023): sqrt(abar) shifted to 0 at the end, scaled back at the start."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    abar = root ** 2
    return 1 - torch.cat([abar[0:1], abar[1:] / abar[:-1]])


def betas(k: int, beta_schedule: str, beta_start: float, beta_end: float, trained_betas=None,
          rescale_betas_zero_snr: bool = False) -> torch.Tensor:
    if trained_betas is not None:
        b = torch.tensor(list(trained_betas), dtype=torch.float32)
    elif beta_schedule == "linear":
        b = torch.linspace(beta_start, beta_end, k, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        b = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, k, dtype=torch.float32) ** 2
    else:
        b = cosine_betas(k)
    return rescale_zero_terminal_snr(b) if rescale_betas_zero_snr else b


class DDPM(NoiseFamily):
    name = "ddpm"

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, trained_betas=None, rescale_betas_zero_snr: bool = False,
                 parameterization: str = "eps", sampler: str = "ddim"):
        k = num_train_timesteps
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"num_train_timesteps must be a positive integer; got {k!r}")
        if trained_betas is None and beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)} (or trained_betas given); "
                             f"got {beta_schedule!r}")
        if trained_betas is not None and len(trained_betas) != k:
            raise ValueError(f"trained_betas must hold num_train_timesteps={k} values; got {len(trained_betas)}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"distill.parameterization must be one of {', '.join(PARAMETERIZATIONS)} with a DDPM "
                             f"teacher (diffusers' {', '.join(PREDICTION_TYPES)}); got {parameterization!r}")
        if sampler not in self.samplers:
            raise ValueError(f"diffusion.teacher_sampler must be ddim with a DDPM teacher; got {sampler!r}")
        self.num_train_timesteps, self.beta_schedule = k, beta_schedule
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.trained_betas = None if trained_betas is None else [float(b) for b in trained_betas]
        self.rescale_betas_zero_snr, self.parameterization = bool(rescale_betas_zero_snr), parameterization
        self.alphas_cumprod = torch.cumprod(1.0 - betas(k, beta_schedule, beta_start, beta_end, trained_betas,
                                                        rescale_betas_zero_snr), dim=0)

    def config(self) -> dict:
        return dict(family=self.name, num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                    beta_start=self.beta_start, beta_end=self.beta_end, trained_betas=self.trained_betas,
                    rescale_betas_zero_snr=self.rescale_betas_zero_snr, parameterization=self.parameterization)

    @property
    def prediction_type(self) -> str:
        """diffusers' name of what the network predicts."""
        return {v: k for k, v in PREDICTION_TYPES.items()}[self.parameterization]

    # --- the process ---
    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """abar at positions t (1 at t = 0, the clean end), in t's dtype."""
        table = torch.cat([torch.ones(1), self.alphas_cumprod]).to(t.device)
        return table[t.round().long()].to(t.dtype)

    def alpha_sigma(self, t):
        abar = self.abar(t)
        return abar.sqrt(), (1 - abar).sqrt()

    def time(self, index, grid):
        """diffusers' trailing grid: position round(K - (grid - i) K / grid) (its timestep + 1), as numpy's arange."""
        k = self.num_train_timesteps
        return torch.round(k - (grid - index.to(torch.float64)) * (k / grid)).to(torch.get_default_dtype())

    def train_times(self, batch, generator):
        return torch.randint(1, self.num_train_timesteps + 1, (batch,), generator=generator).to(torch.get_default_dtype())

    def predict(self, net, z, t):
        """(x_hat, eps_hat) from the network's output as diffusers' DDIMScheduler derives them."""
        alpha, sigma = (expand(v, z) for v in self.alpha_sigma(t))
        out = net(z, t - 1)
        x_hat = param.x_from_output(self.parameterization, out, z, alpha, sigma)
        if self.parameterization == "eps":
            return x_hat, out
        if self.parameterization == "v":
            return x_hat, alpha * out + sigma * z
        return x_hat, (z - alpha * x_hat) / sigma

    def denoise(self, net, z, t):
        return self.predict(net, z, t)[0]

    def output_target(self, x, eps, t):
        alpha, sigma = (expand(v, x) for v in self.alpha_sigma(t))
        return param.output_from_target(self.parameterization, x, eps, alpha, sigma)

    # --- sampling: diffusers' DDIM step, clipping as it clips ---
    def sample_step(self, model, z, t, s, clip):
        """DDIMScheduler's step, operation for operation (clip_sample=True, use_clipped_model_output=False: what
        its pipelines run): x_hat clipped to [-1, 1] when `clip`, the noise direction from the unclipped output.
        Only for sampling: such a step leaves the DDIM ray when it clips, and a distillation target inverted
        from it would amplify the clipped amount by ~1 / (step size); targets use the family's own (`step`)."""
        x_hat, eps = self.predict(model._net, z, t)
        alpha, sigma = (expand(v, z) for v in self.alpha_sigma(s))
        return alpha * (x_hat.clamp(-1.0, 1.0) if clip else x_hat) + sigma * eps
