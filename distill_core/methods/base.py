"""What a distillation method is to the phase runner (DESIGN 2, "Two axes, one runner").

A method draws the times of a batch as integer indices on the schedule's base grid and turns a
noised batch into its target x_hat, through the noise family (times, jumps, inversion) and two
step functions: the teacher's own step (`teacher_step(z, t, s)`: DDIM, or Heun/Euler for an EDM
teacher) and the self-teacher's DDIM jump (`self_step`, None when the method has no self-teacher).
Its class attributes say which EMAs exist and what a phase hand-over does; `student_family` says how the
student reads the teacher's network and `loss` how far a prediction is from its target (by default: the
family's weighted squared x-error); the runner asks nothing else about it.
"""
from typing import Callable, Optional

import torch

from ..families import NoiseFamily

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t, s) -> z_s


class Method:
    name = "?"
    clip_default = False  # clip x_hat in the teacher's and self-teacher's steps unless distill.clip_x says otherwise
    self_teacher = False  # keeps an EMA of the student (momentum distill.mu_s) that teaches its own jumps
    bias_corrected_self_teacher = True  # its EMA as TRACT's (the first update copies); False: a plain EMA (CD's)
    fresh_student_each_phase = False  # each phase restarts student, optimizer and inference EMA from the teacher
    teacher_hands_over = True  # the evaluated student becomes the next phase's teacher (else: one teacher throughout)

    def draw(self, batch: int, base: int, teacher_steps: int, student_steps: int,
             generator: torch.Generator) -> dict:
        """Index tensors on the `base` grid; "t" is where the batch is noised."""
        raise NotImplementedError

    def target(self, family: NoiseFamily, teacher_step: StepFn, self_step: Optional[StepFn], z_t: torch.Tensor,
               draw: dict, base: int) -> torch.Tensor:
        raise NotImplementedError

    def student_family(self, family: NoiseFamily, cfg) -> NoiseFamily:
        """The family the student reads its network with, distilled on the teacher's `cfg.schedule[0]`-step grid."""
        return family.for_student(cfg.schedule[0])

    def loss(self, family: NoiseFamily, cfg, t: torch.Tensor, prediction: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
        """The batch's loss: the family's weighted squared x-error (`distill.weighting`, `distill.loss_reduction`)."""
        return family.loss(cfg.weighting, t, prediction, target, cfg.loss_reduction)
