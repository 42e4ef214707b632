"""Every public key checked, and the core's configs built from them, before any work.

A bad value raises `ConfigError` with one line naming the key, the value and what is allowed; the
job prints that line and exits with code 2 (`common.errors.fail`). Where the teacher comes from
(`teacher.source`) is the teacher sources' to judge (`sweeps.teachers`).
"""
from dataclasses import fields

from omegaconf import DictConfig, OmegaConf

from distill_core import data as core_data
from distill_core import families as core_families
from distill_core import weighting as core_weighting
from distill_core.distill import DistillConfig, validate
from distill_core.models import PRESETS
from distill_core.teacher import TeacherConfig

OBJECTIVES = ("gap", "pixel_fd", "fid", "kid")
# Teacher sources that bring their own noise family and network (sweeps.teachers.diffusers_source): with
# them `diffusion.*`, `model.*` and the teacher's training keys do not apply, and distill.parameterization
# is the student's alone. (Named here, not looked up in sweeps.teachers: settings come before teachers.)
BRINGS_FAMILY = ("diffusers:", "hf:")
# Teacher sources that bring their network but run on a family the job names (sweeps.teachers.edm_source:
# an NVlabs EDM file on `diffusion=edm`, whose keys are EDM's sampler settings): `model.*` and the teacher's
# training keys do not apply.
BRINGS_NETWORK = BRINGS_FAMILY + ("edm:",)


def brings_family(cfg: DictConfig) -> bool:
    return str(cfg.teacher.source).startswith(BRINGS_FAMILY)


def brings_network(cfg: DictConfig) -> bool:
    return str(cfg.teacher.source).startswith(BRINGS_NETWORK)


class ConfigError(ValueError):
    pass


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def distill_config(cfg: DictConfig) -> DistillConfig:
    d = _plain(cfg.distill)
    known = {f.name for f in fields(DistillConfig)}
    values = {k: v for k, v in d.items() if k in known}
    values["schedule"] = list(values["schedule"]) if isinstance(values.get("schedule"), (list, tuple)) else values.get("schedule")
    if not isinstance(values["schedule"], list):
        raise ConfigError(f"distill.schedule must be a list of step counts such as [256, 16, 1]; got {values['schedule']!r}")
    values["seed"] = cfg.seed
    values["compile"] = cfg.compile
    values["precision"] = cfg.precision
    values["reference_steps"] = cfg.eval.get("reference_steps")
    values["parameterization"] = d.get("parameterization") if brings_family(cfg) else None  # else: the teacher's
    dc = DistillConfig(**values)
    try:
        validate(dc)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return dc


def family_config(cfg: DictConfig) -> dict:
    """The noise family of the job's teacher, as the core's plain config: `diffusion.*` with
    `teacher_sampler` as the teacher's sampler (the distilled students sample with their own jump)."""
    if brings_family(cfg):  # the teacher's own (its scheduler config), read by its source
        return {"family": "ddpm", "sampler": "ddim"}
    d = dict(_plain(cfg.diffusion))
    spec = {"family": d.pop("family", "vp"), "sampler": d.pop("teacher_sampler", "ddim"), **d}
    if spec["family"] != "vp":  # EDM's grid ends at sigma = 0 in both references: nothing to choose
        spec.pop("t0", None)
    try:
        core_families.build({**spec, "parameterization": cfg.distill.parameterization})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return spec


def model_classes(cfg: DictConfig):
    """`model.num_classes`: null (unconditional), a positive integer (class-conditional on that many classes), or
    `auto` (the dataset's). A teacher that brings its network (diffusers) says for itself (its source checks)."""
    value = cfg.model.get("num_classes")
    if value is None:
        return None
    if brings_network(cfg):
        return value
    name, have = cfg.data.name, core_data.CLASSES.get(cfg.data.name)
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"model.num_classes must be null (unconditional), a positive integer or auto (the "
                          f"dataset's); got {value!r}")
    if have is None:
        labelled = ", ".join(core_data.CLASSES)
        raise ConfigError(f"model.num_classes={value}: data.name={name} has no class labels; a class-conditional model "
                          f"needs one of {labelled}")
    if cfg.model.preset == "mlp":
        raise ConfigError("model.num_classes: the mlp preset has no class embedding; use a unet_* or ddpm_* preset")
    if value == "auto":
        return have
    if value < have:
        raise ConfigError(f"model.num_classes={value} is smaller than data.name={name}'s {have} classes (labels 0..{have - 1}); "
                          f"use {have} or auto")
    return value


def teacher_classes_problem(source: str, teacher_classes, asked, data_name: str):
    """Why a teacher of `teacher_classes` (None: unconditional) cannot run with `model.num_classes=asked` on
    `data_name`, or None. A conditional teacher makes the job conditional (`asked` null or auto)."""
    if teacher_classes is None:
        if asked not in (None, "auto"):
            return (f"model.num_classes={asked}: teacher.source={source} is an unconditional teacher; "
                    f"leave model.num_classes unset (null)")
        return None
    if asked not in (None, "auto") and asked != teacher_classes:
        return (f"model.num_classes={asked}: teacher.source={source} is class-conditional on {teacher_classes} classes; "
                f"set model.num_classes={teacher_classes} or leave it unset")
    have = core_data.CLASSES.get(data_name)
    if have is None or have > teacher_classes:
        return (f"teacher.source={source} is class-conditional on {teacher_classes} classes: data.name={data_name} "
                + ("has no class labels" if have is None else f"has {have}"))
    return None


def teacher_config(cfg: DictConfig) -> TeacherConfig:
    t = _plain(cfg.teacher)
    known = {f.name for f in fields(TeacherConfig)}
    tc = TeacherConfig(**{k: v for k, v in t.items() if k in known}, preset=cfg.model.preset,
                       dropout=cfg.model.dropout, width=cfg.model.get("width"), seed=cfg.seed, compile=cfg.compile,
                       precision=cfg.precision, family=family_config(cfg), num_classes=model_classes(cfg))
    if tc.width is not None and (not isinstance(tc.width, int) or isinstance(tc.width, bool) or tc.width < 1):
        raise ConfigError(f"model.width must be a positive integer or null (the preset's); got {tc.width!r}")
    for key in ("updates", "batch_size"):
        if not isinstance(getattr(tc, key), int) or getattr(tc, key) < 1:
            raise ConfigError(f"teacher.{key} must be a positive integer; got {getattr(tc, key)!r}")
    if not 0.0 <= tc.ema < 1.0:
        raise ConfigError(f"teacher.ema must be in [0, 1); got {tc.ema}")
    if not tc.lr > 0:
        raise ConfigError(f"teacher.lr must be > 0; got {tc.lr}")
    return tc


def one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_keys(cfg: DictConfig) -> tuple[TeacherConfig, DistillConfig]:
    """Every public key, checked; returns the core configs."""
    one_of("data.name", cfg.data.name, core_data.DATASETS)
    one_of("model.preset", cfg.model.preset, tuple(PRESETS))
    one_of("diffusion.family", cfg.diffusion.family, tuple(core_families.FAMILIES))
    family_config(cfg)  # the family checks its keys and the parameterisations it can read
    if brings_family(cfg):
        one_of("distill.parameterization", cfg.distill.parameterization, core_families.DDPM_PARAMETERIZATIONS)
    elif cfg.model.preset == "diffusers":
        raise ConfigError("model.preset=diffusers is the network of a teacher.source=diffusers:PATH or hf:REPO teacher; "
                          "to build one here pick ddpm_tiny, ddpm_small or ddpm_cifar10")
    check_pin(cfg.teacher)
    if str(cfg.teacher.source).startswith("edm:") and cfg.diffusion.family != "edm":
        raise ConfigError(f"teacher.source={cfg.teacher.source} is an EDM-preconditioned network: it runs on the edm "
                          f"family; add diffusion=edm (diffusion.family is {cfg.diffusion.family})")
    if cfg.model.preset == "edm" and not str(cfg.teacher.source).startswith("edm:"):
        raise ConfigError("model.preset=edm is the network of a teacher.source=edm:PATH teacher; to build one here pick "
                          "edm_ddpmpp_cifar10, edm_ncsnpp_cifar10 or edm_adm_imagenet64")
    one_of("distill.weighting", cfg.distill.weighting, core_weighting.WEIGHTINGS)
    one_of("teacher.weighting", cfg.teacher.weighting, core_weighting.WEIGHTINGS)
    one_of("objective", cfg.objective, OBJECTIVES)
    one_of("device", cfg.device, ("auto", "cpu", "cuda"))
    one_of("compile", cfg.compile, (False, True))
    one_of("precision", cfg.precision, ("bf16", "fp32"))
    if cfg.teacher.parameterization != cfg.distill.parameterization and not brings_family(cfg):
        raise ConfigError(f"teacher.parameterization ({cfg.teacher.parameterization}) must equal "
                          f"distill.parameterization ({cfg.distill.parameterization}): the student starts from the teacher")
    check_eval(cfg.eval, cfg.objective)
    check_tracking(cfg.tracking)
    model_classes(cfg)  # (before the preset-and-data rule: a set without labels is the first thing to say)
    if not brings_family(cfg) and (cfg.data.name == "toy2d") != (cfg.model.preset == "mlp"):
        raise ConfigError(f"model.preset=mlp goes with data.name=toy2d only; got model.preset={cfg.model.preset}, data.name={cfg.data.name}")
    return teacher_config(cfg), distill_config(cfg)


def check_pin(teacher) -> None:
    """`teacher.sha256`: null, or the 64 hex digits of an edm: file's sha256."""
    pin = teacher.get("sha256")
    if pin is None:
        return
    if not (isinstance(pin, str) and len(pin) == 64 and all(c in "0123456789abcdefABCDEF" for c in pin)):
        raise ConfigError(f"teacher.sha256 must be null or a file's sha256 (64 hexadecimal digits); got {pin!r}")
    if not str(teacher.source).startswith("edm:"):
        raise ConfigError(f"teacher.sha256 pins an edm: file; teacher.source={teacher.source} is not one (leave it null)")


def check_eval(ev, objective: str) -> None:
    """`eval.*`, and the objective it must compute."""
    if objective in ("fid", "kid") and not ev[objective]:
        raise ConfigError(f"objective={objective} needs eval.{objective}=true")
    if objective == "pixel_fd" and not ev.pixel_fd_samples:
        raise ConfigError("objective=pixel_fd needs eval.pixel_fd_samples >= 2")
    m = ev.pixel_fd_samples
    if not isinstance(m, int) or m == 1 or m < 0:
        raise ConfigError(f"eval.pixel_fd_samples must be 0 (off) or an integer >= 2; got {m!r}")
    gammas = list(ev.ancestral_gammas)
    if not gammas or any(not isinstance(g, (int, float)) or not 0 <= g <= 1 for g in gammas):
        raise ConfigError(f"eval.ancestral_gammas must be a non-empty list of numbers in [0, 1]; got {gammas!r}")
    k = ev.fid_seeds
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"eval.fid_seeds must be a positive integer; got {k!r}")
    one_of("eval.fid_extrapolate", ev.fid_extrapolate, (False, True))
    if ev.fid_ref is not None and ev.kid:
        raise ConfigError(f"eval.kid needs reference images; eval.fid_ref={ev.fid_ref} (statistics) gives FID only: "
                          "add eval.kid=false")
    n = ev.num_samples
    if n is not None and (not isinstance(n, int) or n < 2):
        raise ConfigError(f"eval.num_samples must be an integer >= 2 or null; got {n!r}")


def check_tracking(tr) -> None:
    one_of("tracking.async_logging", tr.async_logging, (False, True))
    one_of("tracking.system_metrics", tr.system_metrics, (False, True))
    for key in ("outage_limit_s", "system_metrics_interval"):
        v = tr[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"tracking.{key} must be a number of seconds > 0; got {v!r}")


def resolve_device(name: str) -> str:
    """`device=auto|cpu|cuda` -> cpu or cuda (ConfigError when CUDA is asked for and absent)."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return name
