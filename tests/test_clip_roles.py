"""Clipping per role (DESIGN 3.11): the teacher's x_hat clip and the self-teacher's are separate settings,
`distill.clip_x` the shorthand for both. Each TRACT target, with and without each clip, against its closed form
on a network whose x_hat leaves [-1, 1] (so every clip changes something it is asked to change)."""
import itertools

import pytest
import torch

from distill_core import data as D
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller, clips, validate
from distill_core.methods import build as build_method
from distill_core.samplers import heun_step
from targets import captured_target

SCHEDULE = [8, 4, 1]


def loud(family):
    """A random network whose x_hat runs well outside [-1, 1] (a fresh U-Net's output layer is zero)."""
    torch.manual_seed(0)
    model = DiffusionModel("unet_tiny", (1, 8, 8), family)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def expected_target(d, z_t, draw):
    """ml-tract's TRACT target written out: the teacher's own step (Heun on EDM, DDIM on VP) on its x_hat,
    clamped only if the teacher's clip is on; the self-teacher's DDIM jump on its x_hat, clamped only if its
    clip is on; the inversion of one student jump onto the group start."""
    fam, base = d.family, d.cfg.schedule[0]
    t, prev, start = (fam.time(draw[k], base) for k in ("t", "prev", "start"))

    def x_hat(model, clip):
        return lambda z, s: (lambda x: x.clamp(-1, 1) if clip else x)(model.x_hat(z, s))

    teacher = x_hat(d.teacher, d.clip_teacher)
    x_prev = heun_step(teacher, z_t, t, prev) if fam.name == "edm" else fam.jump(teacher(z_t, t), z_t, t, prev)
    x_start = fam.jump(x_hat(d.self_teacher.module, d.clip_self_teacher)(x_prev, prev), x_prev, prev, start)
    x_start = torch.where((draw["prev"] == draw["start"]).view(-1, 1, 1, 1), x_prev, x_start)
    return fam.invert(z_t, t, x_start, start)


@pytest.mark.parametrize("family", [{"family": "edm"}, {"family": "vp", "parameterization": "v"}], ids=["edm", "vp"])
@pytest.mark.parametrize("clip_teacher,clip_self", list(itertools.product([False, True], repeat=2)))
def test_each_roles_target_with_and_without_its_clip(family, clip_teacher, clip_self, tmp_path):
    teacher = loud(family)
    cfg = DistillConfig(method="tract", schedule=SCHEDULE, batch_size=64, checkpoint_every=0, clip_teacher=clip_teacher,
                        clip_self_teacher=clip_self)
    d = Distiller(teacher, D.load("digits"), cfg, tmp_path, progress=False)
    with torch.no_grad():  # a self-teacher that differs from the teacher
        for p in d.self_teacher.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z_t, target, _, draw = captured_target(d, SCHEDULE[0], SCHEDULE[1])
    assert (d.clip_teacher, d.clip_self_teacher) == (clip_teacher, clip_self)
    torch.testing.assert_close(target, expected_target(d, z_t, draw), rtol=1e-5, atol=1e-5)
    # the other setting of each clip gives another target: each switch acts on its own role
    for flip in ("clip_teacher", "clip_self_teacher"):
        setattr(d, flip, not getattr(d, flip))
        other = expected_target(d, z_t, draw)
        setattr(d, flip, not getattr(d, flip))
        assert (other - target).abs().max() > 1e-2, f"{flip} changes nothing: the test network is too quiet"


@pytest.mark.parametrize("method,clip_x,teacher,self_teacher,want", [
    ("tract", None, None, None, (True, True)),  # ml-tract's VP code: both
    ("btd", None, None, None, (False, False)),  # PD: the teacher runs unclipped
    ("tract", False, None, None, (False, False)),  # the shorthand for both
    ("tract", True, False, None, (False, True)),  # ml-tract's EDM code: the self-teacher only
    ("tract", None, False, True, (False, True)),
    ("btd", None, True, None, (True, False)),
])
def test_each_role_takes_its_own_key_then_clip_x_then_the_methods_default(method, clip_x, teacher, self_teacher, want):
    cfg = DistillConfig(method=method, clip_x=clip_x, clip_teacher=teacher, clip_self_teacher=self_teacher)
    assert clips(cfg, build_method(method)) == want


@pytest.mark.parametrize("key", ["clip_x", "clip_teacher", "clip_self_teacher"])
def test_a_clip_that_is_not_a_boolean_is_refused_by_name(key):
    with pytest.raises(ValueError, match=f"distill.{key} must be true, false or null"):
        validate(DistillConfig(**{key: "yes"}))
