"""The one narrow interface between the core and whoever records its results.

The core calls these hooks; `sweeps.tracking` implements them with MLflow, tests with a
list, the defaults print nothing. Nothing here knows about MLflow.
"""
from pathlib import Path
from typing import Optional


class Callback:
    def on_metrics(self, metrics: dict, step: int) -> None:
        """Scalar metrics at `step`, a cumulative update count (the training losses)."""

    def on_phase_metrics(self, phase: int, steps: int, update: int, metrics: dict) -> None:
        """The evaluation of phase `phase` (0-based): the `steps`-step student after `update` cumulative
        updates (gap, teacher_gap, FID, ...). By default recorded like any metrics at step `update`."""
        self.on_metrics(metrics, update)

    def on_save(self, name: str) -> None:
        """Checkpoint `name` is about to be written: what was reported before it should be recorded first, so
        that a kill after it loses nothing (a resume from it reports only what comes after)."""

    def on_checkpoint(self, path: Path, sha256: str, name: str) -> None:
        """A checkpoint file was written atomically (its sha256 is recorded with it)."""

    def on_image(self, path: Path, name: str, step: Optional[int] = None) -> None:
        """A PNG (sample grid) was written; `step`: the cumulative update count it shows the model at
        (0: the teacher's reference grid), for an image view with a step slider."""

    def on_phase_end(self, phase: int, steps: int, model, metrics: dict) -> dict:
        """A phase finished; `model` is the one that will be evaluated at `steps` steps.
        Return extra metrics (e.g. FID) to be recorded with the phase's own."""
        return {}

    def keep_going(self, phase: int, update: int, metrics: dict) -> bool:
        """Asked after every phase but the last, once its metrics are recorded and its checkpoint
        written (`update`: the cumulative update count). False stops the job at this phase boundary
        (a sweep's pruner); the result then ends with this phase."""
        return True


class RecordingCallback(Callback):
    """Keeps everything in lists: for tests and notebooks."""

    def __init__(self):
        self.metrics, self.checkpoints, self.images, self.phases = [], [], [], []

    def on_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def on_phase_metrics(self, phase, steps, update, metrics):
        self.metrics.append((update, {**metrics, "steps": steps}))

    def on_checkpoint(self, path, sha256, name):
        self.checkpoints.append((Path(path), sha256, name))

    def on_image(self, path, name, step=None):
        self.images.append((Path(path), name, step))

    def on_phase_end(self, phase, steps, model, metrics):
        self.phases.append((phase, steps, dict(metrics)))
        return {}
