"""Distillation targets against their closed forms (DESIGN 3.6, 3.7) and schedule validation."""
import pytest
import torch

from conftest import random_denoiser
from distill_core.distill import DistillConfig, validate
from distill_core.samplers import ddim_step, ddim_step_from_x
from distill_core.targets import (btd_target, grid_time, sample_btd_times, sample_tract_times, tract_groups,
                                  tract_target)


pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("k", [2, 4])
def test_btd_target_lands_on_the_teachers_k_steps(k):
    teacher = random_denoiser((1, 4, 4))
    n = 8
    grid = k * n
    idx = torch.randint(1, n + 1, (32,)) * k  # includes the last student step (t'' = 0)
    idx[0] = k
    z = torch.randn(32, 1, 4, 4)
    target = btd_target(teacher, z, idx, k, grid)
    # the teacher's k small steps
    z_teacher, i = z, idx
    for _ in range(k):
        z_teacher = ddim_step(teacher, z_teacher, grid_time(i, grid), grid_time(i - 1, grid))
        i = i - 1
    student_step = ddim_step_from_x(target, z, grid_time(idx, grid), grid_time(idx - k, grid))
    assert torch.allclose(student_step, z_teacher, atol=1e-9)
    # at the last step x_tilde is the teacher's x_hat at the mid-point, as in the reference code
    assert torch.allclose(target[0], z_teacher[0], atol=1e-12)


def test_tract_target_lands_on_the_group_start():
    teacher, self_teacher = random_denoiser((1, 4, 4), 0), random_denoiser((1, 4, 4), 1)
    base, t_steps, s_steps = 64, 16, 4
    g = torch.Generator().manual_seed(0)
    t, prev, start = sample_tract_times(256, base, t_steps, s_steps, g)
    x = torch.randn(256, 1, 4, 4)
    target = tract_target(teacher, self_teacher, x, t, prev, start, base)
    x_prev = ddim_step(teacher, x, grid_time(t, base), grid_time(prev, base))
    x_start = ddim_step(self_teacher, x_prev, grid_time(prev, base), grid_time(start, base))
    last = prev == start
    x_start[last] = x_prev[last]
    student = ddim_step_from_x(target, x, grid_time(t, base), grid_time(start, base))
    assert torch.allclose(student, x_start, atol=1e-8)
    # where t - 1 is the group start the target is the teacher's own x_hat
    assert last.any() and (~last).any()
    assert torch.allclose(target[last], teacher(x, grid_time(t, base))[last], atol=1e-8)


def test_tract_times_are_on_the_teacher_grid_inside_their_group():
    base, t_steps, s_steps = 1024, 32, 4
    t, prev, start = sample_tract_times(4096, base, t_steps, s_steps, torch.Generator().manual_seed(1))
    semi, step = base // t_steps, base // s_steps
    assert ((t % semi) == 0).all() and ((start % step) == 0).all()
    assert (prev == t - semi).all() and (start <= prev).all() and (t <= start + step).all()
    # every teacher step of every group is drawn
    assert len(torch.unique(t)) == t_steps


def test_btd_times_are_the_student_grid():
    idx = sample_btd_times(4096, 8, 2, torch.Generator().manual_seed(0))
    assert set(idx.tolist()) == {2 * i for i in range(1, 9)}


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
