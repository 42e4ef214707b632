"""The runs a report reads back from MLflow: each finished distillation run's cell, final values and phases."""
from .specs import PHASE_METRICS, SPECS


def collect(name: str) -> list[dict]:
    """The experiment's finished distillation runs: {key, final: {metric: latest}, phases: {steps: {metric}}}."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ...teachers import TAG
    from ...tracking.metric_keys import by_step_count
    spec, client = SPECS[name], MlflowClient()
    runs = mlflow.search_runs(experiment_names=[f"ablation-{name}"], output_format="list",
                              filter_string="attributes.status != 'RUNNING'")  # (IN: run ids only)
    out = []
    for r in runs:
        if not r.data.tags.get("method"):
            continue  # teacher and report runs
        pruned = r.data.tags.get("pruned_at_phase")
        if r.info.status != "FINISHED" and not pruned:
            continue  # failed, or cut off by hand
        try:
            key = spec["key"](r.data.params)
        except (KeyError, ValueError, SyntaxError):
            continue
        phases = by_step_count(r.data.metrics)
        if not phases and "phase_steps" in r.data.metrics:  # a run logged before the step-count keys
            history = {m: {h.step: h.value for h in client.get_metric_history(r.info.run_id, m)}
                       for m in PHASE_METRICS + ("phase_steps",) if m in r.data.metrics}
            steps = history.pop("phase_steps", {})
            phases = {int(steps[i]): {m: h[i] for m, h in history.items() if i in h} for i in sorted(steps)}
        out.append({"key": key, "final": dict(r.data.metrics), "phases": phases,
                    "teacher": r.data.tags.get(TAG),
                    "sampler": r.data.params.get("diffusion.teacher_sampler", "ddim"),
                    "fid_protocol": fid_protocol(r.data.tags), "pruned_at_phase": pruned})
    return out


def fid_protocol(tags: dict):
    """How a run's FID was measured (None without a FID): sample count, reference, seed sets, extrapolation."""
    if "fid.num_samples" not in tags:
        return None
    return (f"{tags['fid.num_samples']} samples vs {tags.get('fid.reference', '?')} "
            f"(sha256 {tags.get('fid.reference_sha256', '?')}), {tags.get('fid.extractor', '?')} weights "
            f"{tags.get('fid.weights_sha256', '?')}, {tags.get('fid.protocol', '?')}")
