"""Which Optuna trial is this job? (The Hydra sweeper never hands the Trial to the job.)

The sweeper asks a batch of trials, then launches one job per trial with the sampled values
as overrides. A job finds its trial as the RUNNING trial of the study whose params equal its
own config values; that works for parallel launchers and shared studies alike.
"""
import logging

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def current_trial(cfg: DictConfig) -> dict:
    """{'optuna.study': name, 'optuna.trial': number} under the Optuna sweeper, else {}."""
    from hydra.core.hydra_config import HydraConfig
    try:
        sweeper = HydraConfig.get().sweeper
    except ValueError:
        return {}
    if "optuna" not in str(sweeper.get("_target_", "")).lower() or HydraConfig.get().mode.name != "MULTIRUN":
        return {}
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from .redaction import redact
    tags = {"optuna.study": str(sweeper.study_name), "optuna.storage": redact(str(sweeper.storage))}
    try:
        study = optuna.load_study(study_name=str(sweeper.study_name), storage=str(sweeper.storage))
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    except Exception as e:  # the tags are a convenience; never fail a job over them
        log.warning("could not read the Optuna study: %s", e)
        return tags
    for trial in running:
        if all(_same(OmegaConf.select(cfg, key), value) for key, value in trial.params.items()):
            tags["optuna.trial"] = trial.number
            break
    return tags


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)
