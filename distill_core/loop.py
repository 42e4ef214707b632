"""The optimisation loop shared by teacher training and both distillation methods.

Callers supply the loss as a closure; the loop owns the optimizer step, gradient clipping,
the learning-rate schedule (warm-up, then constant or linear anneal to 0), the EMAs, the
throttled loss logging (no host sync except at logging intervals), progress output and
periodic checkpoints. A non-finite loss stops the loop with one clear error. Under data
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


class DivergenceError(RuntimeError):
    pass


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
    running = torch.zeros((), device=next(model.parameters()).device)
    since_log = 0
    bar = tqdm(range(start, settings.updates), desc=settings.desc, disable=None if settings.progress else True,
               initial=start, total=settings.updates, leave=False, mininterval=2.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(settings, step)
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        for ema in emas:
            ema.update(model)
        running += loss.detach()
        since_log += 1
        last = step + 1 == settings.updates
        if since_log == settings.log_every or last:
            mean_loss = float(placement.mean(running)) / since_log
            if not (torch.isfinite(torch.tensor(mean_loss)) and torch.isfinite(grad_norm)):
                raise DivergenceError(f"non-finite loss or gradient in {settings.desc} at update {step + 1} "
                                      f"(loss={mean_loss}, grad_norm={float(grad_norm)})")
            callback.on_metrics({f"{settings.metric_prefix}/loss": mean_loss,
                                 f"{settings.metric_prefix}/lr": optimizer.param_groups[0]["lr"]},
                                step_offset + step + 1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
            if bar.disable and settings.progress and (step + 1) % max(settings.log_every, settings.updates // 10) == 0:
                log.info("%s: %d/%d updates, loss %.4f", settings.desc, step + 1, settings.updates, mean_loss)
            running.zero_()
            since_log = 0
        if save_checkpoint and settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0 and not last:
            save_checkpoint(step + 1)
    bar.close()
