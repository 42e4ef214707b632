"""The optimisation loop shared by teacher training and both distillation methods.

Callers supply the loss as a closure; the loop owns the optimizer step, gradient clipping,
the learning-rate schedule (warm-up, then constant or linear anneal to 0), the EMAs, the
throttled loss logging (no host sync except at logging intervals), progress output and
periodic checkpoints. A non-finite loss or gradient stops the loop with one clear error, unless the
caller asks for apple/ml-tract's handling (`nonfinite="zero"`: every non-finite gradient element is
replaced by `nan_to_num(nan=0, posinf=1e5, neginf=-1e5)` and the step is taken; the count is logged
and the first one named on the console). Under data
parallelism (`placement`) the logged loss is the global batch's (averaged over the ranks at the
logging intervals only); the caller gives the other ranks a silent callback and no checkpoints.
"""
import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from .callbacks import Callback
from .placement import Single


log = logging.getLogger(__name__)


NONFINITE = ("stop", "zero")


class DivergenceError(RuntimeError):
    pass


def zero_nonfinite(params) -> torch.Tensor:
    """ml-tract's `torch.nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5, out=grad)` on every gradient; returns
    how many elements were not finite, as a tensor on their device (read only at logging intervals: no sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    count = torch.zeros((), dtype=torch.int64, device=grads[0].device if grads else "cpu")
    for g in grads:
        count += (~torch.isfinite(g)).sum()
        torch.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5, out=g)
    return count


@dataclass
class LoopSettings:
    updates: int
    lr: float
    warmup: int = 0
    anneal: bool = False  # linear decay to 0 over `updates`
    grad_clip: float = 1.0
    log_every: int = 25
    checkpoint_every: int = 0  # 0: only at the end
    desc: str = "train"
    metric_prefix: str = "train"
    progress: bool = True
    nonfinite: str = "stop"  # stop | zero (`zero_nonfinite`, then the step)


def lr_at(s: LoopSettings, step: int) -> float:
    scale = 1.0
    if s.warmup > 0:
        scale = min(1.0, (step + 1) / s.warmup)
    if s.anneal:
        scale *= 1.0 - step / s.updates
    return s.lr * scale


def run_updates(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor],
                settings: LoopSettings, start: int = 0, step_offset: int = 0, emas=(),
                callback: Optional[Callback] = None, save_checkpoint: Optional[Callable[[int], None]] = None,
                placement=None) -> None:
    """Updates `start`..settings.updates-1; `step_offset` makes logged steps global across phases."""
    callback = callback or Callback()
    placement = placement or Single()
    model.train()
    window, warned = Window(settings, next(model.parameters()).device), False
    bar = tqdm(range(start, settings.updates), desc=settings.desc, disable=None if settings.progress else True,
               initial=start, total=settings.updates, leave=False, mininterval=2.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(settings, step)
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        window.zeroed(model)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        for ema in emas:
            ema.update(model)
        window.add(loss)
        last = step + 1 == settings.updates
        if window.updates == settings.log_every or last:
            metrics = window.metrics(placement, grad_norm, step)
            warned = warned or say_zeroed(settings, metrics, step)
            metrics[f"{settings.metric_prefix}/lr"] = optimizer.param_groups[0]["lr"]
            callback.on_metrics(metrics, step_offset + step + 1)
            mean_loss = metrics[f"{settings.metric_prefix}/loss"]
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
            if bar.disable and settings.progress and (step + 1) % max(settings.log_every, settings.updates // 10) == 0:
                log.info("%s: %d/%d updates, loss %.4f", settings.desc, step + 1, settings.updates, mean_loss)
            window.reset()
        if save_checkpoint and settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0 and not last:
            save_checkpoint(step + 1)
    bar.close()


class Window:
    """A logging window: the running loss (under `nonfinite="zero"`, of its finite losses only) and the gradient
    elements zeroed, kept on the device (read only when the window closes: no host sync per update)."""

    def __init__(self, settings: LoopSettings, device):
        self.settings, self.zeroing = settings, settings.nonfinite == "zero"
        self.loss, self.finite = torch.zeros((), device=device), torch.zeros((), device=device)
        self.zeros, self.updates = torch.zeros((), dtype=torch.int64, device=device), 0

    def zeroed(self, model) -> None:
        if self.zeroing:
            self.zeros += zero_nonfinite(model.parameters())

    def add(self, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if self.zeroing:
            ok = torch.isfinite(loss)
            loss = torch.where(ok, loss, torch.zeros_like(loss))
            self.finite += ok
        self.loss += loss
        self.updates += 1

    def metrics(self, placement, grad_norm: torch.Tensor, step: int) -> dict:
        """The window's mean loss over the ranks (and, under `zero`, the zeroed count); DivergenceError when the
        loss or the gradient is not finite (under `zero`: when no loss of the window was)."""
        s = self.settings
        count = float(placement.mean(self.finite)) if self.zeroing else self.updates
        mean_loss = float(placement.mean(self.loss)) / count if count else float("nan")
        if not (math.isfinite(mean_loss) and (self.zeroing or torch.isfinite(grad_norm))):
            raise DivergenceError(f"non-finite loss or gradient in {s.desc} at update {step + 1} "
                                  f"(loss={mean_loss}, grad_norm={float(grad_norm)})")
        out = {f"{s.metric_prefix}/loss": mean_loss}
        if self.zeroing:
            out[f"{s.metric_prefix}/nonfinite_grads"] = int(self.zeros)  # (the same on every rank: DDP's gradients)
        return out

    def reset(self) -> None:
        self.loss.zero_(), self.finite.zero_(), self.zeros.zero_()
        self.updates = 0


def say_zeroed(settings: LoopSettings, metrics: dict, step: int) -> bool:
    """The first window with zeroed gradient elements, named on the console; True once said."""
    count = metrics.get(f"{settings.metric_prefix}/nonfinite_grads")
    if not count:
        return False
    log.warning("%s: %d non-finite gradient elements by update %d, set to 0 (+-inf to +-1e5) and the updates taken "
                "(distill.nonfinite_grads=zero, as ml-tract); counted in %s/nonfinite_grads", settings.desc, count,
                step + 1, settings.metric_prefix)
    return True
