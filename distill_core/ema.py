"""TRACT's bias-corrected EMA of a module's weights (after apple/ml-tract lib/optim.py).

phi_ema_i = (1 - c_i) phi_ema_{i-1} + c_i phi_i with c_i = (1 - mu) / (1 - mu^i): the first
update copies the source, so short runs are never biased towards the initial weights.
mu = 0 means "no averaging": the copy always equals the source. `bias_correction=False` is the plain
EMA, c_i = 1 - mu (consistency distillation's target network: it starts where the student does, from the
teacher, and openai/consistency_models' `update_ema` averages it plainly from the first update).
"""
import copy

import torch
from torch import nn


class EMA(nn.Module):
    def __init__(self, source: nn.Module, momentum: float, bias_correction: bool = True):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1); got {momentum}")
        self.momentum, self.bias_correction = momentum, bias_correction
        self.module = copy.deepcopy(source).eval().requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        self.updates += 1
        c = 1.0 - self.momentum
        if self.bias_correction:
            c /= 1.0 - self.momentum ** int(self.updates)
        # one fused kernel per tensor group, not one launch per parameter (hundreds on the U-Net)
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in source.parameters()], c)
        for b_ema, b in zip(self.module.buffers(), source.buffers()):
            b_ema.copy_(b)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
