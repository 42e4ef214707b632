"""Progressive distillation, PD's "BTD" (DESIGN 3.6; on the EDM grid as openai/consistency_models'
`progdist_losses`): k teacher steps, inverted into one student jump.

A phase distils a teacher of kN steps into a student of N. On the base grid of B steps one teacher
step spans u = B / (kN) units and a student step k u; PD's draw is i ~ U{1..N}, t = i k u. The
target is the x_hat for which one student jump from z_t lands exactly where the teacher's k steps
land (at the last student step: the teacher's x_hat at the mid-point, as PD's code). Each halving
starts a fresh student and optimizer from the teacher (EMA weights for the first phase).
"""
import torch

from .base import Method


def btd_draw(batch: int, student_steps: int, k: int, unit: int, generator: torch.Generator) -> torch.Tensor:
    """i ~ U{1..N}, as an index on the base grid."""
    return torch.randint(1, student_steps + 1, (batch,), generator=generator) * (k * unit)


def btd_target(family, teacher_step, z_t: torch.Tensor, t_index: torch.Tensor, k: int, unit: int,
               base: int) -> torch.Tensor:
    z, index = z_t, t_index
    for _ in range(k):
        z = teacher_step(z, family.time(index, base), family.time(index - unit, base))
        index = index - unit
    return family.invert(z_t, family.time(t_index, base), z, family.time(index, base))


class BTD(Method):
    name = "btd"
    clip_default = False  # PD's teacher runs with clip_x=False during distillation
    fresh_student_each_phase = True

    def draw(self, batch, base, teacher_steps, student_steps, generator):
        k, unit = teacher_steps // student_steps, base // teacher_steps
        return {"t": btd_draw(batch, student_steps, k, unit, generator), "k": k, "unit": unit}

    def target(self, family, teacher_step, self_step, z_t, draw, base):
        return btd_target(family, teacher_step, z_t, draw["t"], draw["k"], draw["unit"], base)
