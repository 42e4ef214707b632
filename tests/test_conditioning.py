"""Class conditioning in the core (DESIGN 3.10): every target of a conditional update equals the unconditional
target of a network with that sample's label baked in, on the vp, edm and ddpm families and for both methods;
one label tensor reaches teacher, self-teacher and student; the sampling API refuses what it cannot take."""
import copy
import json

import mlflow
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from distill_core import data as D
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller, balanced_labels
from sweeps import registry
from targets import captured_target

FAMILIES = {"vp": ("unet_tiny", {"family": "vp", "parameterization": "v"}),
            "edm": ("unet_tiny", {"family": "edm"}),
            "ddpm": ("ddpm_tiny", {"family": "ddpm", "parameterization": "v"})}
SCHEDULES = {"vp": [8, 4, 1], "edm": [8, 4, 1], "ddpm": [8, 4, 1]}


def conditional(preset, family, num_classes=10):
    """A class-conditional network that says something (random weights: a fresh head outputs zero)."""
    torch.manual_seed(0)
    model = DiffusionModel(preset, (1, 8, 8), family, network_overrides={"num_classes": num_classes})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


class Baked(nn.Module):
    """An unconditional network: the conditional `net` with class `k` baked into every call."""

    def __init__(self, net, k):
        super().__init__()
        self.inner, self.k = net, k

    def forward(self, z, cond):
        return self.inner(z, cond, torch.full((len(z),), self.k, dtype=torch.long))


def baked(model, k):
    out = copy.deepcopy(model)
    out.net = Baked(model.net, k)
    assert out.num_classes is None
    return out


@pytest.mark.parametrize("method", ["tract", "btd"])
@pytest.mark.parametrize("family", FAMILIES)
def test_each_target_is_the_unconditional_target_of_a_network_with_its_label_baked_in(family, method, tmp_path):
    preset, spec = FAMILIES[family]
    teacher = conditional(preset, spec)
    data = D.load("digits")
    cfg = DistillConfig(method=method, schedule=SCHEDULES[family], batch_size=32, checkpoint_every=0,
                        weighting="edm" if family == "edm" else "snr_plus_one")
    d = Distiller(teacher, data, cfg, tmp_path, progress=False)
    with torch.no_grad():  # a self-teacher unlike the teacher (TRACT's second network)
        for p in (d.self_teacher.module.parameters() if d.self_teacher else []):
            p.add_(0.02 * torch.randn_like(p))
    steps = SCHEDULES[family]
    z_t, target, y, draw = captured_target(d, steps[0], steps[1])
    assert len(set(y.tolist())) > 3, "a batch of several classes"
    base = d.cfg.schedule[0]
    for k in set(y.tolist()):
        t_baked = baked(d.teacher, k)
        s_baked = baked(d.self_teacher.module, k) if d.self_teacher else None
        expected = d.method.target(d.family, lambda z, a, b: t_baked.step(z, a, b, d.clip_teacher),
                                   (lambda z, a, b: s_baked.jump(z, a, b, d.clip_self_teacher)) if s_baked else None,
                                   z_t, draw, base)
        rows = y == k
        torch.testing.assert_close(target[rows], expected[rows], rtol=1e-5, atol=1e-6)


class Recording(nn.Module):
    """Wraps a conditional network and records the label tensor of every call (in `seen`)."""
    seen: list = []

    def __init__(self, net):
        super().__init__()
        self.inner = net
        self.num_classes = net.num_classes

    def forward(self, z, cond, labels=None):
        Recording.seen.append(labels)
        return self.inner(z, cond, labels)


def test_one_label_tensor_goes_to_teacher_self_teacher_and_student_in_an_update(tmp_path):
    teacher = conditional("unet_tiny", FAMILIES["vp"][1])
    teacher.net = Recording(teacher.net)
    d = Distiller(teacher, D.load("digits"), DistillConfig(method="tract", schedule=[8, 4, 1], batch_size=32,
                                                          checkpoint_every=0), tmp_path, progress=False)
    Recording.seen.clear()
    d.loss(8, 4)
    assert len(Recording.seen) >= 3 and all(labels is Recording.seen[0] for labels in Recording.seen)
    assert Recording.seen[0].shape == (32,) and Recording.seen[0].dtype == torch.long


def test_sampling_takes_labels_exactly_when_the_model_is_conditional():
    model = conditional("unet_tiny", FAMILIES["vp"][1], num_classes=3)
    noise = torch.randn(4, 1, 8, 8)
    out = model.sample(noise, 2, labels=[0, 1, 2, 0])
    assert out.shape == noise.shape and torch.equal(out, model.sample(noise, 2, labels=torch.tensor([0, 1, 2, 0])))
    assert not torch.equal(out, model.sample(noise, 2, labels=[1, 1, 1, 1])), "the label changes the sample"
    for labels, words in ((None, "class-conditional on 3 classes: pass labels"), ([0, 1, 2, 3], r"in \[0, 3\)"),
                          ([0, 1, -1, 0], r"in \[0, 3\)"), ([0, 1], "must be 4 integer class indices"),
                          ([0.0, 1.0, 2.0, 0.0], "integer class indices")):
        with pytest.raises(ValueError, match=words):
            model.sample(noise, 2, labels=labels)
    plain = DiffusionModel("unet_tiny", (1, 8, 8))
    with pytest.raises(ValueError, match="labels given to an unconditional model"):
        plain.sample(noise, 2, labels=[0, 1, 2, 0])
    with pytest.raises(ValueError, match="the mlp preset has no class embedding"):
        DiffusionModel("mlp", (2,), network_overrides={"num_classes": 3})


def test_an_unconditional_network_has_the_parameters_it_always_had_and_the_data_draw_is_unchanged():
    torch.manual_seed(0)
    plain = DiffusionModel("unet_tiny", (1, 8, 8))
    torch.manual_seed(0)
    cond = DiffusionModel("unet_tiny", (1, 8, 8), network_overrides={"num_classes": 10})
    extra = set(cond.state_dict()) - set(plain.state_dict())
    assert extra == {"net.label_emb.weight", "net.label_emb.bias"}
    assert all(torch.equal(v, cond.state_dict()[k]) for k, v in plain.state_dict().items())
    data = D.load("digits")
    x, y = data.draw(16, torch.Generator().manual_seed(3))
    assert torch.equal(x, data.batch(16, torch.Generator().manual_seed(3))) and y.shape == (16,)
    assert data.num_classes == 10 and D.load("toy2d").num_classes is None
    assert balanced_labels(12, 5).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


JOB = ["+debug=tiny", "model.num_classes=auto", "teacher.updates=400", "teacher.batch_size=128", "teacher.lr=2e-3",
       "distill.batch_size=64", "distill.checkpoint_every=0", "eval.gap_samples=100"]
METHODS = {"tract": ["distill=tract", "distill.schedule=[64,8,1]", "distill.updates_per_phase=150"],
           "btd": ["distill=btd", "distill.schedule=[64,32,16,8,4,2,1]", "distill.updates_per_phase=30"]}


def learnt_labels(run):
    """Each 1-step student closes more than half the teacher's own 1-step gap, and its class accuracy is at least
    0.8 of the teacher's at the base step count, itself >= 0.8 (chance: 0.1)."""
    metrics = run.data.metrics
    (base,) = [v for k, v in metrics.items() if k.startswith("teacher_class_acc_base/")]
    assert metrics["gap/1step"] < 0.5 * metrics["teacher_gap/1step"], metrics
    assert base >= 0.8 and metrics["class_acc/1step"] >= 0.8 * base, metrics


@pytest.fixture(scope="module")
def conditional_store(tmp_path_factory):
    """The product end to end on digits (`model.num_classes=auto`), once per test run: the teacher trains on
    (x, y), TRACT and then BTD distil it with labels into one SQLite store."""
    store = tmp_path_factory.mktemp("conditional")
    for method, args in METHODS.items():
        proc = processes.cli("sweeps.run", [*JOB, *args, f"hydra.run.dir={store / method}"], store)
        assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(processes.sqlite(store))
    yield store
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_class_conditional_job_learns_its_labels_with_either_method(conditional_store):
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sum(r.info.run_name.startswith("teacher") for r in runs) == 1, "the second job reuses the teacher"
    for method in METHODS:
        (run,) = [r for r in runs if r.info.run_name.startswith(method)]
        assert " cond" in run.info.run_name and run.data.params["model.num_classes"] == "10"
        assert {"class_acc/8step", "teacher_class_acc/8step", "by_steps/class_acc"} <= set(run.data.metrics)
        learnt_labels(run)
    for classes in conditional_store.glob(".distill-sweeps/jobs/*/classes.json"):  # what the overview labels rows by
        rows = json.loads(classes.read_text())
        assert rows["num_classes"] == 10 and rows["rows"] == list(range(10))  # the 100 evaluation labels: i % 10


@pytest.mark.slow
def test_a_conditional_student_samples_given_labels_through_the_registry_pyfunc_and_a_server(conditional_store):
    version = MlflowClient().get_model_version("distill-students", "1")
    assert version.tags["num_classes"] == "10" and version.tags["method"] == "tract"
    student = registry.load("models:/distill-students/1")
    noise = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(20) % 10
    images = student.sample(noise, 1, labels=labels)
    served = mlflow.pyfunc.load_model("models:/distill-students/1").predict(
        {"noise": noise.numpy(), "labels": labels.numpy()})
    assert torch.allclose(torch.as_tensor(served), images, atol=1e-6)
    from services import served_predictions  # a request with labels to a real `mlflow models serve`
    answer = served_predictions("models:/distill-students/1", conditional_store,
                                {"noise": noise[:4].tolist(), "labels": labels[:4].tolist()})
    assert torch.allclose(torch.tensor(answer, dtype=torch.float32), images[:4], atol=1e-5)
    with pytest.raises(ValueError, match="pass labels"):
        student.sample(noise, 1)
