"""The flagship command at the published network's size (issue 41): `+experiment=tract_edm_cifar10` on a 56.4M
NCSN++ with random weights, written in NVlabs' file format by our own code (`edm_files`), with the budgets cut to
seconds: the reader, the teacher's registration, one phase, its checkpoint, the student's registration and the
report's row. The console tells the story and nothing else: no library warnings, no outage declared while a
checkpoint of a GB is copied into the store."""
import numpy as np
import processes
import pytest
from mlflow.tracking import MlflowClient

from distill_core.models import count_parameters
from edm_files import random_edm_model, write_edm_file

pytestmark = pytest.mark.slow
CUT = ["distill.schedule=[4,1]", "distill.updates_per_phase=2", "distill.batch_size=2", "eval.fid=false",
       "eval.gap_samples=1", "eval.grid_samples=1", "device=cpu"]


def test_tract_edm_cifar10_runs_end_to_end_at_the_published_size(tmp_path):
    model = random_edm_model("edm_ncsnpp_cifar10")
    assert count_parameters(model.net) == 56_395_523  # NVlabs' NCSN++ CIFAR-10 configuration
    write_edm_file(tmp_path / "teacher.pkl", model)
    del model
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cifar.npz", x_train=rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8),
             y_train=rng.integers(0, 10, 16), x_test=rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8),
             y_test=rng.integers(0, 10, 4))
    job = processes.cli("sweeps.run", ["+experiment=tract_edm_cifar10", "teacher.source=edm:teacher.pkl",
                                       "data.root=cifar.npz", *CUT], tmp_path)
    console = job.stdout + job.stderr
    assert job.returncode == 0, console[-3000:]
    assert "registering the teacher: 56.4M parameters" in console and "registering the student: 56.4M" in console
    assert "the teacher's reference: 1 samples at 4 steps" in console
    for noise in ("Warning", "Retrying", "does not answer"):
        assert noise not in console, f"{noise!r} reached the console:\n{console[-3000:]}"

    processes.sqlite(tmp_path)
    client = MlflowClient(processes.sqlite(tmp_path))
    (teacher,) = client.search_model_versions("name='distill-teachers'")
    (student,) = client.search_model_versions("name='distill-students'")
    assert teacher.tags["network"] == "SongUNet" and student.tags["steps"] == "1"
    run = client.get_run(student.run_id)
    params = run.data.params
    assert (params["precision"], params["distill.clip_teacher"], params["distill.clip_self_teacher"],
            params["distill.nonfinite_grads"]) == ("fp32", "False", "True", "zero"), "ml-tract's EDM recipe"
    assert "distill/nonfinite_grads" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/phase1_1steps.pt"]

    report = processes.cli("sweeps.report", ["tract_edm_cifar10", "--no-mlflow-run", "--out", "reports"], tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    table = (tmp_path / "reports" / "tract_edm_cifar10" / "tract_edm_cifar10.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 1 "))
    assert student.tags["gap"] in row and "3.78" in row, table
