"""`devices=2` jobs end to end (real processes, gloo): the same registered student as `devices=1`, a
killed job resumed to the same weights, and the same job under submitit-local, as two cluster tasks.

The distillation lr is 3e-5 so that the reduction order (two half-batch means vs one full-batch mean)
cannot flip Adam's first, sign-like updates by more than the tolerance (see test_distributed.py).
"""
import signal
import time

import mlflow
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient

from sweeps import registry
from test_reliability import checkpoint_at, env_for, wait_for

pytestmark = pytest.mark.slow

ARGS = ["+debug=tiny", "device=cpu", "distill.lr=3e-5", "distill.schedule=[8,4,2,1]", "distill.updates_per_phase=20",
        "distill.checkpoint_every=5", "distill.log_every=5"]


def sweeps_run(args, cwd):
    return processes.cli("sweeps.run", args, cwd)


def students(store):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    return [r for r in mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
            if r.data.tags.get("method")]


def student_of(store, run):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    version = MlflowClient().search_model_versions(f"name = 'distill-students' and run_id = '{run.info.run_id}'")[0]
    return registry.load(f"models:/distill-students/{version.version}")


def losses(store, run):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    return [(m.step, m.value) for m in sorted(MlflowClient().get_metric_history(run.info.run_id, "distill/loss"),
                                              key=lambda m: m.step)]


def max_difference(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A basic-launcher multirun `devices=2,1` (the devices=2 job trains the teacher, the other reuses it)."""
    store = tmp_path_factory.mktemp("ddp")
    proc = sweeps_run(["-m", "devices=2,1", *ARGS, f"hydra.sweep.dir={store}/multirun"], store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {int(r.data.params["devices"]): r for r in students(store)}
    assert sorted(runs) == [1, 2] and all(r.info.status == "FINISHED" for r in runs.values())
    return store, runs


def test_devices_2_registers_the_student_that_devices_1_registers(pair):
    store, runs = pair
    one, two = student_of(store, runs[1]), student_of(store, runs[2])
    assert max_difference(one, two) <= 1e-5
    l1, l2 = losses(store, runs[1]), losses(store, runs[2])
    assert [s for s, _ in l1] == [s for s, _ in l2] == list(range(5, 61, 5))
    assert all(a == pytest.approx(b, abs=1e-5) for (_, a), (_, b) in zip(l1, l2))
    assert runs[1].data.metrics["gap"] == pytest.approx(runs[2].data.metrics["gap"], abs=1e-4)
    # one teacher, trained on two ranks by the first job; its losses were reported by rank 0
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    teachers = MlflowClient().search_model_versions("name = 'distill-teachers'")
    assert len(teachers) == 1
    assert runs[1].data.tags["teacher_version"] == runs[2].data.tags["teacher_version"]
    teacher_run = MlflowClient().get_run(teachers[0].run_id)
    assert "teacher/loss" in teacher_run.data.metrics and teacher_run.info.status == "FINISHED"


def ranks_of(pid):
    """A job's rank processes: forked by its fork server (the job's child; CPU ranks), or spawned by the job."""
    import psutil
    found = []
    for child in psutil.Process(pid).children():
        line = " ".join(child.cmdline())
        if "spawn_main" in line:
            found.append(child)
        elif "forkserver import main" in line:
            found.extend(child.children())
    return found


def test_a_killed_worker_then_a_killed_job_both_resume_to_the_uninterrupted_weights(pair, tmp_path):
    """A worker SIGKILLed in phase one: the job fails with one line and stays resumable. The rerun is
    itself SIGKILLed (job process) in phase two: its workers die with it. The third run resumes from the
    mid-phase-two checkpoint, in the same MLflow run, and ends with the uninterrupted run's weights."""
    store, runs = pair
    cmd = ["devices=2", *ARGS, "hydra.run.dir=outputs/job"]
    proc = processes.start("sweeps.run", cmd, tmp_path, env_for(tmp_path))
    wait_for(proc, tmp_path, lambda at: at[0] == 0 and at[1] > 0, "a mid-phase-one checkpoint")
    workers = ranks_of(proc.pid)
    assert len(workers) == 2, [c.cmdline() for c in psutil.Process(proc.pid).children(recursive=True)]
    workers[-1].kill()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    lines = [line for line in (out + err).splitlines() if "devices=2: rank" in line]
    assert lines and all("failed: exited with code -9" in line for line in lines), (out + err)[-3000:]
    [run] = students(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["failure"].startswith("devices=2: rank ")

    proc = processes.start("sweeps.run", cmd, tmp_path, env_for(tmp_path))
    wait_for(proc, tmp_path, lambda at: at[0] == 1 and at[1] > 0, "a mid-phase-two checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = next(tmp_path.glob(".distill-sweeps/jobs/*/distill_latest.pt"))
    time.sleep(1.5)
    killed_at = latest.stat().st_mtime_ns
    at = checkpoint_at(tmp_path)  # where the kill left it (another checkpoint may follow the one waited for)
    time.sleep(1.5)
    assert latest.stat().st_mtime_ns == killed_at, "a worker outlived its job and went on writing checkpoints"
    assert at[0] == 1 and at[1] > 0

    rerun = sweeps_run(["devices=2", *ARGS, "hydra.run.dir=outputs/job"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming run" in rerun.stdout + rerun.stderr
    assert f"resuming distillation at phase 2, update {at[1]}" in rerun.stderr  # rank 0, mid-phase checkpoint
    [resumed] = students(tmp_path)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    steps = [s for s, _ in losses(tmp_path, resumed)]
    assert steps == sorted(set(steps)) == list(range(5, 61, 5))  # no step logged twice, none missing
    assert max_difference(student_of(tmp_path, resumed), student_of(store, runs[2])) <= 1e-6


def test_submitit_local_runs_a_two_job_devices_2_sweep_with_each_job_as_two_tasks(pair):
    store, runs = pair
    reference = student_of(store, runs[2])
    before = {r.info.run_id for r in students(store)}
    proc = sweeps_run(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
                       "hydra.launcher.tasks_per_node=2", "devices=2", *ARGS, "distill.log_every=5,10",
                       f"hydra.sweep.dir={store}/submitit"], store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = [r for r in students(store) if r.info.run_id not in before]
    assert len(new) == 2 and all(r.info.status == "FINISHED" for r in new)  # one run per job, not per task
    for run in new:  # task 0 and task 1 trained as ranks 0 and 1: the elastic launcher's student
        assert max_difference(student_of(store, run), reference) <= 1e-5
