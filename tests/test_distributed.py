"""Data parallelism in real processes (torch's elastic launcher, gloo): two ranks train what one device
trains, a failing or drifting rank ends the launch with one line.

Equivalence is checked at lr 1e-4: Adam's first updates are about lr * sign(g), so a gradient
component that is zero up to rounding flips sign with the reduction order (two half-batch means
averaged by DDP vs one full-batch mean) and moves a weight by up to lr. At lr 1e-3 a few hundred of
the 270k weights differ by up to 3e-4 after 30 updates; at 1e-4 the largest difference is ~2e-6.
"""
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from distill_core import data as D
from distill_core.callbacks import Callback
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig
from distill_core.placement import DriftError
from distill_core.teacher import TeacherConfig
from sweeps.ranks.launch import Ranks, WorkerError
from sweeps.ranks.tasks import distill_task, teacher_task


class LineCallback(Callback):
    def __init__(self, path):
        self.path = path

    def on_metrics(self, metrics, step):
        with open(self.path, "a") as f:
            f.write(json.dumps([step, metrics]) + "\n")


class FileRecorder:
    """Stands in for the MLflow RunReporter: rank 0 appends what it reports to a file (picklable)."""

    def __init__(self, path):
        self.path = str(path)

    def callback(self, *args, **kwargs):
        return LineCallback(self.path)

    def read(self):
        return [json.loads(line) for line in Path(self.path).read_text().splitlines()]


def assert_same_weights(a, b, atol=1e-5):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    worst = max(float((sa[k] - sb[k]).abs().max()) for k in sa)
    assert worst <= atol, f"weights differ by up to {worst}"


def assert_same_losses(a, b, atol=1e-5):
    assert [s for s, _ in a] == [s for s, _ in b] and a
    for (_, ma), (_, mb) in zip(a, b):
        for key, value in ma.items():
            if key.endswith("/loss"):
                assert value == pytest.approx(mb[key], abs=atol), key


@pytest.fixture(scope="module")
def digits():
    return D.load("digits")


@pytest.fixture(scope="module")
def teachers(digits, tmp_path_factory):
    """The same teacher trained on one device and on two ranks."""
    tmp = tmp_path_factory.mktemp("teachers")
    tc = TeacherConfig(preset="unet_tiny", updates=20, batch_size=32, lr=1e-4, warmup=5, checkpoint_every=0)
    out = {}
    for n in (1, 2):
        recorder = FileRecorder(tmp / f"losses{n}.jsonl")
        out[n] = (Ranks(n, "cpu").run(teacher_task, digits, tc, recorder, tmp / f"teacher{n}.pt"), recorder.read())
    return out


def test_teacher_training_on_two_ranks_equals_one_device(teachers):
    (one, losses1), (two, losses2) = teachers[1], teachers[2]
    assert_same_weights(one, two)
    assert_same_losses(losses1, losses2)
    assert len(losses1) == 1 and losses1[0][0] == 20  # (log_every 25: the last update logs)


def conditional_teacher(teacher):
    """`teacher`'s weights with a class embedding of 10 classes (random, scaled up so that labels matter)."""
    torch.manual_seed(0)
    out = DiffusionModel("unet_tiny", teacher.data_shape, teacher.family.config(), network_overrides={"num_classes": 10})
    out.load_state_dict(teacher.state_dict(), strict=False)
    with torch.no_grad():
        out.net.label_emb.weight.mul_(10)
    return out


@pytest.mark.parametrize("method,conditional", [("tract", False), ("btd", False), ("cd", False), ("tract", True)])
def test_distillation_on_two_ranks_equals_one_device(teachers, digits, method, conditional, tmp_path):
    """(conditional: each rank draws its own labels with its own data; one label tensor per update.)"""
    teacher = conditional_teacher(teachers[1][0]) if conditional else teachers[1][0]
    cfg = DistillConfig(method=method, schedule=[8, 4, 2], updates_per_phase=12, batch_size=32, lr=1e-4, mu_i=0.9,
                        mu_s=0.5, checkpoint_every=0, log_every=4)
    noise = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    results = {}
    for n in (1, 2):
        recorder = FileRecorder(tmp_path / f"losses{n}.jsonl")
        results[n] = (Ranks(n, "cpu").run(distill_task, teacher, digits, cfg, tmp_path / f"job{n}", recorder, noise),
                      recorder.read())
    (one, losses1), (two, losses2) = results[1], results[2]
    assert_same_weights(one.model, two.model)
    assert_same_losses(losses1, losses2)
    assert sum("distill/loss" in m for _, m in losses1) == 6  # 3 logging points per phase, 2 phases
    for p1, p2 in zip(one.phases, two.phases):  # rank 0 evaluated the same model
        assert p1.metrics["gap"] == pytest.approx(p2.metrics["gap"], abs=1e-5)
    # rank 0 wrote the checkpoints (the self-teacher, the inference EMA and the student were compared
    # across ranks at each phase end, or the launch would have failed)
    assert (tmp_path / "job2" / "phase2_2steps.pt").is_file()


class StoppingCallback(LineCallback):
    def keep_going(self, phase, update, metrics):
        return False  # (only rank 0's callback is asked)


class StoppingRecorder(FileRecorder):
    def callback(self, *args, **kwargs):
        return StoppingCallback(self.path)


def test_a_stop_decided_on_rank_0_stops_every_rank_at_the_phase_end(teachers, digits, tmp_path):
    """A sweep's pruner answers on rank 0 only; the other rank follows it out of the loop (no hang)."""
    cfg = DistillConfig(schedule=[8, 4, 2, 1], updates_per_phase=4, batch_size=32, checkpoint_every=0, log_every=4)
    result = Ranks(2, "cpu").run(distill_task, teachers[1][0], digits, cfg, tmp_path / "job", StoppingRecorder(
        tmp_path / "losses.jsonl"), torch.randn(8, 1, 8, 8))
    assert result.stopped_after == 1 and [p.steps for p in result.phases] == [4]
    assert result.model.info["steps"] == 4 and result.model.info["schedule"] == [8, 4]
    assert [step for step, m in StoppingRecorder(tmp_path / "losses.jsonl").read() if "gap" in m] == [4]  # (at the cumulative update count)


# --- tasks for the failure tests (module-level: spawned workers import them by name) ---
def raising_task(placement, device, message):
    if placement.rank == 1:
        raise ValueError(message)
    placement.barrier()  # rank 0 waits on a collective that rank 1 never joins: must not hang


def killed_task(placement, device):
    if placement.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    placement.barrier()


def drifting_task(placement, device):
    model = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(model.weight, 0.5)
    if placement.rank == 1:
        with torch.no_grad():
            model.weight[0, 0] += 1e-7
    placement.check_in_step("student", model)


def test_a_rank_that_raises_ends_the_launch_with_one_line_naming_it():
    with pytest.raises(WorkerError) as e:
        Ranks(2, "cpu").run(raising_task, "bad batch on purpose")
    assert str(e.value) == "devices=2: rank 1 failed: ValueError: bad batch on purpose"


def test_a_killed_rank_ends_the_launch_with_one_line_naming_it():
    with pytest.raises(WorkerError) as e:
        Ranks(2, "cpu").run(killed_task)
    assert str(e.value).startswith("devices=2: rank 1 failed: exited with code -9 (Signal 9 (SIGKILL)")


def test_ranks_whose_weights_drift_apart_are_caught():
    with pytest.raises(WorkerError) as e:
        Ranks(2, "cpu").run(drifting_task)
    assert "student weights differ between rank 0 and rank(s) [1]" in str(e.value)
    assert DriftError.__name__ in str(e.value)


def test_the_slurm_preset_asks_for_one_task_and_one_gpu_per_rank(tmp_path):
    from test_sweeps import compose
    cfg = compose(["hydra/launcher=slurm", "devices=4", "nodes=2"], tmp_path)
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)


def test_nodes_outside_a_cluster_and_devices_beyond_the_gpus_are_refused(tmp_path):
    from sweeps.ranks.layout import layout_problem

    def check(cfg, device):
        return layout_problem(cfg.devices, cfg.nodes, {"distill.batch_size": cfg.distill.batch_size,
                                                       "teacher.batch_size": cfg.teacher.batch_size}, device)
    from test_sweeps import compose
    cfg = compose(["nodes=2", "+debug=tiny"], tmp_path)
    assert check(cfg, "cpu").startswith("nodes=2 needs a cluster launcher")
    cfg = compose(["devices=64", "+debug=tiny", "distill.batch_size=64", "teacher.batch_size=64"], tmp_path)
    assert check(cfg, "cpu") is None  # 64 gloo processes are allowed on the CPU
    if torch.cuda.device_count() < 64:
        assert check(cfg, "cuda") == (f"devices=64 but only {torch.cuda.device_count()} GPU(s) are visible; "
                                      f"use devices<={torch.cuda.device_count()}")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.cuda
@cuda
def test_bf16_networks_give_float32_targets_close_to_fp32_ones(digits):
    """precision=bf16 autocasts the network calls only: the target arithmetic stays float32."""
    from distill_core.diffusion import DiffusionModel
    from distill_core.distill import Distiller
    teacher = DiffusionModel("unet_tiny", digits.shape)
    targets = {}
    for precision in ("bf16", "fp32"):
        cfg = DistillConfig(schedule=[64, 8], batch_size=64, precision=precision, checkpoint_every=0)
        d = Distiller(teacher, digits.to("cuda"), cfg, "/tmp/unused", device="cuda", progress=False)
        captured = {}
        d.family.loss = lambda kind, t, x_hat, target: captured.setdefault("target", target) .sum() * 0
        d.loss(64, 8)
        targets[precision] = captured["target"]
    assert targets["bf16"].dtype == targets["fp32"].dtype == torch.float32
    error = float((targets["bf16"] - targets["fp32"]).norm() / targets["fp32"].norm())
    assert 0 < error < 0.05, error
