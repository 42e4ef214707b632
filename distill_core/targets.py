"""Distillation targets of BTD (DESIGN 3.6) and TRACT (DESIGN 3.7).

Both methods make the same kind of target: run some trusted steps from z_t down to a time
s, then invert one student DDIM step, i.e. find the x_hat for which a single DDIM step
t -> s from z_t lands exactly on z_s. Times are integer indices on a grid of `grid` steps
(t = index / grid), so the last step lands on t = 0 exactly.
"""
import torch

from .samplers import Denoiser, ddim_step
from .schedules import alpha_sigma, expand


def grid_time(index: torch.Tensor, grid: int) -> torch.Tensor:
    return index.to(torch.get_default_dtype()) / grid


def invert_ddim_step(z_t: torch.Tensor, t: torch.Tensor, z_s: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x_hat = (z_s sigma_t - z_t sigma_s) / (alpha_s sigma_t - alpha_t sigma_s); z_s itself at s = 0."""
    a_t, s_t = (expand(v, z_t) for v in alpha_sigma(t))
    a_s, s_s = (expand(v, z_t) for v in alpha_sigma(s))
    return (z_s * s_t - z_t * s_s) / (a_s * s_t - a_t * s_s)


def btd_target(teacher: Denoiser, z_t: torch.Tensor, t_index: torch.Tensor, k: int, grid: int) -> torch.Tensor:
    """PD's x_tilde: k teacher DDIM steps of one grid unit each from t, then invert one student
    step of k units (k = 2 is PD; k = 4 its ablation). `grid` = k * (student steps)."""
    z, index = z_t, t_index
    for _ in range(k):
        z = ddim_step(teacher, z, grid_time(index, grid), grid_time(index - 1, grid))
        index = index - 1
    return invert_ddim_step(z_t, grid_time(t_index, grid), z, grid_time(index, grid))


def tract_target(teacher: Denoiser, self_teacher: Denoiser, x_t: torch.Tensor, t_index: torch.Tensor,
                 prev_index: torch.Tensor, start_index: torch.Tensor, grid: int) -> torch.Tensor:
    """One teacher step t -> t-1, then the self-teacher jumps t-1 -> t_i (the group start),
    unless t-1 already is t_i; the target inverts one student step t -> t_i."""
    t, t_prev, t_start = (grid_time(i, grid) for i in (t_index, prev_index, start_index))
    x_prev = ddim_step(teacher, x_t, t, t_prev)
    x_start = ddim_step(self_teacher, x_prev, t_prev, t_start)
    x_start = torch.where(expand(prev_index == start_index, x_t), x_prev, x_start)
    return invert_ddim_step(x_t, t, x_start, t_start)


def tract_groups(teacher_steps: int, student_steps: int) -> list[list[int]]:
    """Teacher step indices (1 = the last step) grouped into the student's steps:
    group g covers (g * size, (g + 1) * size] and the student jumps to g * size."""
    if teacher_steps % student_steps:
        raise ValueError(f"student steps {student_steps} must divide teacher steps {teacher_steps}")
    size = teacher_steps // student_steps
    return [list(range(g * size + 1, (g + 1) * size + 1)) for g in range(student_steps)]


def sample_btd_times(batch: int, student_steps: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """i ~ U{1..N}; returned as an index on the k*N teacher grid."""
    return (torch.randint(1, student_steps + 1, (batch,), generator=generator)) * k


def sample_tract_times(batch: int, base: int, teacher_steps: int, student_steps: int, generator: torch.Generator):
    """apple/ml-tract's draw on the `base` grid: a group end, an offset inside the group that is
    a whole number of teacher steps; returns (t, t - 1 teacher step, group start) indices."""
    semi, step = base // teacher_steps, base // student_steps
    group_end = torch.randint(1, student_steps + 1, (batch,), generator=generator) * step
    offset = torch.randint(0, teacher_steps // student_steps, (batch,), generator=generator) * semi
    t = group_end - offset
    return t, t - semi, group_end - step
