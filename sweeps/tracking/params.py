"""A run's params: the job's settings under their config keys (not where it logs or caches).

The full resolved config is the run's `config_resolved.yaml` artifact; the params are what a user
filters and compares on. A teacher's run carries the same names as its students' for the keys they share.
"""
from omegaconf import DictConfig, OmegaConf

from ..common.redaction import redact


def flatten(cfg: DictConfig) -> dict:
    """The resolved config as {dotted.key: value}; lists stay lists (logged as their repr)."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return {k: redact(v) for k, v in out.items()}


NOT_PARAMS = ("tracking", "registry", "scale", "optuna", "cache_dir", "experiment_name")  # where, not what
TEACHER_PARAMS = ("data", "model", "teacher", "diffusion", "seed", "compile", "precision", "devices")


def job_params(cfg: DictConfig, groups=None) -> dict:
    """The run's params: the settings of this job under their config keys (the full resolved config is the
    run's `config_resolved.yaml`): not where it logs or caches, not the scale's grids, not unset keys.
    `groups`: only these top-level keys (a teacher's run: the same names as its students')."""
    return {k: v for k, v in flatten(cfg).items()
            if k.split(".")[0] not in NOT_PARAMS and v is not None and (groups is None or k.split(".")[0] in groups)}


def teacher_params(params: dict) -> dict:
    """The subset of a job's params that a teacher's run carries (`TEACHER_PARAMS`), under the same names."""
    return {k: v for k, v in params.items() if k.split(".")[0] in TEACHER_PARAMS}
