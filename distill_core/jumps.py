"""Where a few-step student loses its teacher: each student jump measured on the teacher's own path.

The teacher samples from `noise` with its sampler at `base` steps and keeps every state z_i (i = base
.. 0 on the base grid). A student with S steps jumps from a group end g * base / S to the group start
(g - 1) * base / S; started from the teacher's state at the group end, its landing point is compared
with the teacher's state at the group start: the error of that one jump, without the errors of the
jumps before it (the gap sums those). `offsets` starts the jump later inside the group (o teacher-grid
steps below the group end, on the grid of the phase's teacher, `teacher_steps`): TRACT trains every
offset (its self-teacher bootstraps offset o from offset o + 1), so how the error grows with the
distance to the group start shows how much each bootstrapping step costs. RMSE in data units, as the gap.
"""
import torch

from .diffusion import DiffusionModel


@torch.no_grad()
def teacher_path(teacher: DiffusionModel, noise: torch.Tensor, base: int, clip: bool = True) -> list[torch.Tensor]:
    """path[i] = the teacher's state at base-grid index i (path[base] = the prior draw, path[0] = its sample)."""
    teacher.eval()
    family, n = teacher.family, noise.shape[0]
    times = lambda i: family.time(torch.full((n,), i, dtype=torch.long, device=noise.device), base)
    z = family.prior(noise)
    path = [z] * (base + 1)
    for i in range(base, 0, -1):
        z = teacher.step(z, times(i), times(i - 1), clip)
        path[i - 1] = z
    return path


@torch.no_grad()
def jump_errors(student: DiffusionModel, path: list[torch.Tensor], student_steps: int, teacher_steps: int,
                clip: bool = True) -> dict:
    """{'groups': [(end, start, RMSE of the jump from the group end)] from t = 1 down,
        'offsets': [(o, RMSE from o teacher steps below the group end, mean over groups)]}
    (indices on the base grid; o counts the phase teacher's steps, 0 = the group end)."""
    base = len(path) - 1
    if base % teacher_steps or teacher_steps % student_steps:
        raise ValueError(f"steps must divide: base {base}, teacher {teacher_steps}, student {student_steps}")
    student.eval()
    family, n = student.family, path[0].shape[0]
    times = lambda i: family.time(torch.full((n,), i, dtype=torch.long, device=path[0].device), base)
    size, semi = base // student_steps, base // teacher_steps
    rmse = lambda a, b: float((a - b).pow(2).mean().sqrt())
    per_offset = {o: [] for o in range(size // semi)}
    groups = []
    for g in range(student_steps, 0, -1):
        end, start = g * size, (g - 1) * size
        for o in per_offset:
            i = end - o * semi
            err = rmse(student.jump(path[i], times(i), times(start), clip), path[start])
            per_offset[o].append(err)
            if o == 0:
                groups.append((end, start, err))
    return {"groups": groups, "offsets": [(o, sum(e) / len(e)) for o, e in per_offset.items()]}
