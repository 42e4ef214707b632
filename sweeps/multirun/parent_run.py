"""A multirun's MLflow parent run (a Hydra callback): the sweep's jobs are grouped under it.

The parent is created in the driver (`on_multirun_start`), which also creates the SQLite
store first so parallel jobs never race on its schema; jobs find the parent through an
environment variable (inherited by joblib/submitit-local workers) and nest under it.
A sweep ended by Ctrl-C or SIGTERM ends its parent and its running children KILLED (the workers
are asked to stop first); one that ends on an error, FAILED: none is left RUNNING. As each job ends, the
parent's description ranks the jobs by their objective (`multirun.summary`); the sweep prints that table.
"""
import atexit
import os
import signal
import sys
import threading

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def swept_keys(config: DictConfig) -> list:
    """The keys this sweep varies: sweep overrides on the command line (`distill.mu_s=0.5,0.9`) and the
    Optuna sweeper's search space (`hydra.sweeper.params`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    return list(dict.fromkeys([*keys, *(config.hydra.sweeper.get("params") or {})]))


def publish_view(experiment_id: str, run_id: str, config: DictConfig) -> str:
    """The sweep's own runs table (its jobs, its swept keys, best first): the key its link carries."""
    from mlflow.tracking import MlflowClient

    from ..tracking import view
    key = view.sweep_key(run_id)
    query = f"tags.sweep_id = '{run_id}' and tags.role = 'student'"
    view.publish(MlflowClient(), experiment_id, key, view.sweep_view(query, swept_keys(config)))
    return key


class SweepParentRun(Callback):
    def __init__(self):
        self.run_id = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        from ..common.errors import fail
        from ..common.redaction import redact, redact_logs
        from ..tracking import store
        from .sweeper import config_problem
        redact_logs()  # the sweeper's own lines (the Optuna sweeper logs its storage URL)
        problem = config_problem(config.hydra.sweeper, config.hydra.launcher)
        if problem:  # before the sweep's parent run exists
            fail(problem)
        try:
            exp_id = store.setup(config.tracking.uri, config.experiment_name)
        except store.AuthError as e:
            fail(str(e))
        sweep_dir = str(config.hydra.sweep.dir)
        overrides = redact(" ".join(config.hydra.overrides.task))
        try:
            run = MlflowClient().create_run(exp_id, run_name=f"sweep {os.path.basename(sweep_dir)}",
                                            tags={"role": "sweep", "sweep.dir": sweep_dir, "sweep.overrides": overrides,
                                                  "sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1]})
        except Exception as e:
            if not store.denied(e):
                raise
            fail(f"tracking.uri={config.tracking.uri}: user {store.user()} may not create runs in experiment "
                 f"{config.experiment_name} (403 {e.error_code}); ask its owner for EDIT access")
        self.run_id = run.info.run_id
        self.link = store.ui_link(str(config.tracking.uri), exp_id, share_key=publish_view(exp_id, self.run_id, config))
        self.exp_id, self.ended, self.interrupted = exp_id, False, False
        os.environ[store.PARENT_ENV] = self.run_id
        os.environ[store.SWEEP_ENV] = self.run_id
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._interrupted)
        atexit.register(self._abandoned)

    def _interrupted(self, signum, frame):
        self.interrupted = True  # (a job in this process may set its own SIGTERM handler: tracking.INTERRUPTED)
        raise KeyboardInterrupt(f"signal {signum}")

    def _abandoned(self) -> None:
        """At exit without on_multirun_end: stop the workers, then end what is still RUNNING."""
        if self.ended or not self.run_id:
            return
        self.ended = True
        from ..tracking.signals import INTERRUPTED
        status = "KILLED" if self.interrupted or INTERRUPTED.is_set() else "FAILED"
        try:
            import psutil
            workers = psutil.Process().children(recursive=True)
            for p in workers:
                p.send_signal(signal.SIGTERM)  # each job ends its own runs KILLED
            psutil.wait_procs(workers, timeout=20)
        except Exception:  # noqa: BLE001
            pass
        try:
            from mlflow.tracking import MlflowClient
            client = MlflowClient()
            for r in client.search_runs([self.exp_id], f"tags.mlflow.parentRunId = '{self.run_id}' "
                                                        f"and attributes.status = 'RUNNING'"):
                client.set_terminated(r.info.run_id, status)
            client.set_terminated(self.run_id, status)
            print(f"sweep {status}: {self.link}", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 (exiting anyway)
            print(f"could not mark the sweep's runs {status}: {e}", file=sys.stderr, flush=True)

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        """(In whichever process ran the job: the parent is found through the environment.)"""
        from ..tracking import store
        from .summary import update
        parent = store.parent_run_id()
        if parent:
            try:
                update(parent)
            except Exception as e:  # noqa: BLE001 (a description is a courtesy: never fail a sweep over it)
                import logging
                logging.getLogger(__name__).warning("could not update the sweep's description: %s", e)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """Hydra calls this in a `finally`: after a sweep that ended, or one stopped by an exception
        (Ctrl-C, SIGTERM, a failed job), which is then in flight here."""
        if not self.run_id or self.ended:
            return
        error = sys.exc_info()[1]
        if error is not None:
            self.interrupted = self.interrupted or isinstance(error, KeyboardInterrupt)
            self._abandoned()
            return
        self.ended = True
        from mlflow.tracking import MlflowClient
        MlflowClient().set_terminated(self.run_id, "FINISHED")
        from .summary import update
        print(update(self.run_id), flush=True)
        print(f"runs: {self.link}", flush=True)
