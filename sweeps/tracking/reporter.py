"""What rank 0 needs to report into an MLflow run, and what happens to a report when the store stays away.

A `RunReporter` is picklable: it travels to rank 0 of a data-parallel job and builds the `RunLogger`
where it runs (through an `Outbox`, or `Direct`ly), with the phase evaluation beyond the gap and, in an
Optuna sweep, the trial's pruning wrapped around it. `reported(...)` runs a training and delivers what
it queued; on an outage past its limit the undelivered metrics go to `SPILL` in the job's folder, which
the resumed job replays first.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

SPILL = "undelivered_metrics.jsonl"  # in the job's folder: what an outage kept from the store, sent on resume


@dataclass
class RunReporter:
    tracking_uri: str
    run_id: str
    synchronous: bool = False  # true: every call in the training thread; false: through an Outbox
    logged: Optional[dict] = None  # metric -> last step already in the run (a resumed job skips those)
    evaluation: Any = None  # builds the phase metrics beyond the gap: `.build(data, device, teacher, base_steps)`
    trial: Any = None  # an Optuna trial (`multirun.trial.TrialLink`): each phase's objective, and pruning
    outage_limit_s: float = 600.0  # how long the tracking store may not answer before the job stops
    model_id: Optional[str] = None  # the student's logged model: the final phase's metrics are linked to it
    final_steps: Optional[int] = None
    lingering: Any = None  # in the job's own process: the RunLogger whose outbox outlived its training (`reported`)

    def callback(self, data=None, device="cpu", teacher=None, base_steps=None):
        import mlflow

        from .outbox import Outbox
        from .run_logger import RunLogger
        if mlflow.get_tracking_uri() != self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        extra = self.evaluation.build(data, device, teacher, base_steps) if self.evaluation is not None else None
        outbox = None if self.synchronous else Outbox(self.run_id, self.outage_limit_s)
        callback = RunLogger(self.run_id, outbox=outbox, extra_metrics=extra, logged=self.logged,
                             model_id=self.model_id, final_steps=self.final_steps)
        run_id = self.run_id
        for key, value in (getattr(extra, "tags", None) or {}).items():  # the FID protocol, on the run (queued)
            callback.out.call(lambda client, k=key, v=value: client.set_tag(run_id, k, v))
        return self.trial.wrap(callback) if self.trial is not None else callback


def reported(callback, workdir, train, linger: bool = False):
    """`train()`, then everything the callback queued delivered; on a tracking outage past its limit,
    what is still queued goes to `workdir/SPILL` for the resumed job, and TrackingOutage goes on. With `linger`
    (a training whose process goes on: the teacher's, in the job's process), a store that does not answer
    promptly at the end is not waited for: the callback's outbox delivers on (`RunLogger.close(linger=True)`)."""
    from .outbox import TrackingOutage
    if callback is None:
        return train()
    try:
        result = train()
        if hasattr(callback, "close"):  # (any core Callback may report; ours deliver what they queued)
            callback.close(linger=True) if linger else callback.close()
        return result
    except TrackingOutage:
        outbox = getattr(callback, "out", None) or getattr(getattr(callback, "inner", None), "out", None)
        if hasattr(outbox, "spill"):
            outbox.spill(Path(workdir) / SPILL)
        raise
