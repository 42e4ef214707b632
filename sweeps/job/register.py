"""Stage 5, registration: the final student as a new version of `registry.name`, with its tags.

Once per job: a resumed job that had registered keeps its version. The version's tags say what it is
and how it measured (method, family, steps, schedule, dataset, teacher_version, the final phase's
metrics), which is what `sweeps.promote` ranks by.
"""
import logging

from ..teachers import TAG

log = logging.getLogger(__name__)


def log_pipeline(student) -> None:
    """A student on diffusers' UNet2DModel also carries itself as a diffusers pipeline folder (artifact `diffusers/`)."""
    import tempfile

    import mlflow

    from distill_core.export import export_problem, save_pipeline
    if export_problem(student) is None:
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifacts(str(save_pipeline(student, tmp)), "diffusers")


def register(s, run, result, teacher_ref) -> str:
    """The student's version number."""
    from ..tracking import registry
    last = result.phases[-1]
    version = run.record.get("registered_version")
    if version is None:
        student = result.model
        student.info[TAG] = teacher_ref.tag
        tags = {"method": s.distill.method, "family": s.family, "steps": last.steps, "schedule": s.distill.schedule,
                "dataset": s.data.name, TAG: teacher_ref.tag, "parameterization": student.family.parameterization,
                **last.metrics}
        version = registry.log_and_register(student, "student", s.registry.name, tags, run.id,
                                            pickle=s.registry.pickle, model_id=run.record.get("model_id"))
        log_pipeline(student)
        run.record.update(registered_version=version)
    log.info("registered %s version %s (%s, %d steps): %s", s.registry.name, version, s.distill.method, last.steps,
             ", ".join(f"{k}={v:.4g}" for k, v in last.metrics.items()))
    return version
