"""One phase runner for both distillation methods and both noise families (DESIGN 3.6-3.8).

The runner knows a method (`distill_core.methods`: how a batch's times are drawn and its target
made, which EMAs exist, what a phase hand-over does) and the teacher's noise family
(`distill_core.families`: noising, times, jumps, the loss weight), and asks neither which one it
has. The inference EMA (mu_i; 0 = none) is what is evaluated, saved and becomes the next
phase's teacher. The whole state is checkpointed atomically during and after each phase, so a
killed job resumes where it stopped and ends with the same weights. Under data parallelism
(`distill_core.placement`) every rank holds the whole state and trains on its slice of each global
batch; rank 0 alone reports, checkpoints and evaluates, and the ranks' weights are compared at
every phase end.
"""
import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from . import rng
from .callbacks import Callback
from .checkpoint import CheckpointError, load_checked, save_atomic
from .data import TensorData
from .diffusion import DiffusionModel
from .ema import EMA
from .families import build as build_family
from .families.consistency import check_times
from .images import grid_classes, save_class_grid, save_grid
from .loop import NONFINITE, LoopSettings, run_updates
from .methods import build as build_method
from .methods.cd import DISTANCES
from .placement import Single
from .weighting import check as check_weighting

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    method: str = "tract"
    schedule: Sequence[int] = (256, 16, 1)
    mu_s: float = 0.5
    mu_i: float = 0.0
    mu_i_residual: Optional[float] = None  # TRACT's rule: mu_i = residual ** (1 / updates_per_phase)
    weighting: str = "truncated_snr"
    updates_per_phase: Union[int, Sequence[int]] = 300  # or one count per phase: [150, 450] for [256, 16, 1]
    batch_size: int = 128
    lr: float = 3e-4
    lr_schedule: str = "linear"  # linear: anneal to 0 over each phase (PD); constant (ml-tract)
    grad_clip: float = 1.0
    loss_reduction: str = "mean"  # mean over pixels (PD) or sum (ml-tract: `.mean(0).sum()`); batch mean either way
    ema_reset: str = "none"  # phase: the inference EMA's counter restarts at each hand-over (ml-tract --reset=phase)
    target_precision: str = "float32"  # float64: the targets' arithmetic in double, as ml-tract (networks stay float32)
    clip_x: Optional[bool] = None  # None: the reference's choice (btd off, tract on); shorthand for both roles below
    clip_teacher: Optional[bool] = None  # clip the teacher's x_hat in its own steps (None: clip_x)
    clip_self_teacher: Optional[bool] = None  # clip the self-teacher's x_hat in its jump (None: clip_x)
    nonfinite_grads: str = "stop"  # stop: the job ends FAILED | zero: ml-tract's nan_to_num on the gradients, the step taken
    checkpoint_every: int = 100
    log_every: int = 25
    seed: int = 0
    inject_nan_at: Optional[int] = None  # testing knob: make the loss NaN at this global update
    compile: bool = False  # torch.compile the network calls (see DiffusionModel.use_fast_paths)
    precision: str = "bf16"  # the networks' precision on CUDA (bf16 autocast or fp32); targets stay float32
    parameterization: Optional[str] = None  # the student's output (None: the teacher's; e.g. an eps teacher's v student)
    eval_steps: Sequence[int] = ()  # step counts the final student is also evaluated at (beyond the schedule's)
    reference_steps: Optional[int] = None  # the teacher's step count of the gap's reference (None: the schedule's first)
    cd_distance: str = "l2"  # cd: l2 | l1 | pseudo_huber
    cd_huber_c: Optional[float] = None  # cd: pseudo-Huber's c (None: 0.00054 sqrt(pixels), iCT's)
    cd_times: Optional[dict] = None  # cd: {step count: its intermediate grid indices} for multistep sampling


CHOICES = {"lr_schedule": ("linear", "constant"), "loss_reduction": ("mean", "sum"), "ema_reset": ("none", "phase"),
           "target_precision": ("float32", "float64"), "nonfinite_grads": NONFINITE, "cd_distance": DISTANCES}


def clips(cfg: DistillConfig, method) -> tuple[bool, bool]:
    """(the teacher's clip, the self-teacher's clip): each role's own key, else `clip_x`, else the method's default."""
    both = cfg.clip_x if cfg.clip_x is not None else method.clip_default
    return tuple(both if own is None else own for own in (cfg.clip_teacher, cfg.clip_self_teacher))


def validate(cfg: DistillConfig) -> None:
    """One clear ValueError naming the key and what is allowed."""
    build_method(cfg.method)
    s = list(cfg.schedule)
    if len(s) < 2 or any(not isinstance(n, int) or n < 1 for n in s):
        raise ValueError(f"distill.schedule must list at least two positive integer step counts; got {s}")
    for a, b in zip(s, s[1:]):
        if not a > b:
            raise ValueError(f"distill.schedule must be strictly decreasing; got {s}")
        if a % b:
            raise ValueError(f"distill.schedule: each count must divide the previous one; {b} does not divide {a} in {s}")
    for key in ("mu_s", "mu_i"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ValueError(f"distill.{key} must be in [0, 1); got {getattr(cfg, key)}")
    if cfg.mu_i_residual is not None and not 0.0 < cfg.mu_i_residual < 1.0:
        raise ValueError(f"distill.mu_i_residual must be in (0, 1) or null; got {cfg.mu_i_residual}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ValueError(f"distill.batch_size must be a positive integer; got {cfg.batch_size}")
    u = cfg.updates_per_phase
    if not ((isinstance(u, int) and not isinstance(u, bool) and u >= 1) or
            (isinstance(u, (list, tuple)) and len(u) == len(s) - 1 and
             all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in u))):
        raise ValueError(f"distill.updates_per_phase must be a positive integer or a list of {len(s) - 1} (one per "
                         f"phase of {s}); got {u}")
    if not cfg.lr > 0:
        raise ValueError(f"distill.lr must be > 0; got {cfg.lr}")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"distill.{key} must be one of {', '.join(allowed)}; got {getattr(cfg, key)!r}")
    r = cfg.reference_steps
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise ValueError(f"eval.reference_steps must be a positive integer or null (the schedule's first entry); got {r!r}")
    e = list(cfg.eval_steps or ())
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in e):
        raise ValueError(f"distill.eval_steps must be a list of positive integer step counts; got {e}")
    c = cfg.cd_huber_c
    if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0):
        raise ValueError(f"distill.cd_huber_c must be a number > 0 or null (0.00054 sqrt(pixels)); got {c!r}")
    if cfg.cd_times is not None and not isinstance(cfg.cd_times, dict):
        raise ValueError(f"distill.cd_times must be null or {{step count: [grid indices]}}; got {cfg.cd_times!r}")
    check_times(cfg.cd_times, s[0])
    for key in ("clip_x", "clip_teacher", "clip_self_teacher"):
        if getattr(cfg, key) not in (None, True, False):
            raise ValueError(f"distill.{key} must be true, false or null; got {getattr(cfg, key)!r}")
    check_weighting(cfg.weighting)


def phase_updates(cfg: DistillConfig) -> list:
    """Each phase's update count."""
    u = cfg.updates_per_phase
    return list(u) if isinstance(u, (list, tuple)) else [u] * (len(cfg.schedule) - 1)


def inference_momentum(cfg: DistillConfig, phase: int = 0) -> float:
    if cfg.mu_i_residual is not None:
        return cfg.mu_i_residual ** (1.0 / phase_updates(cfg)[phase])
    return cfg.mu_i


@dataclass
class PhaseResult:
    phase: int
    teacher_steps: int
    steps: int
    metrics: dict
    also: dict = field(default_factory=dict)  # {step count: metrics}: the final student judged at other counts too


@dataclass
class DistillResult:
    model: DiffusionModel
    phases: list = field(default_factory=list)
    stopped_after: Optional[int] = None  # the phase (1, 2, ...) after which the callback stopped the job


def gap(model: DiffusionModel, noise: torch.Tensor, steps: int, reference: torch.Tensor, labels=None) -> float:
    """RMSE between the model's `steps`-step DDIM samples and the reference samples from the same noise (and,
    for a class-conditional model, the same labels)."""
    return float((model.sample(noise, steps, labels=labels) - reference).pow(2).mean().sqrt())


def balanced_labels(n: int, num_classes) -> Optional[torch.Tensor]:
    """The fixed class-balanced labels of `n` evaluation samples, y_i = i mod K (None: unconditional)."""
    return torch.arange(n) % int(num_classes) if num_classes else None


def set_dropout(model: torch.nn.Module, p: float) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p


class Distiller:
    """Holds the state of one distillation job; `run()` executes (or resumes) it."""

    def __init__(self, teacher: DiffusionModel, data: TensorData, cfg: DistillConfig, workdir: Path,
                 callback: Optional[Callback] = None, device: str = "cpu", eval_noise: Optional[torch.Tensor] = None,
                 progress: bool = True, placement=None):
        validate(cfg)
        self.placement = placement or Single()
        self.cfg, self.data, self.device = cfg, data, device
        self.progress = progress and self.placement.is_main
        self.callback = callback if callback is not None and self.placement.is_main else Callback()
        self.workdir = Path(workdir)
        self.method = build_method(cfg.method)
        self.clip_teacher, self.clip_self_teacher = clips(cfg, self.method)
        self.original_teacher = teacher.use_fast_paths(device, cfg.compile, cfg.precision).eval()
        self.family = teacher.family  # times and noising of every phase: the teacher's grid
        self.eval_noise = eval_noise if eval_noise is not None else \
            torch.randn((64, *teacher.data_shape), generator=torch.Generator().manual_seed(cfg.seed + 1))
        self.eval_noise = self.eval_noise.to(device)
        self.num_classes = teacher.num_classes  # a class-conditional teacher: every update draws (x, y)
        self.eval_labels = balanced_labels(len(self.eval_noise), self.num_classes)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.mu_i = inference_momentum(cfg)
        # state that a checkpoint carries
        self.phase, self.step, self._global_step = 0, 0, 0
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.student = self._new_student(self.teacher)
        self.self_teacher = EMA(self.student, cfg.mu_s, self.method.bias_corrected_self_teacher) \
            if self.method.self_teacher else None
        self.ema_i = EMA(self.student, self.mu_i)
        self.optimizer = self._new_optimizer()
        self.results: list[PhaseResult] = []
        self._x_hat = None  # the student's x_hat as trained (DDP's forward under data parallelism); set per phase

    def _new_student(self, source: DiffusionModel) -> DiffusionModel:
        student = copy.deepcopy(source).train().requires_grad_(True)
        family = source.family
        if self.cfg.parameterization not in (None, family.parameterization):  # same weights, new reading
            family = family.replace(parameterization=self.cfg.parameterization)
        student.family = self.method.student_family(family, self.cfg)  # how it samples: DDIM jumps, consistency, ...
        set_dropout(student, 0.0)
        return student

    def _new_optimizer(self):
        return torch.optim.Adam(self.student.parameters(), lr=self.cfg.lr, fused=str(self.device).startswith("cuda"))

    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / "distill_latest.pt"

    # --- checkpoints ---
    def state(self) -> dict:
        handed = self.phase > 0 and self.method.teacher_hands_over
        teacher = self.teacher.state_dict() if handed else None  # (still the job's own teacher: not saved again)
        return {"phase": self.phase, "step": self.step, "teacher": teacher,
                "teacher_family": self.teacher.family.config(),  # after phase 1 the teacher is a student
                "student": self.student.state_dict(), "ema_i": self.ema_i.state_dict(),
                "self_teacher": self.self_teacher.state_dict() if self.self_teacher else None,
                "optimizer": self.optimizer.state_dict(), "rng": rng.capture(self.generator),
                "results": [r.__dict__ for r in self.results]}

    def save(self, name: str) -> None:
        if not self.placement.is_main:
            return
        self.callback.on_save(name)
        digest = save_atomic(self.state(), self.workdir / name)
        if name != self.checkpoint_path.name:  # the phase file is also the new resume point: a second name for it
            tmp = self.checkpoint_path.with_name(f".{self.checkpoint_path.name}.tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(self.workdir / name, tmp)  # (the next save replaces the name, never the phase file's bytes)
            except OSError:
                shutil.copyfile(self.workdir / name, tmp)
            os.replace(tmp, self.checkpoint_path)
        self.callback.on_checkpoint(self.workdir / name, digest, name)

    def load(self, path: Path) -> None:
        state = load_checked(path, map_location=self.device)
        self.phase, self.step = state["phase"], state["step"]
        if state["teacher"] is not None:  # (None: still the job's own teacher, which it was built with)
            self.teacher.load_state_dict(state["teacher"])
            if "teacher_family" in state:  # (checkpoints from before noise families hold VP teachers only)
                self.teacher.family = build_family(state["teacher_family"])
        self.student.load_state_dict(state["student"])
        self.ema_i.load_state_dict(state["ema_i"])
        if self.self_teacher is not None:
            self.self_teacher.load_state_dict(state["self_teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        rng.restore(state["rng"], self.generator)
        self.results = [PhaseResult(**r) for r in state["results"]]

    def resume_from_newest(self) -> bool:
        """Load the newest readable checkpoint: `distill_latest.pt`, else the last phase file (a truncated
        or damaged file is passed over with a warning naming it); False when there is none."""
        phases = sorted(self.workdir.glob("phase*_*steps.pt"), key=lambda p: int(p.name[5:].split("_")[0]))
        for path in [self.checkpoint_path, *reversed(phases)]:
            if not path.is_file():
                continue
            try:
                self.load(path)
                return True
            except CheckpointError as e:
                log.warning("%s; resuming from an earlier checkpoint", e)
        return False

    # --- one batch ---
    def loss(self, teacher_steps: int, student_steps: int) -> torch.Tensor:
        cfg, g, dev, family, base = self.cfg, self.generator, self.device, self.family, self.cfg.schedule[0]
        shard = self.placement.shard  # every rank draws the global batch and keeps its slice
        x, y = self.data.draw(cfg.batch_size, g)
        x = shard(x).to(dev)
        y = shard(y).to(dev) if self.num_classes else None  # one label tensor for teacher, self-teacher and student
        eps = shard(torch.randn((cfg.batch_size, *self.data.shape), generator=g)).to(dev)
        teacher = self.teacher.conditioned(y)
        self_teacher = self.self_teacher.module.conditioned(y) if self.self_teacher else None

        def teacher_step(z, t_from, t_to):  # the teacher's own sampler step (DDIM; Heun/Euler for EDM)
            return teacher.step(z, t_from, t_to, self.clip_teacher)

        def self_step(z, t_from, t_to):  # the self-teacher's DDIM jump
            return self_teacher.jump(z, t_from, t_to, self.clip_self_teacher)

        with torch.inference_mode():
            draw = {k: shard(v).to(dev) if torch.is_tensor(v) else v for k, v in
                    self.method.draw(cfg.batch_size, base, teacher_steps, student_steps, g).items()}
            t = family.time(draw["t"], base)
            if cfg.target_precision == "float64":  # the networks see float32 inputs (DiffusionModel._net)
                x, eps, t = x.double(), eps.double(), t.double()
            z_t = family.noise(x, t, eps)
            target = self.method.target(family, teacher_step, self_step if self_teacher else None, z_t, draw, base)
        z_t, target, t = z_t.float(), target.float(), t.float()  # (copies out of inference mode)
        if cfg.target_precision == "float32":
            z_t, target, t = z_t.clone(), target.clone(), t.clone()
        x_hat = self._x_hat if self._x_hat is not None else self.student.x_hat
        prediction = x_hat(z_t, t) if y is None else x_hat(z_t, t, labels=y)
        loss = self.method.loss(family, cfg, t, prediction, target)
        if cfg.inject_nan_at is not None and self._global_step == cfg.inject_nan_at:
            loss = loss * float("nan")
        self._global_step += 1
        return loss

    def eval_model(self) -> DiffusionModel:
        return self.ema_i.module if self.mu_i > 0 else self.student

    # --- the job ---
    def run(self, resume: bool = True) -> DistillResult:
        cfg = self.cfg
        resumed = resume and self.resume_from_newest()
        if resumed:
            log.info("resuming distillation at phase %d, update %d", self.phase + 1, self.step)
        schedule = list(cfg.schedule)
        base = cfg.reference_steps or schedule[0]
        reference = self._reference(base) if self.placement.is_main else None  # (the other ranks only train)
        if self.num_classes and self.placement.is_main:  # (the overview figure labels the grids' rows by class)
            self.workdir.mkdir(parents=True, exist_ok=True)
            rows = grid_classes(self.eval_labels, self.num_classes)
            (self.workdir / "classes.json").write_text(json.dumps({"num_classes": int(self.num_classes), "rows": rows}))
        if reference is not None and not resumed:  # the teacher's grid from the same noise, beside the students'
            grid = self._grid(reference, f"samples_teacher_{base}steps.png")
            self.callback.on_image(grid, grid.name, 0)
        n_phases, updates = len(schedule) - 1, phase_updates(cfg)
        self.starts = [sum(updates[:i]) for i in range(n_phases + 1)]  # cumulative updates before each phase
        while self.phase < n_phases:
            p = self.phase
            teacher_steps, student_steps = schedule[p], schedule[p + 1]
            log.info("phase %d/%d (%s): %d -> %d steps, %d updates", p + 1, n_phases, cfg.method,
                     teacher_steps, student_steps, updates[p])
            self._global_step = self.starts[p] + self.step
            self.ema_i.momentum = inference_momentum(cfg, p)  # (per phase under mu_i_residual)
            settings = LoopSettings(updates=updates[p], lr=cfg.lr, anneal=cfg.lr_schedule == "linear",
                                    grad_clip=cfg.grad_clip, log_every=cfg.log_every,
                                    checkpoint_every=cfg.checkpoint_every, progress=self.progress,
                                    desc=f"{cfg.method} {teacher_steps}->{student_steps}", metric_prefix="distill",
                                    nonfinite=cfg.nonfinite_grads)
            emas = [e for e in (self.self_teacher, self.ema_i if self.mu_i > 0 else None) if e is not None]

            def save_mid(step: int) -> None:
                self.step = step
                self.save(self.checkpoint_path.name)

            self._x_hat = self.placement.wrap(self.student)  # (BTD starts a fresh student every phase)
            run_updates(self.student, self.optimizer, lambda: self.loss(teacher_steps, student_steps), settings,
                        start=self.step, step_offset=self.starts[p], emas=emas,
                        callback=self.callback, save_checkpoint=save_mid, placement=self.placement)
            for name, module in (("student", self.student), ("inference EMA", self.ema_i),
                                 ("self-teacher", self.self_teacher)):
                if module is not None:
                    self.placement.check_in_step(name, module)
            self._end_phase(p, teacher_steps, student_steps, reference)
            if self.phase < n_phases and not self._keep_going(p):
                log.info("stopped after phase %d/%d (%d steps) by the callback", p + 1, n_phases, student_steps)
                break
        done = schedule[:self.phase + 1]  # all of it, unless stopped early
        final = copy.deepcopy(self.eval_model()).eval().requires_grad_(False)  # the last phase's evaluated student
        final.info = dict(self.original_teacher.info, role="student", method=cfg.method, schedule=done,
                          steps=done[-1], distilled_steps=done[1:], teacher_info=dict(self.original_teacher.info))
        return DistillResult(final, self.results, None if self.phase == n_phases else self.phase)

    def _reference(self, steps: int) -> torch.Tensor:
        """The evaluation's reference: the teacher's own `steps`-step samples from the fixed noise (a published-size
        teacher at 40 Heun steps takes minutes on a CPU: said on the console, with a bar on a terminal)."""
        log.info("the teacher's reference: %d samples at %d steps (the gap's and the grids' yardstick)",
                 len(self.eval_noise), steps)
        return self.original_teacher.sample(self.eval_noise, steps, labels=self.eval_labels,
                                            progress="teacher reference")

    def _grid(self, samples: torch.Tensor, name: str):
        """A grid PNG in the job's folder; a class-conditional model's has one row per class."""
        if self.eval_labels is None:
            return save_grid(samples, self.workdir / name)
        return save_class_grid(samples, self.eval_labels, self.num_classes, self.workdir / name)

    def _also_evaluated(self, p: int) -> list:
        """The step counts the last phase's student is also judged at (`eval_steps` beyond the schedule's), largest
        first."""
        if p != len(self.cfg.schedule) - 2:
            return []
        return sorted({int(n) for n in self.cfg.eval_steps} - set(self.cfg.schedule[1:]), reverse=True)

    def _keep_going(self, p: int) -> bool:
        go = self.callback.keep_going(p, self.starts[p + 1], self.results[-1].metrics) \
            if self.placement.is_main else True
        return self.placement.agree(bool(go))

    def _end_phase(self, p: int, teacher_steps: int, student_steps: int, reference: torch.Tensor) -> None:
        model = self.eval_model()
        also = {}
        if self.placement.is_main:
            for steps in self._also_evaluated(p):  # (first: the phase's own count is the run's result, logged last)
                also[steps] = self._evaluate(p, steps, model, reference)
        metrics = self._evaluate(p, student_steps, model, reference) if self.placement.is_main else {}
        self.placement.barrier()  # the other ranks wait for rank 0's evaluation
        self.results.append(PhaseResult(p, teacher_steps, student_steps, metrics, also))
        if self.method.teacher_hands_over:  # the evaluated model becomes the next phase's teacher
            self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        if self.method.fresh_student_each_phase:
            self.student = self._new_student(self.teacher)
            self.ema_i = EMA(self.student, self.mu_i)
            self.optimizer = self._new_optimizer()
        elif self.cfg.ema_reset == "phase":  # the next update copies the student (d_1 = 1)
            self.ema_i.updates.zero_()
        self.phase, self.step = p + 1, 0
        self.save(f"phase{p + 1}_{student_steps}steps.pt")

    def _evaluate(self, p: int, student_steps: int, model: DiffusionModel, reference: torch.Tensor) -> dict:
        noise, labels = self.eval_noise, self.eval_labels
        metrics = {"gap": gap(model, noise, student_steps, reference, labels),
                   "teacher_gap": gap(self.original_teacher, noise, student_steps, reference, labels)}
        teacher_grid = self._grid(self.original_teacher.sample(noise, student_steps, labels=labels),
                                  f"samples_teacher_{student_steps}steps.png")  # beside the student's
        self.callback.on_image(teacher_grid, teacher_grid.name)
        grid = self._grid(model.sample(noise, student_steps, labels=labels), f"samples_phase{p + 1}_{student_steps}steps.png")
        self.callback.on_image(grid, grid.name, self.starts[p + 1])
        metrics.update(self.callback.on_phase_end(p, student_steps, model, metrics) or {})
        # at the cumulative update count: the losses' x-axis, and a run's latest value is its final phase's
        self.callback.on_phase_metrics(p, student_steps, self.starts[p + 1], metrics)
        log.info("phase %d done: %d steps, gap %.4f (teacher at %d steps: %.4f)", p + 1, student_steps,
                 metrics["gap"], student_steps, metrics["teacher_gap"])
        return metrics


def distill(teacher: DiffusionModel, data: TensorData, cfg: DistillConfig, workdir: Path, **kwargs) -> DistillResult:
    return Distiller(teacher, data, cfg, workdir, **kwargs).run()
