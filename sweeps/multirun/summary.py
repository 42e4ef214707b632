"""A sweep's result at a glance: its jobs ranked by their objective, as the parent run's description (updated
as each job ends) and as the table the sweep prints at its end."""
from mlflow.tracking import MlflowClient

ML = "?workflowType=machine_learning"


def ranked_jobs(parent_id: str) -> list:
    """The sweep's student runs, best objective first (runs without one last)."""
    client = MlflowClient()
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent_id}' and tags.role = 'student'", max_results=1000)
    return sorted(runs, key=lambda r: (r.data.metrics.get("objective") is None, r.data.metrics.get("objective", 0.0)))


def _value(run) -> str:
    value = run.data.metrics.get("objective")
    return "-" if value is None else f"{value:.4g}"


def text_table(runs: list) -> str:
    """For the console: rank, objective, status, the run's name (its swept values)."""
    objective = next((r.data.params.get("objective") for r in runs if r.data.params.get("objective")), "objective")
    lines = [f"{'rank':>4}  {objective:>9}  {'status':<8}  run"]
    lines += [f"{i:>4}  {_value(r):>9}  {r.info.status:<8}  {r.info.run_name}" for i, r in enumerate(runs, 1)]
    return "\n".join(lines)


def description(runs: list, experiment_id: str) -> str:
    """For the parent run's page: the same ranking with links (a fixed-width block, then one link per job)."""
    if not runs:
        return "**Sweep**: no job has finished yet."
    best = runs[0]
    links = ", ".join(f"[{i}](#/experiments/{experiment_id}/runs/{r.info.run_id}{ML})" for i, r in enumerate(runs, 1))
    return (f"**Sweep** of {len(runs)} job(s); best: **{best.info.run_name}** ({_value(best)}). Jobs by rank: {links}."
            f"\n\n```\n{text_table(runs)}\n```")


def update(parent_id: str) -> str:
    """Write the parent's description from the store; returns the console table."""
    client = MlflowClient()
    runs = ranked_jobs(parent_id)
    client.set_tag(parent_id, "mlflow.note.content", description(runs, client.get_run(parent_id).info.experiment_id))
    return text_table(runs)
