"""A job and its Optuna trial: which trial it is, what it reports, when it stops.

Our sweeper (`multirun.sweeper`, `hydra/sweeper=optuna`) passes each job its trial number as the
override `+optuna.trial=N`; the study's name, storage and pruner are in the job's own Hydra config
(`hydra.sweeper`). Nothing is matched by parameter values, so trials with identical parameters, or
several sweepers on one study, still link each run to its own trial.

Each phase end reports the job's objective at that phase (gap, pixel FD, FID or KID) as the trial's
intermediate value at step = the cumulative update count, and asks the study's pruner whether to go
on. A pruned job stops at that phase boundary, after its metrics and checkpoint are recorded; the
job tells Optuna PRUNED itself (the sweeper then leaves the trial alone).
"""
import logging
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from distill_core.callbacks import Callback

log = logging.getLogger(__name__)

SWEEPER = "sweeps.multirun.sweeper.OptunaSweeper"  # (the `_target_` of conf/hydra/sweeper/optuna.yaml)
PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "percentile": "PercentilePruner",
           "hyperband": "HyperbandPruner", "successive_halving": "SuccessiveHalvingPruner"}


def build_pruner(spec: Optional[dict]):
    """{'name': 'median', knob: value, ...} (the `hydra/sweeper/pruner` group) -> an Optuna pruner."""
    import optuna
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "none")
    if name not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner.name must be one of {', '.join(PRUNERS)}; got {name!r}")
    return getattr(optuna.pruners, PRUNERS[name])(**spec)


def open_storage(url: str):
    """An Optuna RDB storage that waits for SQLite's write lock (several sweepers and their jobs
    write to one file) instead of failing after SQLAlchemy's 5 s default."""
    import optuna
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


@dataclass
class TrialLink:
    """One job's trial (picklable: it travels to rank 0 of a data-parallel job)."""
    storage: str
    study: str
    number: int
    pruner: dict = field(default_factory=dict)
    objective: str = "gap"

    def tags(self) -> dict:
        from ..common.redaction import redact
        return {"optuna.study": self.study, "optuna.trial": str(self.number), "optuna.storage": redact(self.storage)}

    def _trial(self):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=self.study, storage=open_storage(self.storage),
                                  pruner=build_pruner(self.pruner))
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
        return study, optuna.trial.Trial(study, trial_id)

    def report(self, value: float, update: int) -> bool:
        """Record the intermediate value; True when the pruner says stop."""
        study, trial = self._trial()
        trial.report(float(value), int(update))
        return trial.should_prune()

    def wrap(self, callback: Callback) -> Callback:
        """`callback` (the run's logger) plus this trial: each phase's objective reported, and pruning."""
        return PruningCallback(callback, self)

    def prune(self) -> None:
        import optuna
        study, _ = self._trial()
        study.tell(self.number, state=optuna.trial.TrialState.PRUNED)


def current_trial(cfg: DictConfig) -> Optional[TrialLink]:
    """The job's trial when our sweeper launched it (`+optuna.trial=N`), else None."""
    number = OmegaConf.select(cfg, "optuna.trial")
    if number is None:
        return None
    from hydra.core.hydra_config import HydraConfig
    try:
        sweeper = HydraConfig.get().sweeper
    except ValueError:
        sweeper = None
    if sweeper is None or "study_name" not in sweeper or str(sweeper.get("_target_", "")) != SWEEPER:
        raise ValueError(f"optuna.trial={number} is set by the Optuna sweeper (python -m sweeps.run -m "
                         f"hydra/sweeper=optuna ...); remove it from a job of your own")
    return TrialLink(storage=str(sweeper.storage), study=str(sweeper.study_name), number=int(number),
                     pruner=_plain(sweeper.get("pruner")), objective=str(cfg.objective))


class PruningCallback(Callback):
    """Another callback (the MLflow one) plus a trial to report each phase's objective to."""

    def __init__(self, inner: Callback, trial: TrialLink):
        self.inner, self.trial = inner, trial

    def on_metrics(self, metrics, step):
        self.inner.on_metrics(metrics, step)

    def on_phase_metrics(self, phase, steps, update, metrics):
        self.inner.on_phase_metrics(phase, steps, update, metrics)

    def on_save(self, name):
        self.inner.on_save(name)

    def on_checkpoint(self, path, sha256, name):
        self.inner.on_checkpoint(path, sha256, name)

    def on_image(self, path, name, step=None):
        self.inner.on_image(path, name, step)

    def on_phase_end(self, phase, steps, model, metrics):
        return self.inner.on_phase_end(phase, steps, model, metrics)

    def close(self):
        self.inner.close()

    def keep_going(self, phase, update, metrics):
        value = metrics.get(self.trial.objective)
        if value is None:
            return self.inner.keep_going(phase, update, metrics)
        if self.trial.report(value, update):
            log.info("trial %d: the pruner stops it after phase %d (%s %.4g at update %d)", self.trial.number,
                     phase + 1, self.trial.objective, value, update)
            return False
        return self.inner.keep_going(phase, update, metrics)
