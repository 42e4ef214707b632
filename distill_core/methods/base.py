"""What a distillation method is to the phase runner (DESIGN 2, "Two axes, one runner").

A method draws the times of a batch as integer indices on the schedule's base grid and turns a
noised batch into its target x_hat, through the noise family (times, jumps, inversion) and two
step functions: the teacher's own step (`teacher_step(z, t, s)`: DDIM, or Heun/Euler for an EDM
teacher) and the self-teacher's DDIM jump (`self_step`, None when the method has no self-teacher).
Its class attributes say which EMAs exist and what a phase hand-over does; the runner asks
nothing else about it.
"""
from typing import Callable, Optional

import torch

from ..families import NoiseFamily

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t, s) -> z_s


class Method:
    name = "?"
    clip_default = False  # clip x_hat in the teacher's and self-teacher's steps unless distill.clip_x says otherwise
    self_teacher = False  # keeps an EMA of the student (momentum distill.mu_s) that teaches its own jumps
    fresh_student_each_phase = False  # each phase restarts student, optimizer and inference EMA from the teacher

    def draw(self, batch: int, base: int, teacher_steps: int, student_steps: int,
             generator: torch.Generator) -> dict:
        """Index tensors on the `base` grid; "t" is where the batch is noised."""
        raise NotImplementedError

    def target(self, family: NoiseFamily, teacher_step: StepFn, self_step: Optional[StepFn], z_t: torch.Tensor,
               draw: dict, base: int) -> torch.Tensor:
        raise NotImplementedError
