"""Damaged and interrupted jobs answer in one line (issue: one job, one owner): a garbage job.json names
itself and what to do, promote never gives an alias to tampered weights, SIGTERM ends a job with one line."""
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import processes
import pytest
from mlflow.tracking import MlflowClient

from sweeps import promote, registry
from sweeps.tracking import store

pytestmark = pytest.mark.slow

JOB = ["+debug=tiny", "model.width=8", "tracking.system_metrics=false", "hydra.run.dir=outputs/job"]


run_cli = processes.cli


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny job run to its end."""
    folder = tmp_path_factory.mktemp("damaged")
    proc = run_cli("sweeps.run", JOB, folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def test_a_garbage_job_record_is_one_line_naming_it(finished):
    (record,) = list(finished.glob(".distill-sweeps/jobs/*/job.json"))
    record.write_text('{"run_id": "abc", "stat')
    proc = run_cli("sweeps.run", JOB, finished)
    assert proc.returncode == 2
    line = one_error(proc.stderr)
    assert f"{record} is damaged" in line and f"delete {record.parent} to start this job afresh" in line


def test_promote_never_gives_the_alias_to_tampered_weights(finished, capsys):
    mlflow.set_tracking_uri(f"sqlite:///{finished}/mlflow.db")
    (version,) = MlflowClient().search_model_versions("name = 'distill-students'")
    weights = Path(unquote(urlparse(registry.model_location(version)).path)) / "artifacts" / "weights.pt"
    weights.write_bytes(os.urandom(1024))
    capsys.readouterr()
    assert promote.main(["--model", "distill-students", "--metric", "gap", "--tracking-uri",
                         f"sqlite:///{finished}/mlflow.db"]) == 2
    err = capsys.readouterr().err
    assert f"left out: models:/distill-students/{version.version}: its weights do not match their recorded sha256" in err
    assert "no version of distill-students" in one_error(err)
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_model_version_by_alias("distill-students", "champion")


def test_sigterm_ends_a_job_with_one_line_and_its_run_killed(finished):
    before = set(finished.glob(".distill-sweeps/jobs/*"))
    proc = processes.start("sweeps.run", [*JOB[:-1], "distill.updates_per_phase=5000", "hydra.run.dir=outputs/long"],
                           finished, processes.environment(processes.sqlite(finished)))
    deadline = time.time() + 300
    while time.time() < deadline and not [p for p in finished.glob(".distill-sweeps/jobs/*/distill_latest.pt")
                                           if p.parent not in before]:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == ("stopped by Ctrl-C or SIGTERM: its runs ended KILLED; "
                                            "run the same command again to resume")
    mlflow.set_tracking_uri(f"sqlite:///{finished}/mlflow.db")
    killed = [r for r in mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
              if r.data.params.get("distill.updates_per_phase") == "5000"]
    assert [r.info.status for r in killed] == ["KILLED"]


def test_a_teacher_killed_mid_training_is_continued_in_its_own_run(tmp_path):
    """SIGKILL during teacher training: the next command ends nothing RUNNING behind it; it continues that
    teacher run from the teacher's checkpoint (one teacher run, every loss step at most once)."""
    command = [*JOB[:-1], "teacher.updates=200", "teacher.checkpoint_every=50", "hydra.run.dir=outputs/teacher"]
    proc = processes.start("sweeps.run", command, tmp_path, processes.environment(processes.sqlite(tmp_path)))
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob(".distill-sweeps/teachers/*/train_state.pt")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = run_cli("sweeps.run", command, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "continuing teacher run" in rerun.stdout + rerun.stderr
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
    (teacher,) = [r for r in runs if r.data.tags.get("role") == "teacher"]
    assert teacher.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in runs)
    steps = [m.step for m in MlflowClient().get_metric_history(teacher.info.run_id, "teacher/loss")]
    assert len(steps) == len(set(steps)) and {75, 100, 150, 200} <= set(steps), sorted(steps)


def test_a_full_disk_is_one_line_and_the_same_command_finishes_once_there_is_room(tmp_path):
    """The store and the job folders on a 12 MB filesystem (a tmpfs mounted for the test): the job stops with
    one line naming where it ran out and how much is free, no run is left RUNNING; with room again the same
    command goes on in the same run, every loss step once, and registers."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small filesystem here (needs root)")
    try:
        first = run_cli("sweeps.run", ["+debug=tiny", "hydra.run.dir=out"], small)
        assert first.returncode == 2, first.stderr[-3000:]
        line = one_error(first.stderr)
        assert line.startswith("error: no space left on the device (the job folder ") and "MB free" in line
        assert line.endswith("run the same command again: it goes on from the last checkpoint, in the same run")
        mlflow.set_tracking_uri(f"sqlite:///{small}/mlflow.db")
        before = mlflow.search_runs(search_all_experiments=True, output_format="list")
        assert before and all(r.info.status in ("FINISHED", "FAILED") for r in before), "none left RUNNING"
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        again = run_cli("sweeps.run", ["+debug=tiny", "hydra.run.dir=out"], small)
        assert again.returncode == 0, again.stderr[-3000:]
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
        assert sorted(r.info.run_id for r in runs) == sorted(r.info.run_id for r in before), "the same runs, resumed"
        assert all(r.info.status == "FINISHED" for r in runs)
        client = MlflowClient()
        (student,) = [r for r in runs if r.data.tags.get("role") == "student"]
        assert [m.step for m in client.get_metric_history(student.info.run_id, "distill/loss")] == [10, 20]
        (teacher,) = [r for r in runs if r.data.tags.get("role") == "teacher"]
        assert [m.step for m in client.get_metric_history(teacher.info.run_id, "teacher/loss")] == [25, 40]
        assert len(client.search_model_versions("name = 'distill-students'")) == 1
    finally:
        mlflow.set_tracking_uri(None)
        subprocess.run(["umount", "-l", str(small)])


def test_a_read_only_store_is_one_line_saying_so(tmp_path):
    """A store on a filesystem mounted read-only: one line that says read-only (not "does not answer")."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a filesystem here (needs root)")
    try:
        # (in a process of its own: no open file of this one keeps the store busy at the remount)
        processes.call(store.setup, f"sqlite:///{folder}/mlflow.db", "distill-sweeps")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        proc = processes.cli("sweeps.run", JOB, tmp_path, uri=processes.sqlite(folder))
        assert proc.returncode == 2
        assert one_error(proc.stderr) == (f"error: tracking.uri=sqlite:///{folder}/mlflow.db: the store is read-only "
                                          "(the file, its folder or its filesystem); point tracking.uri at a store "
                                          "this user can write")
    finally:
        mlflow.set_tracking_uri(None)
        subprocess.run(["umount", "-l", str(folder)])
