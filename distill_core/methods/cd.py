"""Consistency distillation (DESIGN 3.12; Song, Dhariwal, Chen & Sutskever 2023; openai/consistency_models'
`consistency_losses`): one teacher ODE step between neighbours of the teacher's N-step grid, then the target
network's consistency function at the teacher's point; the student's consistency function at the starting
point is pulled towards it under a distance.

The grid is the schedule's first entry N on the teacher's own family (EDM's Karras grid on the edm family: the
paper's); a draw is n + 1 ~ U{2..N}, the teacher's own step (Heun on EDM) takes x_{t_{n+1}} to t_n, and the
target is the self-teacher's (the target network's: an EMA of the student, momentum `distill.mu_s`; 0.95 in the
paper) output there, its x_hat (a jump to the data end). The student reads the teacher's network as a consistency
function (`families.consistency`); one teacher throughout (no hand-over); the later entries of the schedule are
the step counts each phase's student is evaluated at. The loss is the distance, weight 1 (the paper's lambda = 1):
`l2` (mean squared), `l1` (mean absolute) or `pseudo_huber` (iCT's sqrt(||a - b||^2 + c^2) - c, c = 0.00054 sqrt(d)
unless `distill.cd_huber_c`). LPIPS is not offered: its VGG/AlexNet weights are a download, which this toolkit
does not make at run time.
"""
import math

import torch

from ..families.consistency import Consistency
from .base import Method

DISTANCES = ("l2", "l1", "pseudo_huber")


def cd_draw(batch: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """n + 1 ~ U{2..N}: where the batch is noised (the teacher steps from there to its neighbour below)."""
    return torch.randint(2, grid + 1, (batch,), generator=generator)


def cd_target(family, teacher_step, self_step, z_t: torch.Tensor, t_index: torch.Tensor, base: int) -> torch.Tensor:
    """f_target(teacher's step t_{n+1} -> t_n of z_t, t_n): the target network's output at the teacher's point."""
    t, s = family.time(t_index, base), family.time(t_index - 1, base)
    z_s = teacher_step(z_t, t, s)
    return self_step(z_s, s, torch.zeros_like(s))


def distance(kind: str, a: torch.Tensor, b: torch.Tensor, huber_c=None) -> torch.Tensor:
    """Per-example distance (B,)."""
    diff = (a - b).flatten(1)
    if kind == "l2":
        return diff.pow(2).mean(1)
    if kind == "l1":
        return diff.abs().mean(1)
    c = huber_c if huber_c is not None else 0.00054 * math.sqrt(diff.shape[1])
    return (diff.pow(2).sum(1) + c ** 2).sqrt() - c


class CD(Method):
    name = "cd"
    clip_default = False  # the paper's target is the target network's unclipped output
    self_teacher = True  # the target network: an EMA of the student (momentum distill.mu_s)
    bias_corrected_self_teacher = False  # openai/consistency_models' update_ema: a plain EMA from the first update
    teacher_hands_over = False  # one teacher: each phase goes on distilling the same ODE

    def draw(self, batch, base, teacher_steps, student_steps, generator):
        return {"t": cd_draw(batch, base, generator)}

    def target(self, family, teacher_step, self_step, z_t, draw, base):
        return cd_target(family, teacher_step, self_step, z_t, draw["t"], base)

    def student_family(self, family, cfg):
        return Consistency(family, cfg.schedule[0], cfg.cd_times)

    def loss(self, family, cfg, t, prediction, target):
        return distance(cfg.cd_distance, prediction, target, cfg.cd_huber_c).mean()
