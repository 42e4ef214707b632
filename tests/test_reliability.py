"""Reliability: a SIGKILLed job resumes in the same MLflow run; a diverged trial fails alone; a tracking
server outage neither stops training nor loses a metric; a sweep stopped by a signal ends KILLED."""
import os
import signal
import time

import mlflow
import optuna
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient
from services import start_mlflow_server, stop

from sweeps import registry

pytestmark = pytest.mark.slow

TINY = ["+debug=tiny", "distill.schedule=[8,4,2,1]", "distill.updates_per_phase=30", "distill.checkpoint_every=10",
        "distill.log_every=5", "hydra.run.dir=outputs/job"]


def env_for(path):
    return processes.environment(processes.sqlite(path))


def checkpoint_at(job_dir):
    """(phase, update) of a job's resume point, read from the checkpoint itself, or None before it exists
    (file times race with the phase file's copy onto distill_latest.pt)."""
    from distill_core.checkpoint import CheckpointError, load_checked
    found = list(job_dir.glob(".distill-sweeps/jobs/*/distill_latest.pt"))
    try:
        state = load_checked(found[0]) if found else None
    except CheckpointError:
        return None
    return (state["phase"], state["step"]) if state else None


def wait_for(proc, job_dir, condition, what):
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, f"the job ended before {what}"
        at = checkpoint_at(job_dir)
        if at is not None and condition(at):
            return at
        time.sleep(0.05)
    raise AssertionError(f"no {what} within 5 minutes")


def test_sigkill_in_phase_two_then_rerun_continues_the_same_run(tmp_path):
    twin_dir, job_dir = tmp_path / "twin", tmp_path / "job"
    twin_dir.mkdir(), job_dir.mkdir()
    twin = processes.cli("sweeps.run", TINY, twin_dir)
    assert twin.returncode == 0, twin.stderr[-2000:]

    proc = processes.start("sweeps.run", TINY, job_dir, env_for(job_dir))
    wait_for(proc, job_dir, lambda at: at[0] == 1 and at[1] > 0, "a mid-phase-two checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    rerun = processes.cli("sweeps.run", TINY, job_dir)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming run" in rerun.stdout + rerun.stderr

    mlflow.set_tracking_uri(f"sqlite:///{job_dir}/mlflow.db")
    client = MlflowClient()
    runs = [r for r in mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
            if r.data.tags.get("method")]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    for key in ("distill/loss", "gap", "teacher_gap", "gap/2step", "gap_ratio"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} has repeated steps: {sorted(steps)}"
    assert sorted(m.step for key in ("gap/4step", "gap/2step", "gap/1step")
                  for m in client.get_metric_history(run_id, key)) == [30, 60, 90], "each phase once"
    assert [m.step for m in client.get_metric_history(run_id, "gap")] == [90], "the result, once"
    versions = client.search_model_versions("name = 'distill-students'")
    assert len(versions) == 1
    resumed = registry.load(f"models:/distill-students/{versions[0].version}")
    mlflow.set_tracking_uri(f"sqlite:///{twin_dir}/mlflow.db")
    uninterrupted = registry.load("models:/distill-students/1")
    for a, b in zip(resumed.parameters(), uninterrupted.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_diverged_trial_fails_alone_and_the_sweep_goes_on(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    proc = processes.cli(
        "sweeps.run", ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                       "hydra/sweeper/sampler=grid", "hydra.sweeper.params=null", "+debug=tiny",
                       "distill.inject_nan_at=3,null", "distill.mu_s=0.5,0.9", f"hydra.sweeper.storage={storage}",
                       "hydra.sweeper.study_name=diverge", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="diverge", storage=storage).get_trials()
    states = sorted(t.state.name for t in trials)
    assert len(trials) == 3 and "FAIL" in states and "COMPLETE" in states
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = [r for r in mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
            if r.data.tags.get("method")]
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert failed and all("non-finite loss" in r.data.tags["failure"] for r in failed)
    assert all(r.data.params["distill.inject_nan_at"] == "3" for r in failed)
    assert any(r.info.status == "FINISHED" for r in runs)


def test_four_parallel_jobs_on_the_default_sqlite_store_all_finish(tmp_path):
    proc = processes.cli(
        "sweeps.run", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                       "distill.mu_s=0.1,0.2,0.3,0.4", "+debug=tiny", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stdout + proc.stderr
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
    students = [r for r in runs if r.data.tags.get("method")]
    assert sorted(float(r.data.params["distill.mu_s"]) for r in students) == [0.1, 0.2, 0.3, 0.4]
    assert all(r.info.status == "FINISHED" for r in students)
    assert len([r for r in runs if r.data.tags.get("role") == "teacher"]) == 1, "the lock let one job train it"
    assert len(MlflowClient().search_model_versions("name = 'distill-students'")) == 4


def test_a_tracking_server_outage_neither_stops_training_nor_loses_a_metric(tmp_path):
    """A real `mlflow server` behind a switchable relay (`services.Switch`), away from the job's first progress
    line until its last distillation checkpoint exists: first a port that takes requests and never answers,
    then the server stopped.
    1. the job trains through it all (the teacher's end and its registration included: registered once the store
       is back) and finishes in the same run with every metric once; no wait of the training thread on the
       outbox while the store was away lasted longer than the outbox's own bound for seeing that a store does
       not answer (`outbox.ANSWER_S`, from the job's log);
    2. with `tracking.outage_limit_s=3`: a second job stops with one line after its next checkpoint
       (exit 3), keeping what it could not deliver; its rerun, with the server back, resumes in the same
       run and delivers it: every loss value arrives once."""
    import re

    from services import Switch

    from sweeps.tracking.outbox import ANSWER_S
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    backend = f"sqlite:///{server_dir}/mlflow.db"
    server, direct = start_mlflow_server(server_dir, backend)
    port = direct.rsplit(":", 1)[1]
    switch = Switch(int(port))
    url = switch.url
    # (no MLflow retries, a request timeout well past ANSWER_S: the outbox sees a silent store by ANSWER_S alone)
    env = {**env_for(tmp_path), "MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(4 * ANSWER_S))}
    teacher = ["teacher.updates=60", "teacher.checkpoint_every=20"]  # (its first progress line at 25: the store goes then)
    proc = processes.start("sweeps.run", [*TINY, *teacher, "tracking.system_metrics_interval=1"], tmp_path, env)
    log_file = tmp_path / "outputs" / "job" / "run.log"
    try:
        deadline = time.time() + 300
        while not (log_file.is_file() and "teacher: " in log_file.read_text()):
            assert proc.poll() is None and time.time() < deadline, "no progress line"
            time.sleep(0.05)
        switch.set("hang")  # the teacher trains on, ends, and distils against a port that never answers
        wait_for(proc, tmp_path, lambda at: at[0] >= 1, "phase two's first checkpoint while the store hangs")
        server.terminate()  # then the server stopped
        server.wait(timeout=30)
        switch.set("pass")
        wait_for(proc, tmp_path, lambda at: at[0] == 3, "the last phase's checkpoint while the server is down")
        assert proc.poll() is None, "the job waits for the store to take what it kept"
        server, _ = start_mlflow_server(server_dir, backend, port=port)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "the store does not answer" in out + err and "answers again after" in out + err
        assert "registering it once the store is back" in out + err
        log = log_file.read_text()
        waits = [float(w) for w in re.findall(r"the training thread waited ([0-9.]+) s \(.*\): the store does not", log)]
        assert waits, "the job saw the store away at a checkpoint"
        assert max(waits) <= ANSWER_S + 1.0, f"a wait on the absent store took {max(waits)} s"
        run, client = finished_with_every_metric(url, "distill-sweeps")
        assert {"sha256.phase1", "sha256.phase2", "sha256.phase3"} <= set(run.data.tags)
        files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        assert {"checkpoints/phase2_2steps.pt", "checkpoints/phase3_1steps.pt"} <= files
        assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), "system metrics on by default"
        (teacher_version,) = client.search_model_versions("name = 'distill-teachers'")
        (student,) = client.search_model_versions("name = 'distill-students'")
        assert student.tags["teacher_version"] == run.data.tags["teacher_version"] == f"distill-teachers/{teacher_version.version}"
        assert run.data.tags["teacher_run_id"] == teacher_version.run_id
        losses = [m.step for m in client.get_metric_history(teacher_version.run_id, "teacher/loss")]
        assert sorted(losses) == sorted(set(losses)) and max(losses) == 60, "the teacher's losses, each once"
        assert client.get_run(teacher_version.run_id).info.status == "FINISHED"

        second = tmp_path / "second"  # (its own job folder; the registered teacher is reused)
        second.mkdir()
        cmd = [*TINY, *teacher, "tracking.outage_limit_s=3", "tracking.system_metrics=false",
               "experiment_name=outage-limit"]
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        proc = processes.start("sweeps.run", cmd, second, env)
        wait_for(proc, second, lambda at: at[0] >= 1, "phase one's checkpoint")
        server.terminate()
        server.wait(timeout=30)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 3, err[-3000:]
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "has not answered for" in errors[0] and "run the same command again" in errors[0]
        assert list(second.glob(".distill-sweeps/jobs/*/undelivered_metrics.jsonl")), "the kept metrics are on disk"
        server, _ = start_mlflow_server(server_dir, backend, port=port)
        rerun = processes.run("sweeps.run", cmd, second, env, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "resuming run" in rerun.stdout + rerun.stderr
        finished_with_every_metric(url, "outage-limit")
        assert not list(second.glob(".distill-sweeps/jobs/*/undelivered_metrics.jsonl"))
    finally:
        proc.kill()
        server.terminate()
        switch.close()


def finished_with_every_metric(url, experiment):
    """The experiment's one student run on the server: FINISHED, each loss and gap logged once."""
    mlflow.set_tracking_uri(url)
    client = MlflowClient()
    (run,) = [r for r in mlflow.search_runs(experiment_names=[experiment], output_format="list")
              if r.data.tags.get("role") == "student"]
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "distill/loss")]
    assert sorted(steps) == list(range(5, 91, 5)), "every logged loss arrived, once"
    assert sorted(m.step for key in ("gap/4step", "gap/2step", "gap/1step")
                  for m in client.get_metric_history(run.info.run_id, key)) == [30, 60, 90], "each phase once"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "gap")] == [90], "the result, once"
    return run, client


def test_a_sweep_stopped_by_sigterm_ends_its_parent_and_running_child_killed(tmp_path):
    proc = processes.start("sweeps.run", ["-m", "distill.mu_s=0.5,0.9", *TINY[:-1], "distill.updates_per_phase=2000",
                                          "hydra.sweep.dir=multirun"], tmp_path, env_for(tmp_path))
    try:
        wait_for(proc, tmp_path, lambda at: at[1] > 0, "a distillation checkpoint")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "sweep KILLED" in err, err[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    by_role = {}
    for r in mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list"):
        by_role.setdefault(r.data.tags.get("role"), []).append(r.info.status)
    assert by_role["sweep"] == ["KILLED"] and by_role["student"] == ["KILLED"], by_role
    assert by_role["teacher"] == ["FINISHED"]
