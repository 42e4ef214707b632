"""Stage 4, the distillation: the schedule's phases on the job's ranks, reported into the student's run.

The student's logged model is created at the job's start (`student_model`, once per job), so that the final
phase's metrics link to it; a resumed job's reporter skips the metric steps its run already holds. The gap is measured on the
same fixed noise in every phase (`eval.gap_samples`, seeded by `seed + 1`).
"""


def student_model(s, run) -> None:
    """The student's logged model, created once per job (before the teacher: at the job's start, while the store
    answers), so that the final phase's metrics link to it."""
    import mlflow
    if not run.record.get("model_id"):
        # (the client's call, not mlflow.initialize_logged_model: that makes it the active model, and the system
        # metrics thread's first sample would link to it; only the final evaluation does)
        model = mlflow.MlflowClient().create_logged_model(run.experiment_id, name="student", source_run_id=run.id,
                                                          params={k: str(v) for k, v in s.params.items()})
        run.record.update(model_id=model.model_id)


def distil(s, run, teacher, data, ranks):
    """The `distill_core.distill.DistillResult` (its `stopped_after` is set when a pruner stopped it)."""
    import mlflow
    import torch

    from ..ranks.tasks import distill_task
    from ..tracking import store
    from ..tracking.reporter import RunReporter
    from ..tracking.run_logger import logged_steps
    from .evaluation import PhaseEvaluation
    reporter = RunReporter(mlflow.get_tracking_uri(), run.id, synchronous=not s.tracking.async_logging,
                           logged=logged_steps(run.id) if run.resumed else None,
                           evaluation=PhaseEvaluation(s.eval, s.seed), trial=s.trial,
                           outage_limit_s=float(s.tracking.outage_limit_s), model_id=run.record.get("model_id"),
                           final_steps=int(s.distill.schedule[-1]))
    noise = torch.randn((s.eval.gap_samples, *teacher.data_shape), generator=torch.Generator().manual_seed(s.seed + 1))
    result = ranks.run(distill_task, teacher, data, s.distill, run.record.dir, reporter, noise)
    store.flush()
    return result
