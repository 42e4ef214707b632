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
    problem = unknown_group_option(sys.argv[1:])
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
