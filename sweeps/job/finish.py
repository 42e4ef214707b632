"""Stage 6, the finish: the objective the sweeper gets (logged once), the run's description, the link."""


def finish(s, run, result, version: str, teacher_ref) -> float:
    """The job's objective: the last phase's value of `objective`."""
    import mlflow

    from distill_core.distill import phase_updates

    from ..common.errors import fail
    from ..tracking import store
    from ..tracking.describe import describe_run
    value = result.phases[-1].metrics.get(s.objective)
    if value is None:
        fail(f"objective={s.objective} was not computed (enable eval.{s.objective})")
    total = sum(phase_updates(s.distill))
    if s.trial is not None:  # the last phase's value is the trial's last intermediate value too
        s.trial.report(value, total)
    mlflow.log_metric("objective", float(value), step=total)  # once: what the sweeper gets (param `objective` names it)
    teacher_run = mlflow.get_run(run.id).data.tags.get("teacher_run_id", "")
    note = describe_run(result, s.what, f"{s.registry.name}/{version}", teacher_ref, run.experiment_id, teacher_run,
                        run.id)
    mlflow.set_tag("mlflow.note.content", note)
    if run.record.get("model_id"):  # the logged model's page shows the same description
        mlflow.MlflowClient().set_logged_model_tags(run.record.get("model_id"), {"mlflow.note.content": note})
    run.record.update(status="FINISHED")
    print(summary(result, s, f"{s.registry.name}/{version}"), flush=True)
    if store.parent_run_id() is None:  # (a sweep prints its own link at its end)
        print(f"runs: {store.ui_link(s.tracking.uri, run.experiment_id)}", flush=True)
    return float(value)


def summary(result, s, version: str) -> str:
    """The job's result on the console: each phase's student against the teacher at the same step count (with
    both class accuracies, for a class-conditional job)."""
    classes = any("class_acc" in p.metrics for p in result.phases)
    lines = [f"{s.what}: registered {version}", f"  {'phase':>5}  {'steps':>5}  {'student gap':>11}  "
             f"{'teacher gap':>11}  {'ratio':>6}" + (f"  {'class acc':>9}  {'teacher':>7}" if classes else "")]
    for p in result.phases:
        for steps, metrics in [*sorted(p.also.items(), reverse=True), (p.steps, p.metrics)]:  # (the final student
            gap, teacher = metrics.get("gap", float("nan")), metrics.get("teacher_gap", float("nan"))  # at other counts)
            ratio = gap / teacher if teacher else float("nan")
            line = f"  {p.phase + 1:>5}  {steps:>5}  {gap:>11.4f}  {teacher:>11.4f}  {ratio:>6.2f}"
            if classes:
                line += f"  {metrics.get('class_acc', float('nan')):>9.3f}  {metrics.get('teacher_class_acc', float('nan')):>7.3f}"
            lines.append(line)
    return "\n".join(lines)
