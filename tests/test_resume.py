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


@pytest.mark.parametrize("method", ["tract", "btd", "cd"])
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


class AskedAt(RecordingCallback):
    def __init__(self):
        super().__init__()
        self.asked = []

    def keep_going(self, phase, update, metrics):
        self.asked.append((phase, update))
        return True


def test_update_counts_per_phase(setup, tmp_path):
    """`updates_per_phase=[a, b]`: [n, n] is exactly `n`; [20, 40] trains 20 then 40 updates, logs at the
    cumulative update count, asks to go on at update 20, and derives each phase's mu_i from the residual."""
    toy, teacher = setup
    base = dict(schedule=[16, 4, 1], batch_size=64, lr=1e-3, mu_i_residual=0.01, checkpoint_every=0, log_every=10)
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    uniform = Distiller(teacher, toy, DistillConfig(updates_per_phase=30, **base), tmp_path / "a", progress=False,
                        eval_noise=noise).run()
    listed = Distiller(teacher, toy, DistillConfig(updates_per_phase=[30, 30], **base), tmp_path / "b", progress=False,
                       eval_noise=noise).run()
    for a, b in zip(uniform.model.parameters(), listed.model.parameters()):
        assert torch.equal(a, b)
    recorder = AskedAt()
    uneven = Distiller(teacher, toy, DistillConfig(updates_per_phase=[20, 40], **base), tmp_path / "c",
                       callback=recorder, progress=False, eval_noise=noise)
    uneven.run()
    assert [step for step, m in recorder.metrics if "distill/loss" in m] == [10, 20, 30, 40, 50, 60]
    assert recorder.asked == [(0, 20)]
    assert uneven.ema_i.momentum == pytest.approx(0.01 ** (1 / 40))
    with pytest.raises(ValueError, match=r"distill.updates_per_phase must be a positive integer or a list of 2"):
        Distiller(teacher, toy, DistillConfig(updates_per_phase=[20], **base), tmp_path / "d")


def test_a_truncated_latest_checkpoint_resumes_from_the_last_phase_file(setup, tmp_path, caplog):
    """A kill while `distill_latest.pt` was being replaced (or a full disk) leaves it truncated: the job goes
    back to the last good phase file, with a warning naming the damaged one, and ends with the same weights."""
    toy, teacher = setup
    cfg = DistillConfig(method="tract", schedule=[16, 4, 1], updates_per_phase=40, batch_size=64, lr=1e-3,
                        mu_i=0.9, checkpoint_every=20, log_every=10)
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    twin = Distiller(teacher, toy, cfg, tmp_path / "twin", progress=False, eval_noise=noise).run()
    with pytest.raises(Crash):
        Distiller(teacher, toy, cfg, tmp_path / "job", callback=CrashAt(40 + 30), progress=False, eval_noise=noise).run()
    latest = tmp_path / "job" / "distill_latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    recorder = RecordingCallback()
    with caplog.at_level("WARNING", logger="distill_core.distill"):
        result = Distiller(teacher, toy, cfg, tmp_path / "job", callback=recorder, progress=False, eval_noise=noise).run()
    assert f"checkpoint {latest} is corrupt" in caplog.text and "resuming from an earlier checkpoint" in caplog.text
    assert min(step for step, m in recorder.metrics if "distill/loss" in m) == 40 + 10, "phase two redone from its start"
    for a, b in zip(result.model.parameters(), twin.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
