"""BTD, TRACT and consistency distillation from one teacher in one multirun, and one report (issue 43): every method's
final student judged at 1, 2 and 4 steps against the same reference; the CD student in the registry samples with its
own multistep sampler, through `registry.load` and the pyfunc alike."""
import mlflow
import numpy as np
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient

from sweeps import registry

pytestmark = pytest.mark.slow


def test_three_methods_one_teacher_one_table(tmp_path):
    sweep = processes.cli("sweeps.run", ["-m", "+experiment=three_methods", "+debug=tiny", "seed=0",
                                         "distill.updates_per_phase=6", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    report = processes.cli("sweeps.report", ["three_methods", "--no-mlflow-run", "--out", "reports"], tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    table = (tmp_path / "reports" / "three_methods" / "three_methods.md").read_text()
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in table.splitlines() if line.startswith(("| btd", "| tract", "| cd"))}
    assert set(rows) == {(m, s) for m in ("btd", "tract", "cd") for s in ("1", "2", "4")}, table
    assert all(r[0] == "1" and r[1] != "missing" and r[2] != "missing" for r in rows.values()), table  # a gap each

    mlflow.set_tracking_uri(processes.sqlite(tmp_path))
    try:
        client = MlflowClient()
        versions = {v.tags["method"]: v for v in client.search_model_versions("name='distill-students'")}
        assert set(versions) == {"btd", "tract", "cd"} and len({v.tags["teacher_version"] for v in versions.values()}) == 1
        run = client.get_run(versions["cd"].run_id)
        assert {"gap/1step", "gap/2step", "gap/4step", "pixel_fd/4step"} <= set(run.data.metrics)
        assert run.data.metrics["gap"] == pytest.approx(run.data.metrics["gap/1step"], rel=1e-3)  # the run's result
        uri = f"models:/distill-students/{versions['cd'].version}"
        student = registry.load(uri)
        assert student.family.name == "consistency" and student.info["steps"] == 1
        noise = torch.randn(3, *student.data_shape, generator=torch.Generator().manual_seed(0))
        predicted = mlflow.pyfunc.load_model(uri).predict(noise.numpy(), params={"steps": 2})
        np.testing.assert_allclose(predicted, student.sample(noise, 2).numpy(), atol=1e-5)
    finally:
        mlflow.set_tracking_uri(None)
