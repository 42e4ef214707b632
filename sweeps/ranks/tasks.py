"""The two trainings a job runs on its ranks, as module-level functions (spawned workers import them by
name): `fn(placement, device, *args)`. Rank 0 builds the run's callback from its `RunReporter` and
delivers what it queued (`tracking.reporter.reported`); the other ranks train silently."""
from pathlib import Path
from typing import Optional

from ..tracking.reporter import RunReporter, reported


def teacher_task(placement, device, data, tc, reporter: Optional[RunReporter], checkpoint_path):
    """The teacher's training. In the job's own process (one rank) a store that does not answer at its end is not
    waited for: the reporter's `lingering` callback delivers on while the job distils (`teachers.handoff`)."""
    from distill_core.teacher import train_teacher
    callback = reporter.callback() if reporter is not None and placement.is_main else None
    linger = callback is not None and placement.world_size == 1
    model = reported(callback, Path(checkpoint_path).parent, lambda: train_teacher(
        data.to(device), tc, callback=callback, checkpoint_path=checkpoint_path, device=device, placement=placement),
        linger=linger)
    if linger and not getattr(callback, "closed", True):
        reporter.lingering = callback
    return model


def distill_task(placement, device, teacher, data, dc, workdir, reporter: Optional[RunReporter], eval_noise):
    from distill_core.distill import Distiller
    callback = None
    if reporter is not None and placement.is_main:
        callback = reporter.callback(data, device, teacher, dc.reference_steps or dc.schedule[0])
    return reported(callback, workdir, lambda: Distiller(
        teacher, data.to(device), dc, workdir, callback=callback, device=device, eval_noise=eval_noise,
        placement=placement).run())
