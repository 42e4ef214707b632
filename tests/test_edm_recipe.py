"""The TRACT-EDM experiments' update, composed from their own config files, is apple/ml-tract's EDM `train_op`
(tc_distill_edm.py), written out below in its own arithmetic on the same batch, times and noise: the teacher's
Heun step on its unclipped D(x), the self-teacher's clipped DDIM-VE jump, float64 targets, EDM's weighting, a
student without dropout. (Checked against ml-tract's code itself outside the suite: scripts/compare_mltract_edm.py.)"""
import copy

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO
from distill_core import data as D
from distill_core.diffusion import DiffusionModel
from distill_core.distill import Distiller
from sweeps.settings.checks import check_keys, family_config

SMALL = dict(img_resolution=8, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
             dropout=0.13, embedding_type="fourier", encoder_type="residual", decoder_type="standard",
             channel_mult_noise=2, resample_filter=[1, 3, 3, 1])  # NCSN++'s options, EDM's CIFAR-10 dropout
STEPS = 40  # the experiments' grid: one phase, 40 -> 1


def experiment(name: str, batch: int = 64):
    with initialize_config_dir(str(REPO / "conf")):
        cfg = compose("config", overrides=[f"+experiment={name}", "teacher.source=edm:file.pkl", "device=cpu",
                                            f"distill.batch_size={batch}", "distill.updates_per_phase=4"])
    _, dc = check_keys(cfg)
    return dc, family_config(cfg)


def loud_teacher(family):
    torch.manual_seed(0)
    model = DiffusionModel("edm", (1, 8, 8), family, network_overrides={"architecture": "SongUNet", "kwargs": SMALL})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def mltract_loss(d, x, noise, index, semi_index, step=STEPS):
    """tc_distill_edm.py train_op's target and loss (D = the networks' preconditioned output, float32 inputs)."""
    sigma = torch.cat([torch.zeros(1, dtype=torch.double), torch.linspace(0.002 ** (1 / 7), 80 ** (1 / 7), STEPS,
                                                                         dtype=torch.double) ** 7])

    def net(model, xt, s):
        return model.x_hat(xt.float(), s.reshape(-1).float()).double()

    def post_xt_x0(xt, out, s, s1):
        x0 = torch.clip(out, -1.0, 1.0)
        return torch.nan_to_num(x0 + (xt - x0) / s * s1)

    with torch.no_grad():
        ix = index - semi_index, (index - semi_index - 1).clamp(1), index - step
        s = tuple(sigma[i].view(-1, 1, 1, 1) for i in ix)
        xt = x.double() + noise * s[0]
        x0 = net(d.teacher, xt, s[0])
        eps = (xt - x0) / s[0]
        xt_ = xt + (s[1] - s[0]) * eps
        eps = 0.5 * (eps + (xt_ - net(d.teacher, xt_, s[1])) / s[1])
        xt_ = xt + (s[1] - s[0]) * eps
        xt2 = post_xt_x0(xt_, net(d.self_teacher.module, xt_, s[1]), s[1], s[2])
        xt2 += ((semi_index + 1) == step).view(-1, 1, 1, 1) * (xt_ - xt2)
        xt2 = (xt2 * s[0] - xt * s[2]) / (s[0] - s[2])
        target = torch.where((index - semi_index - 1).view(-1, 1, 1, 1) == 0, x0, xt2)
        c_out = s[0] * 0.5 / (s[0] ** 2 + 0.25).sqrt()
        c_skip = 0.25 / (s[0] ** 2 + 0.25)
        target = (target - c_skip * xt) / c_out
    pred = (net(d.student, xt, s[0]) - c_skip * xt) / c_out
    weight = (s[0] ** 2 + 0.25) * c_out ** 2 * (s[0] * 0.5) ** -2
    return (weight.flatten().float() * (pred.float() - target.float()).square().mean((1, 2, 3))).mean()


def replayed(d):
    """The next update's (x, noise, index, semi_index) in ml-tract's terms (index: the group's upper end,
    semi_index: the offset below it), replayed from a copy of the distiller's generator."""
    g = torch.Generator().manual_seed(0)
    g.set_state(d.generator.get_state())
    x, _ = d.data.draw(d.cfg.batch_size, g)
    noise = torch.randn((d.cfg.batch_size, *d.data.shape), generator=g)
    draw = d.method.draw(d.cfg.batch_size, STEPS, STEPS, 1, g)
    index = draw["start"] + STEPS
    return x, noise, index, index - draw["t"]


@pytest.mark.parametrize("name", ["tract_edm_cifar10", "tract_edm_imagenet64"])
def test_the_experiments_first_update_is_mltracts_edm_train_op(name, tmp_path):
    dc, family = experiment(name)
    assert (dc.clip_teacher, dc.clip_self_teacher, dc.nonfinite_grads, dc.precision) == (False, True, "zero", "fp32")
    d = Distiller(loud_teacher(family), D.load("digits"), dc, tmp_path, progress=False)
    assert all(m.p == 0.0 for m in d.student.modules() if isinstance(m, torch.nn.Dropout)), "ml-tract: dropout 0"
    assert any(m.p > 0 for m in d.teacher.modules() if isinstance(m, torch.nn.Dropout)), "the file's own dropout"
    reference = copy.deepcopy(d)
    x, noise, index, semi_index = replayed(d)
    assert ((index - semi_index - 1) == 0).any() and ((index - semi_index - 1) > 0).any(), "both kinds of target"
    theirs, ours = mltract_loss(reference, x, noise, index, semi_index), d.loss(STEPS, 1)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)
    ours.backward()
    theirs.backward()
    g_ours, g_theirs = (torch.cat([p.grad.flatten() for p in m.student.parameters()]) for m in (d, reference))
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-5 * float(g_theirs.norm()))
    # the clip of the teacher would change this update (so the experiments' setting is what makes them equal)
    d.clip_teacher = True
    x, noise, index, semi_index = replayed(d)
    assert float(d.loss(STEPS, 1).detach()) != pytest.approx(
        float(mltract_loss(reference, x, noise, index, semi_index).detach()), rel=1e-3)
