"""`python -m sweeps.run`: the Hydra entry point (single run or `-m` multirun / Optuna sweep).

Thin on purpose: heavy libraries (torch, MLflow) are imported inside the job so that
`--help` and config errors answer fast. Returns the objective for the Optuna sweeper.
"""
import warnings

import hydra
from omegaconf import DictConfig

# Hydra 1.4 warns on every config-instantiated callback (our own MlflowSweepCallback) until
# call sites pass an execution whitelist, which Hydra's own callback loader does not yet do.
warnings.filterwarnings("ignore", message=r"(?s).*_execution_whitelist_")


@hydra.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from sweeps.job import run_job
    return run_job(cfg)


if __name__ == "__main__":
    main()
