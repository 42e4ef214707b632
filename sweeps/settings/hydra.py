"""From Hydra's config to `JobSettings`, once, at the top of a job: every key checked (exit 2 on bad
input, before anything starts), and what the job derives from Hydra (its key, run name, output folder,
params, resolved config) computed here so that no stage needs Hydra or the raw config."""
import hashlib
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..common.errors import fail
from .checks import ConfigError, brings_network, check_keys, resolve_device
from .types import DataSettings, EvalSettings, JobSettings, RegistrySettings, TrackingSettings

# keys left out of a run's name: where it runs and logs, not what it is
NOT_IN_NAMES = ("hydra", "debug", "eval", "tracking", "experiment_name", "experiment", "optuna", "registry",
                "cache_dir", "device", "devices", "nodes", "compile")


def from_hydra(cfg: DictConfig) -> JobSettings:
    """The job's settings; a bad key ends the process with one line and exit code 2."""
    from ..multirun.trial import current_trial
    from ..ranks.layout import layout_problem
    try:
        tc, dc = check_keys(cfg)
        device = resolve_device(cfg.device)
        trial = current_trial(cfg)
    except (ConfigError, ValueError) as e:
        fail(str(e))
    problem = layout_problem(cfg.devices, cfg.nodes, {"distill.batch_size": cfg.distill.batch_size,
                                                     "teacher.batch_size": cfg.teacher.batch_size}, device)
    if problem:
        fail(problem)
    overrides, cfg = hydra_overrides(), with_classes(without_hydra(cfg), tc.num_classes)
    return JobSettings(
        teacher=tc, distill=dc, teacher_source=str(cfg.teacher.source), teacher_sha256=cfg.teacher.get("sha256"),
        data=_pick(DataSettings, cfg.data),
        eval=_pick(EvalSettings, cfg.eval, ancestral_gammas=tuple(cfg.eval.ancestral_gammas)),
        tracking=_pick(TrackingSettings, cfg.tracking, experiment=cfg.experiment_name),
        registry=_pick(RegistrySettings, cfg.registry), seed=cfg.seed, objective=cfg.objective, device=device,
        devices=cfg.devices, nodes=cfg.nodes, cache_dir=Path(cfg.cache_dir), output_dir=output_dir(), key=job_key(cfg),
        label=run_label(dc.method, tc.family["family"], dc.schedule, overrides, tc.num_classes), overrides=overrides,
        params=params_of(cfg), resolved_yaml=resolved_yaml(cfg), trial=trial)


def params_of(cfg: DictConfig) -> dict:
    """The run's params; with a teacher that brings its family and network, not the keys it overrides."""
    from ..tracking.params import job_params
    params = job_params(cfg)
    if not brings_network(cfg):
        return params
    return {k: v for k, v in params.items() if k.split(".")[0] not in ("diffusion", "model", "teacher") or k == "teacher.source"}


def with_classes(cfg: DictConfig, num_classes) -> DictConfig:
    """The job's config with `model.num_classes` as the number it resolved to (`auto`: the dataset's), which is
    what its key, params and resolved config carry; left out where null, so that the keys of unconditional
    jobs are those they had before the key existed (a stored killed job still resumes). The same for the keys
    added later (`ADDED_LATER`)."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    if "model" in cfg:
        if num_classes:
            cfg.model.num_classes = int(num_classes)
        elif "num_classes" in cfg.model and cfg.model.num_classes is None:
            del cfg.model["num_classes"]
    for (group, key), neutral in ADDED_LATER.items():
        if group in cfg and key in cfg[group] and cfg[group][key] == neutral:
            del cfg[group][key]
    return cfg


# Keys added after stores held jobs: left out of a job's config (its key, params, resolved config) while they hold
# the value that changes nothing, so that a stored killed job still resumes under its old key.
ADDED_LATER = {("eval", "fid_ref"): None, ("distill", "clip_teacher"): None, ("distill", "clip_self_teacher"): None,
               ("distill", "nonfinite_grads"): "stop", ("teacher", "sha256"): None, ("distill", "eval_steps"): [],
               ("distill", "cd_distance"): "l2", ("distill", "cd_huber_c"): None, ("distill", "cd_times"): None,
               ("eval", "reference_steps"): None}


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's own config: what a job receives (a config composed with `return_hydra_config` carries Hydra's too)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg


def _pick(cls, node, **given):
    """`cls` from the keys of a config group that it has (a group may carry more, e.g. an experiment's)."""
    values = OmegaConf.to_container(node, resolve=True)
    return cls(**{**{f.name: values[f.name] for f in fields(cls) if f.name in values}, **given})


def resolved_yaml(cfg: DictConfig) -> str:
    from ..common.redaction import redact
    return redact(OmegaConf.to_yaml(cfg, resolve=True))


def output_dir() -> Path:
    """Hydra's output folder of this job (a config composed outside a run: its `hydra.run.dir`)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import MissingMandatoryValue
    hc = HydraConfig.get()
    try:
        return Path(hc.runtime.output_dir)
    except MissingMandatoryValue:
        return Path(hc.run.dir)


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def job_key(cfg: DictConfig) -> str:
    """Same command, same key: the resolved job config plus the job's place in its sweep."""
    from hydra.core.hydra_config import HydraConfig
    text = OmegaConf.to_yaml(cfg, resolve=True)
    try:
        hc = HydraConfig.get()
        mode = getattr(hc.mode, "name", "RUN")  # (a config composed outside a run has none)
        text += f"|{mode}|{hc.job.num if mode == 'MULTIRUN' else ''}"
    except ValueError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_label(method: str, family: str, schedule, overrides: list[str], num_classes=None) -> str:
    """The run's name: method, family, schedule, `cond` for a class-conditional job, and the values this job was
    given on the command line (a sweep's swept values), e.g. `tract vp 256-16-1 cond mu_s=0.9`."""
    given = ["cond"] if num_classes else []
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key.split(".")[0] in NOT_IN_NAMES or key in ("distill.schedule", "model.num_classes"):
            continue
        try:
            value = f"{float(value):.4g}" if any(c in value for c in ".eE") else value
        except ValueError:
            pass
        given.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join([method, family, "-".join(map(str, schedule)), *given])[:250]
