"""Distillation targets against their closed forms (DESIGN 3.6-3.8), for both noise families,
and schedule validation."""
import pytest
import torch

from conftest import random_denoiser
from distill_core.distill import DistillConfig, validate
from distill_core.families import EDM, VP
from distill_core.methods.btd import btd_draw, btd_target
from distill_core.methods.tract import tract_draw, tract_groups, tract_target

pytestmark = pytest.mark.usefixtures("float64")

# (family, the teacher's own step): VP teaches with DDIM; an EDM teacher with Heun (and Euler)
FAMILIES = {"vp": VP(), "edm-heun": EDM(sampler="heun"), "edm-euler": EDM(sampler="euler")}


def scaled_denoiser(family, seed):
    """A smooth nonlinear stand-in for a network, fed a unit-scale input whatever the family."""
    f = random_denoiser((1, 4, 4), seed)
    return lambda z, t: f(z / (1 + family.alpha_sigma(t)[1].reshape(-1, 1, 1, 1) ** 2).sqrt(), t / (1 + t))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("k", [2, 4])
def test_btd_target_lands_on_the_teachers_k_steps(name, k):
    family = FAMILIES[name]
    teacher = scaled_denoiser(family, 0)

    def teacher_step(z, t, s):
        return family.step(teacher, z, t, s)

    n, unit = 8, 2
    base = k * n * unit  # the teacher's kN steps are a sub-grid of the base grid
    idx = torch.randint(1, n + 1, (32,)) * k * unit  # includes the last student step (t'' = 0)
    idx[0] = k * unit
    z = family.noise(torch.randn(32, 1, 4, 4).clamp(-1, 1), family.time(idx, base), torch.randn(32, 1, 4, 4))
    target = btd_target(family, teacher_step, z, idx, k, unit, base)
    # the teacher's k small steps
    z_teacher, i = z, idx
    for _ in range(k):
        z_teacher = teacher_step(z_teacher, family.time(i, base), family.time(i - unit, base))
        i = i - unit
    student_step = family.jump(target, z, family.time(idx, base), family.time(idx - k * unit, base))
    assert torch.allclose(student_step, z_teacher, atol=1e-9 * (1 + z.abs().max()))
    # at the last step x_tilde is where the teacher's last step lands: its x_hat at the mid-point
    assert torch.allclose(target[0], z_teacher[0], atol=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_tract_target_lands_on_the_group_start(name):
    family = FAMILIES[name]
    teacher, self_teacher = scaled_denoiser(family, 0), scaled_denoiser(family, 1)
    base, t_steps, s_steps = 64, 16, 4
    g = torch.Generator().manual_seed(0)
    t, prev, start = tract_draw(256, base, t_steps, s_steps, g)
    x = family.noise(torch.randn(256, 1, 4, 4).clamp(-1, 1), family.time(t, base), torch.randn(256, 1, 4, 4))

    def teacher_step(z, tt, ss):
        return family.step(teacher, z, tt, ss)

    def self_step(z, tt, ss):
        return family.ddim_step(self_teacher, z, tt, ss)

    target = tract_target(family, teacher_step, self_step, x, t, prev, start, base)
    x_prev = teacher_step(x, family.time(t, base), family.time(prev, base))
    x_start = self_step(x_prev, family.time(prev, base), family.time(start, base))
    last = prev == start
    x_start[last] = x_prev[last]
    student = family.jump(target, x, family.time(t, base), family.time(start, base))
    assert torch.allclose(student, x_start, atol=1e-9 * (1 + x.abs().max()))
    assert last.any() and (~last).any()
    # where t - 1 is the group start and the teacher's step is DDIM, the target is the teacher's own x_hat
    if name == "vp":
        assert torch.allclose(target[last], teacher(x, family.time(t, base))[last], atol=1e-8)


def test_tract_times_are_on_the_teacher_grid_inside_their_group():
    base, t_steps, s_steps = 1024, 32, 4
    t, prev, start = tract_draw(4096, base, t_steps, s_steps, torch.Generator().manual_seed(1))
    semi, step = base // t_steps, base // s_steps
    assert ((t % semi) == 0).all() and ((start % step) == 0).all()
    assert (prev == t - semi).all() and (start <= prev).all() and (t <= start + step).all()
    # every teacher step of every group is drawn
    assert len(torch.unique(t)) == t_steps


def test_btd_times_are_the_student_grid():
    idx = btd_draw(4096, 8, 2, 4, torch.Generator().manual_seed(0))
    assert set(idx.tolist()) == {8 * i for i in range(1, 9)}


@pytest.mark.parametrize("teacher_steps,student_steps", [(1024, 32), (32, 1), (8, 4), (6, 3)])
def test_group_partition_covers_the_grid_exactly_once(teacher_steps, student_steps):
    groups = tract_groups(teacher_steps, student_steps)
    assert len(groups) == student_steps
    flat = sorted(i for grp in groups for i in grp)
    assert flat == list(range(1, teacher_steps + 1))
    assert all(len(grp) == teacher_steps // student_steps for grp in groups)


@pytest.mark.parametrize("schedule,message", [
    ([1024, 30, 1], "30 does not divide 1024"),
    ([16, 16, 1], "strictly decreasing"),
    ([1, 16], "strictly decreasing"),
    ([64], "at least two"),
    ([64, 0], "positive integer"),
])
def test_bad_schedules_are_rejected_clearly(schedule, message):
    with pytest.raises(ValueError, match=message) as e:
        validate(DistillConfig(schedule=schedule))
    assert str(e.value).startswith("distill.schedule")


def test_group_partition_rejects_a_count_that_does_not_divide():
    with pytest.raises(ValueError, match="must divide teacher steps 1024"):
        tract_groups(1024, 30)


@pytest.mark.parametrize("key,value,message", [
    ("mu_s", 1.0, r"distill.mu_s must be in \[0, 1\)"),
    ("mu_i", -0.1, r"distill.mu_i must be in \[0, 1\)"),
    ("method", "pd", "distill.method must be one of tract, btd"),
    ("batch_size", -4, "distill.batch_size must be a positive integer"),
    ("weighting", "snr2", "weighting must be one of"),
])
def test_bad_values_are_rejected_clearly(key, value, message):
    with pytest.raises(ValueError, match=message):
        validate(DistillConfig(**{key: value}))
