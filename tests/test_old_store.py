"""A store written by the flat `sweeps/` layout (commit 854ecac, before the application was split into
rooms) is read by this one: its killed job resumes in the same run, its teacher is reused, promote,
report and jumps work on it. The store was made by that commit's own code
(`tests/data/make_old_layout_store.py`), not by hand; the test moves its paths to where it unpacks it.
A job's key is its resolved config: a change that adds or renames a config key changes every job's key, so
this test then says so (the killed job is not resumed): decide whether in-flight jobs may restart, and
remake the store with the commit before the change."""
import sqlite3
import sys
import tarfile
from pathlib import Path

import mlflow
import processes
import pytest
from mlflow.tracking import MlflowClient

from sweeps import jumps, promote, registry, report

pytestmark = pytest.mark.slow

STORE = Path(__file__).parent / "data" / "old_layout_store.tar.gz"
sys.path.insert(0, str(STORE.parent))
from make_old_layout_store import COMMON, KILLED  # noqa: E402  (the commands that made it)


def unpack(folder: Path) -> None:
    """The store as the old code left it, its absolute paths (artifact locations) moved to `folder`."""
    with tarfile.open(STORE) as tar:
        tar.extractall(folder, filter="data")
    origin = (folder / "ORIGIN").read_text()
    with sqlite3.connect(folder / "mlflow.db") as con:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in con.execute(f"PRAGMA table_info('{table}')").fetchall():
                if any(t in column[2].upper() for t in ("CHAR", "TEXT", "CLOB")):
                    con.execute(f'UPDATE "{table}" SET "{column[1]}" = REPLACE("{column[1]}", ?, ?)', (origin, str(folder)))


def run_cli(module: str, args: list, cwd: Path):
    # the defaults, as the store was made with: the job keys depend on them
    env = processes.environment(MLFLOW_TRACKING_URI=None, DISTILL_SWEEPS_CACHE=None)
    return processes.run(module, args, cwd, env, timeout=600)


def test_a_store_of_the_flat_layout_resumes_reuses_promotes_and_reports(tmp_path, capsys):
    unpack(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    (killed,) = [r for r in mlflow.search_runs(experiment_names=["ablation-tract_mu_s"], output_format="list")
                 if r.info.status == "RUNNING"]
    resumed = run_cli("sweeps.run", KILLED, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {killed.info.run_id}" in resumed.stdout + resumed.stderr
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    losses = [m.step for m in client.get_metric_history(run.info.run_id, "distill/loss")]
    assert len(losses) == len(set(losses)) and {25, 30, 60, 85, 90} <= set(losses), "no loss step twice"
    gaps = [m.step for m in client.get_metric_history(run.info.run_id, "gap")]  # (per phase before the kill:
    assert len(gaps) == len(set(gaps)) and max(gaps) == 90  # the old layout's code; the result once after)
    another = run_cli("sweeps.run", [*COMMON, "distill.mu_s=0.7", "hydra.run.dir=outputs/another"], tmp_path)
    assert another.returncode == 0, another.stderr[-3000:]
    assert "reusing teacher distill-teachers version 1" in another.stdout + another.stderr
    teachers = [r for r in mlflow.search_runs(experiment_names=["ablation-tract_mu_s"], output_format="list")
                if r.data.tags.get("role") == "teacher"]
    assert len(teachers) == 1 and len(client.search_model_versions("name = 'distill-teachers'")) == 1
    versions = client.search_model_versions("name = 'distill-students'")
    assert len(versions) == 3 and {v.tags["teacher_version"] for v in versions} == {"distill-teachers/1"}
    assert next(v for v in versions if v.run_id == run.info.run_id).tags["steps"] == "1"
    uri = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]  # (the tools in this process: their `main`)
    assert promote.main(["--model", "distill-students", "--metric", "gap", *uri]) == 0
    champion = client.get_model_version_by_alias("distill-students", "champion")
    assert float(champion.tags["gap"]) == min(float(v.tags["gap"]) for v in versions)
    assert registry.load("models:/distill-students@champion").info["steps"] == 1
    capsys.readouterr()
    assert report.main(["tract_mu_s", "--no-mlflow-run", "--out", str(tmp_path / "reports"), *uri]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.")}
    assert {"0.5", "0.7", "0.9"} <= set(rows) and all("missing" not in rows[k].split("|")[3] for k in ("0.5", "0.9"))
    assert jumps.main([run.info.run_id, *uri]) == 0 and "## phase 3: 2 -> 1 steps" in capsys.readouterr().out
