"""One job, one owner: two identical jobs started together on one store, exactly one trains; the other
exits 2 with one line naming the owner and touches nothing (issue: concurrent jobs shared a run)."""
import mlflow
import processes
import pytest
from mlflow.tracking import MlflowClient

from sweeps.tracking import store

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_identical_jobs_started_together_one_trains_the_other_names_the_owner(tmp_path, backend, request):
    """On a SQLite file and on a PostgreSQL server (the test run's, a database of its own)."""
    uri = processes.sqlite(tmp_path) if backend == "sqlite" else request.getfixturevalue("postgres").database("owners")
    store.setup(uri, "distill-sweeps")  # (the store exists first, as a sweep's driver makes it)
    command = ["+debug=tiny", "model.width=8", "tracking.system_metrics=false", "hydra.run.dir=outputs/job"]
    procs = [processes.start("sweeps.run", command, tmp_path, processes.environment(uri)) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], [err[-2000:] for _, err in outputs]
    owner = next(p for p in procs if p.returncode == 0)
    _, err = outputs[[p.returncode for p in procs].index(2)]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"is being run by pid {owner.pid} on " in errors[0], err[-2000:]
    assert "another experiment_name or seed" in errors[0]
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    runs = mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
    students = [r for r in runs if r.data.tags.get("role") == "student"]
    assert len(students) == 1 and students[0].info.status == "FINISHED"
    assert len([r for r in runs if r.data.tags.get("role") == "teacher"]) == 1
    steps = [m.step for m in client.get_metric_history(students[0].info.run_id, "distill/loss")]
    assert len(steps) == len(set(steps)), "no step logged twice"
    (version,) = client.search_model_versions("name = 'distill-students'")
    assert client.get_run(version.run_id).info.status == "FINISHED"
    assert f"in run {students[0].info.run_id}" in errors[0] or "its run is not started yet" in errors[0]
