"""Stage 2, the student's run: started fresh, or the job's own run resumed when it was cut off.

Same command, same job (its key): a job whose process was killed, or that stopped on a tracking
outage, finds its run in its record and continues in it, first delivering the metrics the outage kept.
Ctrl-C and SIGTERM end the run KILLED (the job stays resumable).
"""
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

from ..common.errors import fail
from .record import JobRecord

log = logging.getLogger(__name__)


@dataclass
class StudentRun:
    id: str
    experiment_id: str
    record: JobRecord
    resumed: bool


@contextmanager
def student_run(s, inputs):
    """The run as a `StudentRun`, active in MLflow for the `with` block (which ends it)."""
    import mlflow

    from ..tracking import signals, store
    s.output_dir.mkdir(parents=True, exist_ok=True)
    record = JobRecord(s.job_dir, s.output_dir)
    resume_id = record.resumable_run()
    store.system_metrics_every(s.tracking.system_metrics_interval)
    try:
        context = start(s, inputs.experiment_id, resume_id)
    except mlflow.exceptions.MlflowException as e:
        if not store.denied(e):
            raise
        fail(f"tracking.uri={s.tracking.uri}: user {store.user()} may not create runs in experiment "
             f"{s.tracking.experiment} (403 {e.error_code}); ask its owner for EDIT access")
    if not resume_id:
        record.reset()  # a fresh job: only once its run exists (a refused run loses nothing)
    with context as run, signals.killed_on_interrupt():
        record.update(run_id=run.info.run_id, status="RUNNING")
        student = StudentRun(run.info.run_id, run.info.experiment_id, record, resumed=bool(resume_id))
        if resume_id:
            deliver_kept_metrics(student)
        else:
            log_job(s, inputs.data)
        yield student


def start(s, experiment_id: str, resume_id):
    """`mlflow.start_run` for the resumed run, or a new one named and tagged for the job."""
    import mlflow

    from ..common.redaction import redact
    from ..tracking import store
    nested, system = mlflow.active_run() is not None, bool(s.tracking.system_metrics)
    if resume_id:
        log.info("resuming run %s from %s", resume_id, s.job_dir)
        parent = store.parent_run_id()
        if parent:  # resumed by another sweep (the same command after a stop): it belongs to that sweep now
            client = mlflow.MlflowClient()
            client.set_tag(resume_id, "mlflow.parentRunId", parent)
            client.set_tag(resume_id, "sweep_id", os.environ.get(store.SWEEP_ENV, parent))
        return mlflow.start_run(run_id=resume_id, nested=nested, log_system_metrics=system)
    tags = {"role": "student", "method": s.distill.method, "family": s.family, "git_commit": store.git_commit(),
            "overrides": " ".join(s.overrides), "sweep_id": os.environ.get(store.SWEEP_ENV, ""),
            "output_dir": str(s.output_dir), "job_dir": str(s.job_dir), **(s.trial.tags() if s.trial else {})}
    tags = {k: redact(str(v)) for k, v in tags.items() if str(v)}  # string values only (REST store); none empty
    return mlflow.start_run(experiment_id=experiment_id, parent_run_id=store.parent_run_id(), nested=nested,
                            tags=tags, run_name=s.label, log_system_metrics=system)


def log_job(s, data) -> None:
    """A new run's params, resolved config (an artifact) and training data (its input)."""
    import mlflow

    from ..tracking import dataset
    mlflow.log_params(s.params)
    resolved = s.output_dir / "config_resolved.yaml"
    resolved.write_text(s.resolved_yaml)
    mlflow.log_artifact(str(resolved))
    dataset.log_dataset(data, s.data.as_dict())


def deliver_kept_metrics(run: StudentRun) -> None:
    """What a tracking outage kept from the store when the job stopped, delivered first."""
    from ..tracking.outbox import replay
    from ..tracking.reporter import SPILL
    if replay(run.record.dir / SPILL, run.id):
        log.info("delivered the metrics kept during the tracking outage")
