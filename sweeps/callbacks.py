"""Hydra callbacks: group a multirun under one MLflow parent run.

The parent is created in the driver (`on_multirun_start`), which also creates the SQLite
store first so parallel jobs never race on its schema; jobs find the parent through an
environment variable (inherited by joblib/submitit-local workers) and nest under it.
"""
import os
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class MlflowSweepCallback(Callback):
    def __init__(self):
        self.run_id = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        from sweeps import tracking
        from sweeps.redaction import redact, redact_logs
        redact_logs()  # the sweeper's own lines (the Optuna sweeper logs its storage URL)
        from sweeps.sweeper import config_problem
        problem = config_problem(config.hydra.sweeper, config.hydra.launcher)
        if problem:  # before the sweep's parent run exists
            print(f"error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        try:
            exp_id = tracking.setup(config.tracking.uri, config.experiment_name)
        except tracking.AuthError as e:
            print(f"error: {redact(str(e))}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        sweep_dir = str(config.hydra.sweep.dir)
        overrides = redact(" ".join(config.hydra.overrides.task))
        try:
            run = MlflowClient().create_run(exp_id, run_name=f"sweep {os.path.basename(sweep_dir)}",
                                            tags={"role": "sweep", "sweep.dir": sweep_dir, "sweep.overrides": overrides,
                                                  "sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1]})
        except Exception as e:
            if not tracking.denied(e):
                raise
            print(f"error: tracking.uri={redact(str(config.tracking.uri))}: user {tracking.user()} may not create runs "
                  f"in experiment {config.experiment_name} (403 {e.error_code}); ask its owner for EDIT access",
                  file=sys.stderr, flush=True)
            raise SystemExit(2)
        self.run_id, self.link = run.info.run_id, tracking.ui_link(str(config.tracking.uri), exp_id)
        os.environ[tracking.PARENT_ENV] = self.run_id
        os.environ[tracking.SWEEP_ENV] = self.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.run_id:
            from mlflow.tracking import MlflowClient
            MlflowClient().set_terminated(self.run_id, "FINISHED")
            print(f"runs: {self.link}", flush=True)
