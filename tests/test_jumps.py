"""distill_core.jumps: each student jump measured on the teacher's own path."""
import copy

import pytest
import torch

from distill_core.diffusion import DiffusionModel
from distill_core.jumps import jump_errors, teacher_path


@pytest.fixture
def teacher():
    return DiffusionModel("mlp", (2,), {"family": "vp", "parameterization": "v"})


def test_the_teacher_as_its_own_student_is_exact_one_step_from_the_group_start(teacher):
    noise = torch.randn(32, 2)
    path = teacher_path(teacher, noise, 16)
    assert torch.equal(path[0], teacher.sample(noise, 16)), "the path ends at the teacher's own sample"
    whole = jump_errors(teacher, path, 16, 16)  # groups of one step: every jump is the path's own step
    assert [e for _, _, e in whole["groups"]] == [0.0] * 16 and [g[:2] for g in whole["groups"]][0] == (16, 15)
    four = jump_errors(teacher, path, 4, 16)
    offsets = dict(four["offsets"])
    assert sorted(offsets) == [0, 1, 2, 3] and offsets[3] == 0.0  # one step from the start: the path's step
    assert offsets[0] > offsets[1] > offsets[2] > 0  # one DDIM jump over more steps strays further
    one = jump_errors(teacher, path, 1, 16)["groups"][0][2]
    assert one == pytest.approx(float((teacher.sample(noise, 1) - path[0]).pow(2).mean().sqrt()), abs=1e-6)


def test_a_perturbed_student_strays_even_one_step_from_the_start(teacher):
    path = teacher_path(teacher, torch.randn(32, 2), 8)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        next(student.parameters()).add_(0.05)
    assert dict(jump_errors(student, path, 2, 8)["offsets"])[3] > 1e-4
    with pytest.raises(ValueError, match="must divide"):
        jump_errors(student, path, 3, 8)
