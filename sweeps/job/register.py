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
    """The student's version number, registered once: a resumed job finds the version its run registered, or
    the logged model a killed attempt left (logged in full: registered now; half-logged: marked FAILED and
    logged anew), and never registers twice or links a model to the run twice."""
    from ..tracking import registry
    last = result.phases[-1]
    version = run.record.get("registered_version") or registry.version_from_run(s.registry.name, run.id)
    if version is None:
        student = result.model
        student.info[TAG] = teacher_ref.tag
        tags = {"method": s.distill.method, "family": s.family, "steps": last.steps, "schedule": s.distill.schedule,
                "dataset": s.data.name, TAG: teacher_ref.tag, "parameterization": student.family.parameterization,
                "num_classes": student.num_classes, **last.metrics}
        log_pipeline(student)
        version = log_and_register(s, run, student, tags)
    run.record.update(registered_version=version)
    log.info("registered %s version %s (%s, %d steps): %s", s.registry.name, version, s.distill.method, last.steps,
             ", ".join(f"{k}={v:.4g}" for k, v in last.metrics.items()))
    return version


def log_and_register(s, run, student, tags: dict) -> str:
    from ..tracking import registry
    model_id = run.record.get("model_id")
    state = registry.logged_state(run.id, model_id)
    if state == "ready":
        return registry.register_logged(f"models:/{model_id}", registry.logged_digest(model_id), "student",
                                        s.registry.name, tags, run.id, s.registry.pickle)
    if state == "linked":
        log.info("the student's logged model %s was left half-logged by a killed attempt; logging it anew", model_id)
        registry.abandon_model(model_id)
        model_id = None
    return registry.log_and_register(student, "student", s.registry.name, tags, run.id, pickle=s.registry.pickle,
                                     model_id=model_id)  # (its final evaluation is linked to it as it is logged)
