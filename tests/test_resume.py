"""A distillation interrupted mid-phase resumes from its checkpoint to the same final weights."""
import pytest
import torch

from distill_core import data as D
from distill_core.callbacks import Callback, RecordingCallback
from distill_core.distill import DistillConfig, Distiller
from distill_core.teacher import TeacherConfig, train_teacher


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_metrics(self, metrics, step):
        if "distill/loss" in metrics and step >= self.step:
            raise Crash(step)


@pytest.fixture(scope="module", params=["vp", "edm"])
def setup(request):
    toy = D.load("toy2d", toy_size=1024)
    family = {"family": request.param}
    teacher = train_teacher(toy, TeacherConfig(preset="mlp", updates=200, batch_size=128, lr=2e-3, checkpoint_every=0,
                                               family=family, parameterization="v" if request.param == "vp" else "edm"),
                            progress=False)
    return toy, teacher


@pytest.mark.parametrize("method", ["tract", "btd"])
def test_resume_after_a_crash_in_phase_two_gives_identical_weights(setup, method, tmp_path):
    toy, teacher = setup
    cfg = DistillConfig(method=method, schedule=[16, 4, 1], updates_per_phase=60, batch_size=64, lr=1e-3,
                        mu_i=0.9, checkpoint_every=20, log_every=10)
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    twin = Distiller(teacher, toy, cfg, tmp_path / "twin", progress=False, eval_noise=noise).run()

    crashing = Distiller(teacher, toy, cfg, tmp_path / "job", callback=CrashAt(60 + 50), progress=False, eval_noise=noise)
    with pytest.raises(Crash):
        crashing.run()
    recorder = RecordingCallback()
    resumed = Distiller(teacher, toy, cfg, tmp_path / "job", callback=recorder, progress=False, eval_noise=noise)
    result = resumed.run()
    assert [p.steps for p in result.phases] == [4, 1]  # phase 1 was not redone
    assert min(step for step, m in recorder.metrics if "distill/loss" in m) == 60 + 40 + 10  # from update 100
    for a, b in zip(result.model.parameters(), twin.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert result.phases[-1].metrics["gap"] == pytest.approx(twin.phases[-1].metrics["gap"], rel=1e-5)
    assert (tmp_path / "job" / "phase1_4steps.pt").is_file() and (tmp_path / "job" / "phase2_1steps.pt").is_file()
