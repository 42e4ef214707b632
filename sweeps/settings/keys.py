"""The public keys as the documentation lists them: every key the composed config can hold, its default, what
`check_keys` (and the core's `validate`) allow, and one line of meaning (the key's comment in `conf/`).

Allowed values come from the same constants the checks use, so the keys page (`docs/reference/keys.md`, written by
`python -m sweeps.tools.reference`) cannot drift from them; a test regenerates the page and compares.
"""
import re
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"
# groups whose options are overlays for one purpose (an experiment, a scale, a debug size), not public keys
OVERLAYS = ("experiment", "scale", "debug", "mltract_key", "three_method", "hydra")
# compositions whose keys together are every public key (each family's keys exist only under its option)
VARIANTS = ([], ["diffusion=edm"], ["diffusion=ddpm", "model=ddpm_tiny"], ["distill=cd"], ["distill=tract_mltract"])
# defaults no composition shows: the code's (a key a preset sets where the default config leaves it out)
UNSET = {"diffusion.t0": "exact"}


def allowed() -> dict:
    """{key: what it may be}, from the checks' own constants."""
    from distill_core import data as core_data
    from distill_core import families
    from distill_core import weighting
    from distill_core.distill import CHOICES
    from distill_core.families.ddpm import BETA_SCHEDULES
    from distill_core.methods import METHODS
    from distill_core.models import PRESETS
    from distill_core.parameterization import PARAMETERIZATIONS

    from .checks import OBJECTIVES

    def one_of(values):
        return ", ".join(f"`{str(v).lower() if isinstance(v, bool) else v}`" for v in values)
    out = {"data.name": one_of(core_data.DATASETS), "model.preset": one_of(PRESETS),
           "distill.method": one_of(METHODS), "distill.weighting": one_of(weighting.WEIGHTINGS),
           "teacher.weighting": one_of(weighting.WEIGHTINGS), "objective": one_of(OBJECTIVES),
           "device": one_of(("auto", "cpu", "cuda")), "precision": one_of(("bf16", "fp32")),
           "compile": one_of((False, True)), "diffusion.family": one_of(families.FAMILIES),
           "diffusion.teacher_sampler": f"vp, ddpm: `ddim`; edm: {one_of(families.EDM.samplers)}",
           "diffusion.t0": one_of(("exact", "clipped")), "diffusion.beta_schedule": one_of(BETA_SCHEDULES),
           "distill.parameterization": f"vp: {one_of(PARAMETERIZATIONS)}; edm: `edm`; ddpm: {one_of(families.DDPM_PARAMETERIZATIONS)}",
           "teacher.parameterization": "equal to `distill.parameterization`",
           "distill.mu_s": "[0, 1)", "distill.mu_i": "[0, 1)", "distill.mu_i_residual": "(0, 1) or null",
           "distill.schedule": "at least two step counts, strictly decreasing, each dividing the one before",
           "distill.updates_per_phase": "a positive integer, or one per phase", "distill.batch_size": "a positive integer",
           "distill.lr": "> 0", "distill.clip_x": "`true`, `false`, `null`", "distill.clip_teacher": "`true`, `false`, `null`",
           "distill.clip_self_teacher": "`true`, `false`, `null`", "distill.eval_steps": "a list of positive integers",
           "distill.cd_huber_c": "> 0 or null", "distill.cd_times": "null, or {k: k - 1 grid indices, decreasing, in 1..N-1}",
           "teacher.updates": "a positive integer", "teacher.batch_size": "a positive integer", "teacher.ema": "[0, 1)",
           "teacher.lr": "> 0", "teacher.sha256": "null or 64 hexadecimal digits (with an `edm:` source)",
           "model.num_classes": "null, a positive integer, `auto`", "model.width": "null or a positive integer",
           "eval.pixel_fd_samples": "0 or an integer >= 2", "eval.num_samples": "null or an integer >= 2",
           "eval.fid_seeds": "a positive integer", "eval.reference_steps": "null or a positive integer",
           "eval.ancestral_gammas": "a non-empty list of numbers in [0, 1]",
           "tracking.outage_limit_s": "seconds > 0", "tracking.system_metrics_interval": "seconds > 0",
           "devices": "a positive integer", "nodes": "a positive integer"}
    out.update({f"distill.{k}": one_of(v) for k, v in CHOICES.items()})
    for key in ("eval.fid", "eval.kid", "eval.fid_extrapolate", "eval.teacher_curves", "eval.teacher_base",
                "tracking.async_logging", "tracking.system_metrics", "registry.pickle"):
        out[key] = one_of((False, True))
    return out


COMMENT = re.compile(r"^(\s*)([A-Za-z_][\w]*):(.*?)(?:\s+#\s?(.*))?$")


def conf_files() -> list:
    """`conf/`'s YAML files, the defaults first (config.yaml, then each group's default option), the reference
    recipes' presets last: the first comment found for a key is the one a user reads."""
    import yaml
    defaults = {}
    for entry in yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            (group, option), = entry.items()
            defaults[group] = option
    def rank(path: Path):
        group = path.parent.relative_to(CONF).as_posix()
        if group == ".":
            return (0, path.name)
        return (1 if defaults.get(group) == path.stem else 3 if "_" in path.stem and group == "distill" else 2,
                path.as_posix())
    return sorted(CONF.rglob("*.yaml"), key=rank)


def comments() -> dict:
    """{dotted key: its comment} from the YAML files of `conf/` (`conf_files` order; a comment line right below a
    commented key continues it)."""
    out = {}
    for path in conf_files():
        group = path.parent.relative_to(CONF).as_posix()
        if group.split("/")[0] in OVERLAYS:
            continue
        text = path.read_text()
        prefix = [] if group == "." or "@package _global_" in text else group.split("/")
        stack, last = [], None
        for line in text.splitlines():
            m = COMMENT.match(line)
            if not m:
                more = re.match(r"^\s+#\s?(.*)$", line)
                if more and last:
                    out[last] += " " + more.group(1).strip()
                else:
                    last = None
                continue
            indent, key, note = len(m.group(1)), m.group(2), m.group(4)
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
            dotted = ".".join(prefix + [k for _, k in stack])
            last = None
            if note and dotted not in out and not dotted.startswith("defaults"):
                out[dotted], last = note.strip(), dotted
    return out


def composed_leaves() -> dict:
    """{dotted key: default} over VARIANTS (each family's keys under its option), Hydra's own keys left out."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    leaves = {}
    for overrides in VARIANTS:
        with initialize_config_dir(str(CONF)):
            cfg = compose("config", overrides=overrides)
        plain = OmegaConf.to_container(cfg, resolve=False)
        for key, value in flatten(plain).items():
            leaves.setdefault(key, value)
    return {**leaves, **UNSET}


def flatten(node, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict) and v and not str(k).isdigit() and k != "cd_times":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def groups() -> dict:
    """{config group: its options} of `conf/` (what `GROUP=OPTION` may name)."""
    out = {}
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if options:
            out[folder.relative_to(CONF).as_posix()] = options
    return out
