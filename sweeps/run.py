"""`python -m sweeps.run`: the Hydra entry point (single run or `-m` multirun / Optuna sweep).

Thin on purpose: heavy libraries (torch, MLflow) are imported inside the job so that
`--help` and config errors answer fast. Returns the objective for the Optuna sweeper.
"""
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

# Hydra 1.4 warns on every config-instantiated callback (our own SweepParentRun) until
# call sites pass an execution whitelist, which Hydra's own callback loader does not yet do.
warnings.filterwarnings("ignore", message=r"(?s).*_execution_whitelist_")

CONF = Path(__file__).resolve().parent.parent / "conf"


def unknown_group_option(argv: list[str]):
    """`diffusion=foo` (a config group option that does not exist) as one line, before Hydra's
    multi-line error with exit code 1: the project's bad-input rule is exit 2 and one line."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key.startswith("hydra") or "/" in key or not (CONF / key).is_dir():
            continue
        if any(c in value for c in "()[]{}$*?"):  # sweep functions, globs, interpolations: Hydra's to judge
            continue
        options = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options and choice != "null":
                return f"{key} must be one of {', '.join(options)}; got {choice!r}"
    return None


def config_keys() -> tuple[set, set]:
    """(every dotted key the config can have, its leaves): config.yaml's, and each group option's under its group
    (options that are `# @package _global_` overlays at the top level). Read from the YAML files, not composed."""
    import yaml
    leaves = set()

    def flatten(node, prefix, out):
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "defaults":
                    flatten(v, f"{prefix}{k}.", out)
        else:
            leaves.add(prefix[:-1])
        out.add(prefix[:-1])

    keys = set()
    for path in CONF.rglob("*.yaml"):
        text = path.read_text()
        group = path.parent.relative_to(CONF).as_posix()
        if group.startswith("hydra") or "@package hydra" in text:
            continue
        prefix = "" if group == "." or "@package _global_" in text else group.replace("/", ".") + "."
        flatten(yaml.safe_load(text) or {}, prefix, keys)
    return {k for k in keys if k}, leaves


def unknown_key(argv: list[str]):
    """A key that does not exist (`distill.mu=0.5`, a typo) as one line naming it and the nearest keys that do,
    before Hydra's multi-line error (exit code 1, suggesting `+distill.mu`, which would add a junk key)."""
    import difflib
    given = [arg.partition("=")[0] for arg in argv if "=" in arg and not arg.startswith(("+", "~", "-"))]
    given = [key for key in given if not key.startswith("hydra") and "/" not in key and not (CONF / key).is_dir()]
    if not given:
        return None
    keys, leaves = config_keys()
    for key in given:
        if key not in keys:
            near = difflib.get_close_matches(key, sorted(leaves), n=3, cutoff=0.6)
            return (f"{key} is not a config key" + (f"; the nearest: {', '.join(near)}" if near else "")
                    + " (a new key needs a leading +)")
    return None


def register_sweeper() -> None:
    """`hydra/sweeper=optuna` names our sweeper (sweeps.multirun.sweeper), a plugin Hydra does not scan for."""
    from hydra.core.plugins import Plugins

    from sweeps.multirun.sweeper import OptunaSweeper
    Plugins.instance().register(OptunaSweeper)


@hydra.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from sweeps.common.console import quiet_libraries
    quiet_libraries()
    from sweeps.job import run_job
    return run_job(cfg)


if __name__ == "__main__":
    problem = unknown_group_option(sys.argv[1:]) or unknown_key(sys.argv[1:])
    if problem:
        from sweeps.common.errors import fail
        fail(problem)
    register_sweeper()
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs already ended KILLED (tracking.signals)
        print("stopped by Ctrl-C or SIGTERM: its runs ended KILLED; run the same command again to resume",
              file=sys.stderr, flush=True)
        sys.exit(130)
