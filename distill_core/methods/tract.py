"""TRACT (DESIGN 3.7; the VE variant 3.8): one teacher step, then the self-teacher's jump to the
start of the student's group, inverted into one student jump.

The T teacher steps of a phase are split into T' groups of consecutive steps; the student learns
to jump from any t in (t_i, t_j] straight to t_i. The draw is apple/ml-tract's on the base grid.
Student, self-teacher (EMA mu_s) and optimizer live across phases.
"""
import torch

from ..schedules import expand
from .base import Method


def tract_groups(teacher_steps: int, student_steps: int) -> list[list[int]]:
    """Teacher step indices (1 = the last step) grouped into the student's steps:
    group g covers (g * size, (g + 1) * size] and the student jumps to g * size."""
    if teacher_steps % student_steps:
        raise ValueError(f"student steps {student_steps} must divide teacher steps {teacher_steps}")
    size = teacher_steps // student_steps
    return [list(range(g * size + 1, (g + 1) * size + 1)) for g in range(student_steps)]


def tract_draw(batch: int, base: int, teacher_steps: int, student_steps: int, generator: torch.Generator):
    """A group end, an offset inside the group that is a whole number of teacher steps;
    returns (t, t - 1 teacher step, group start) as indices on the `base` grid."""
    semi, step = base // teacher_steps, base // student_steps
    group_end = torch.randint(1, student_steps + 1, (batch,), generator=generator) * step
    offset = torch.randint(0, teacher_steps // student_steps, (batch,), generator=generator) * semi
    t = group_end - offset
    return t, t - semi, group_end - step


def tract_target(family, teacher_step, self_step, x_t: torch.Tensor, t_index: torch.Tensor,
                 prev_index: torch.Tensor, start_index: torch.Tensor, base: int) -> torch.Tensor:
    """x_{t-1} = one teacher step; x_{t_i} = the self-teacher's jump t-1 -> t_i unless t-1 is t_i;
    the target inverts one student jump t -> t_i onto x_{t_i} (the teacher's own x_hat when t-1 = t_i)."""
    t, t_prev, t_start = (family.time(i, base) for i in (t_index, prev_index, start_index))
    x_prev = teacher_step(x_t, t, t_prev)
    x_start = self_step(x_prev, t_prev, t_start)
    x_start = torch.where(expand(prev_index == start_index, x_t), x_prev, x_start)
    return family.invert(x_t, t, x_start, t_start)


class TRACT(Method):
    name = "tract"
    clip_default = True  # apple/ml-tract clips x_hat inside its DDIM steps, in training too
    self_teacher = True

    def draw(self, batch, base, teacher_steps, student_steps, generator):
        t, prev, start = tract_draw(batch, base, teacher_steps, student_steps, generator)
        return {"t": t, "prev": prev, "start": start}

    def target(self, family, teacher_step, self_step, z_t, draw, base):
        return tract_target(family, teacher_step, self_step, z_t, draw["t"], draw["prev"], draw["start"], base)
