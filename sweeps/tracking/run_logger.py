"""The core's Callback written with MLflow: what a training reports lands in its run.

Calls go through an `Outbox` (`tracking.outbox`: queued by the training thread, delivered in order by
a background thread that outlasts a server outage) or `Direct`ly. Each phase's evaluation is logged
at the cumulative update count and under step-count keys; checkpoints with their sha256 as a tag
(`sha256.phase1`); grids in MLflow's image view.
"""
from pathlib import Path

from mlflow.tracking import MlflowClient

from distill_core.callbacks import Callback

from .figure import overview
from .metric_keys import CURVE, curve_keys, headline_keys, step_count_keys


IMAGE_UPSCALE = 2  # the grids' 8x8 digits are drawn 32 px wide; the UI's image cards show them at 64


class Direct:
    """The Outbox's interface, delivered at once in the calling thread (`tracking.async_logging=false`)."""

    def __init__(self, run_id: str):
        self.run_id, self.client = run_id, MlflowClient()

    def metrics(self, metrics, step, model_id=None):
        import time

        from .outbox import log_batch
        log_batch(self.client, self.run_id, [(k, float(v), int(time.time() * 1000), int(step), model_id)
                                             for k, v in metrics.items()])

    def call(self, fn, *args, **kwargs):
        fn(self.client, *args, **kwargs)

    def artifact(self, path, folder):
        self.client.log_artifact(self.run_id, str(path), folder)

    def raise_if_stalled(self):
        pass

    def stalled(self) -> float:
        return 0.0

    def drain(self, timeout=None) -> bool:
        return True

    def settle(self, why) -> bool:
        return True

    def close(self):
        pass


class RunLogger(Callback):
    """Sends what the core reports to an MLflow run, through an `Outbox` (off the training thread) or
    `Direct`ly. The final phase's metrics are linked to the student's logged model (`model_id`), so the
    model's page shows them."""

    def __init__(self, run_id: str, outbox=None, extra_metrics=None, logged: dict | None = None,
                 model_id: str | None = None, final_steps: int | None = None):
        self.run_id, self.out = run_id, outbox or Direct(run_id)
        self.extra_metrics = extra_metrics  # fn(phase, steps, model) -> dict, e.g. FID/KID
        self.logged = logged or {}  # metric -> last step already in the run (a resumed job skips those)
        self.model_id, self.final_steps = model_id, final_steps

    def on_metrics(self, metrics, step, model_id=None):
        fresh = {k: float(v) for k, v in metrics.items() if step > self.logged.get(k, -1)}
        if fresh:
            self.out.metrics(fresh, int(step), model_id=model_id)

    def on_phase_metrics(self, phase, steps, update, metrics):
        final = steps == self.final_steps
        self.on_metrics(step_count_keys(metrics, steps), update, model_id=self.model_id if final else None)
        if final:  # the run's result (the runs table's columns): once, not a line across the phases
            self.on_metrics(headline_keys(metrics), update, model_id=self.model_id)
        curve = {k: v for k, v in curve_keys(metrics).items() if steps < self.logged.get(k, float("inf"))}
        if curve:  # (step counts fall phase by phase: a resumed job has logged those at or above its lowest)
            self.out.metrics(curve, int(steps))
        self.out.call(lambda client: client.set_tag(self.run_id, "steps", str(steps)))  # the step count reached

    def on_save(self, name):
        """Everything reported so far reaches the store before the checkpoint is written: a `kill -9` after it
        then loses no metric (the resume from it reports the updates after it again). Not while the store does
        not answer promptly (`Outbox.settle`): training goes on through an outage, what is queued stays queued
        (and in the spill), and past the outage limit the job stops at a checkpoint."""
        self.out.settle(f"before checkpoint {name}")

    def on_checkpoint(self, path, sha256, name):
        if name.startswith("phase") or name == "teacher":
            self.out.artifact(path, "checkpoints")
            key = "sha256." + (name if name == "teacher" else Path(path).stem.split("_")[0])  # sha256.phase1
            self.out.call(lambda client: client.set_tag(self.run_id, key, sha256))
        self.out.raise_if_stalled()  # a tracking outage longer than allowed stops the job here, after its checkpoint

    def on_image(self, path, name, step=None):
        self.out.artifact(path, "samples")
        if step is None:
            return
        # MLflow's image view: key `samples` per phase at its cumulative update (the step slider), starting at
        # step 0 with the teacher's grid (the slider opens at 0: an empty card otherwise); `teacher_samples`
        teacher = name.startswith("samples_teacher")
        for key in ("teacher_samples", "samples") if teacher else ("samples",):
            self._log_image(path, key, step)
        if not teacher:  # teacher and students side by side, labelled: one PNG that reads in the artifact view
            figure = overview(Path(path).parent, Path(path).parent / "overview.png")
            if figure:
                self.out.artifact(figure, "samples")

    def _log_image(self, path, key: str, step: int) -> None:
        import numpy as np
        from PIL import Image
        image = np.asarray(Image.open(path).convert("RGB"))
        image = image.repeat(IMAGE_UPSCALE, axis=0).repeat(IMAGE_UPSCALE, axis=1)  # nearest: crisp digits
        self.out.call(lambda client: client.log_image(self.run_id, image, key=key, step=int(step)))

    def on_phase_end(self, phase, steps, model, metrics):
        return self.extra_metrics(phase, steps, model) if self.extra_metrics else {}

    closed = False

    def close(self, linger: bool = False) -> bool:
        """Everything delivered (waits out an outage up to the limit, else TrackingOutage). With `linger`, only
        while the store answers promptly (`Outbox.settle`): where it does not, False, and the outbox delivers on
        in the background (a later `close()` waits for it)."""
        if linger and not self.out.settle("end of training"):
            return False
        self.out.close()
        self.closed = True
        return True


def logged_steps(run_id: str) -> dict:
    """{metric: highest step already logged} of an existing run (the lowest for the quality-vs-steps curve's
    keys, whose steps fall)."""
    client = MlflowClient()
    return {key: (min if key.startswith(CURVE) else max)(m.step for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}
