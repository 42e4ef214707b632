"""Non-finite gradients as a setting (`distill.nonfinite_grads`): `stop` ends the loop with one line; `zero` is
apple/ml-tract's EDM update (`torch.nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5)`, then the step), counted
in `<prefix>/nonfinite_grads` and named on the console once."""
import copy
import logging

import pytest
import torch
from torch import nn

from distill_core import data as D
from distill_core.callbacks import Callback
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller, validate
from distill_core.loop import DivergenceError, LoopSettings, run_updates, zero_nonfinite


class Metrics(Callback):
    def __init__(self):
        self.seen = []

    def on_metrics(self, metrics, step):
        self.seen.append((step, dict(metrics)))


def poisoned_loss(model, bad_at: set, counter: list):
    """A least-squares loss whose gradient has a NaN, a +inf and a -inf element at the updates in `bad_at`."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))

    def loss():
        counter[0] += 1
        out = model(x).pow(2).mean()
        if counter[0] in bad_at:
            w = model.weight
            poison = torch.zeros_like(w)
            poison[0, 0], poison[1, 1], poison[2, 2] = float("nan"), float("inf"), -float("inf")
            out = out + (w * poison).sum()  # d/dw = poison (nan, inf, -inf); the loss itself is nan
        return out
    return loss


def settings(nonfinite, updates=6):
    return LoopSettings(updates=updates, lr=1e-2, grad_clip=float("inf"), log_every=3, progress=False, nonfinite=nonfinite)


def test_zeroing_is_mltracts_nan_to_num_and_counts_the_elements():
    p = nn.Parameter(torch.zeros(5))
    p.grad = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -2.0])
    assert int(zero_nonfinite([p])) == 3
    assert p.grad.tolist() == [1.0, 0.0, 1e5, -1e5, -2.0]


def test_stop_ends_the_loop_with_one_line():
    model = nn.Linear(4, 4)
    with pytest.raises(DivergenceError, match="non-finite loss or gradient in train at update 3"):
        run_updates(model, torch.optim.Adam(model.parameters()), poisoned_loss(model, {2}, [0]), settings("stop"))


def test_zero_takes_the_step_on_the_cleaned_gradient_and_says_so_once(caplog):
    model = nn.Linear(4, 4)
    reference = copy.deepcopy(model)
    calls = Metrics()
    with caplog.at_level(logging.WARNING, logger="distill_core.loop"):
        run_updates(model, torch.optim.Adam(model.parameters(), lr=1e-2), poisoned_loss(model, {2, 5}, [0]),
                    settings("zero"), callback=calls)
    # ml-tract's update, written out: the same loss, nan_to_num on the gradients, Adam's step
    opt, loss = torch.optim.Adam(reference.parameters(), lr=1e-2), poisoned_loss(reference, {2, 5}, [0])
    for _ in range(6):
        opt.zero_grad()
        loss().backward()
        for q in reference.parameters():
            torch.nan_to_num(q.grad, nan=0, posinf=1e5, neginf=-1e5, out=q.grad)
        opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    counts = [m["train/nonfinite_grads"] for _, m in calls.seen]
    assert counts == [3, 3]  # one poisoned update per window of 3
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for _, m in calls.seen)
    lines = [r.getMessage() for r in caplog.records if "non-finite gradient elements" in r.getMessage()]
    assert len(lines) == 1 and "by update 3" in lines[0] and "nonfinite_grads=zero" in lines[0]


def test_zero_still_stops_when_no_loss_of_a_window_is_finite():
    model = nn.Linear(4, 4)
    with pytest.raises(DivergenceError, match="at update 3"):
        run_updates(model, torch.optim.Adam(model.parameters()), lambda: model(torch.ones(1, 4)).sum() * float("nan"),
                    settings("zero"))


def test_a_distillation_with_a_nan_loss_goes_on_under_zero(tmp_path):
    teacher = DiffusionModel("unet_tiny", (1, 8, 8), {"family": "edm"})
    cfg = DistillConfig(method="tract", schedule=[8, 1], updates_per_phase=4, batch_size=8, log_every=2,
                        checkpoint_every=0, inject_nan_at=1, nonfinite_grads="zero")
    calls = Metrics()
    result = Distiller(teacher, D.load("digits"), cfg, tmp_path, callback=calls, progress=False).run()
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    counts = [m["distill/nonfinite_grads"] for _, m in calls.seen if "distill/nonfinite_grads" in m]
    assert counts[0] > 0 and counts[1] == 0
    with pytest.raises(DivergenceError):
        Distiller(teacher, D.load("digits"), DistillConfig(**{**cfg.__dict__, "nonfinite_grads": "stop"}),
                  tmp_path / "stop", progress=False).run()


def test_an_unknown_choice_is_refused_by_name():
    with pytest.raises(ValueError, match="distill.nonfinite_grads must be one of stop, zero"):
        validate(DistillConfig(nonfinite_grads="skip"))
