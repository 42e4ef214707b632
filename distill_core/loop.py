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
    device = next(model.parameters()).device
    running = torch.zeros((), device=device)
    zeroing = settings.nonfinite == "zero"
    finite, zeroed, warned = torch.zeros((), device=device), torch.zeros((), dtype=torch.int64, device=device), False
    since_log = 0
    bar = tqdm(range(start, settings.updates), desc=settings.desc, disable=None if settings.progress else True,
               initial=start, total=settings.updates, leave=False, mininterval=2.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(settings, step)
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if zeroing:
            zeroed += zero_nonfinite(model.parameters())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        for ema in emas:
            ema.update(model)
        if zeroing:  # (the mean of the finite losses is logged)
            ok = torch.isfinite(loss.detach())
            running += torch.where(ok, loss.detach(), torch.zeros_like(running))
            finite += ok
        else:
            running += loss.detach()
        since_log += 1
        last = step + 1 == settings.updates
        if since_log == settings.log_every or last:
            metrics = window_metrics(settings, placement, running, finite if zeroing else since_log, zeroed, grad_norm,
                                     step)
            if zeroing and metrics[f"{settings.metric_prefix}/nonfinite_grads"] and not warned:
                warned = True
                log.warning("%s: %d non-finite gradient elements by update %d, set to 0 (+-inf to +-1e5) and the "
                            "updates taken (distill.nonfinite_grads=zero, as ml-tract); counted in %s/nonfinite_grads",
                            settings.desc, metrics[f"{settings.metric_prefix}/nonfinite_grads"], step + 1,
                            settings.metric_prefix)
            mean_loss = metrics[f"{settings.metric_prefix}/loss"]
            metrics[f"{settings.metric_prefix}/lr"] = optimizer.param_groups[0]["lr"]
            callback.on_metrics(metrics, step_offset + step + 1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
            if bar.disable and settings.progress and (step + 1) % max(settings.log_every, settings.updates // 10) == 0:
                log.info("%s: %d/%d updates, loss %.4f", settings.desc, step + 1, settings.updates, mean_loss)
            running.zero_()
            finite.zero_()
            zeroed.zero_()
            since_log = 0
        if save_checkpoint and settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0 and not last:
            save_checkpoint(step + 1)
    bar.close()


def window_metrics(settings: LoopSettings, placement, running: torch.Tensor, count, zeroed: torch.Tensor,
                   grad_norm: torch.Tensor, step: int) -> dict:
    """A logging window's mean loss (over the ranks; under `nonfinite="zero"` over its finite losses, with the
    count of zeroed gradient elements); DivergenceError when the loss or the gradient is not finite (under
    `zero`: when no loss of the window was)."""
    count = float(placement.mean(count.float())) if torch.is_tensor(count) else count
    mean_loss = float(placement.mean(running)) / count if count else float("nan")
    finite = torch.isfinite(torch.tensor(mean_loss)) and (settings.nonfinite == "zero" or torch.isfinite(grad_norm))
    if not finite:
        raise DivergenceError(f"non-finite loss or gradient in {settings.desc} at update {step + 1} "
                              f"(loss={mean_loss}, grad_norm={float(grad_norm)})")
    metrics = {f"{settings.metric_prefix}/loss": mean_loss}
    if settings.nonfinite == "zero":
        metrics[f"{settings.metric_prefix}/nonfinite_grads"] = int(zeroed)  # (the same on every rank: DDP's gradients)
    return metrics
