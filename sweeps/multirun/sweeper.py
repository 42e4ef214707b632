"""Our Optuna sweeper for Hydra (`hydra/sweeper=optuna`): pruning per phase, many workers on one
study, each job told its trial.

Why not the plugin's sweeper (hydra-optuna-sweeper 1.4.0rc3): it cannot prune (no pruner, the job
never sees its trial, a pruned trial is recorded as FAIL; hydra#1954, #1710), it hands out trials in
blocking batches of `n_jobs` (hydra#3091), and several sweeper processes on one study each run
`n_trials`. We keep its search-space syntax and sampler configs (its `create_params_from_overrides`
and `hydra/sweeper/sampler/*`), and replace the loop:

- every job gets `+optuna.trial=<number>` (and `hydra.job.num` = the trial number, so the job folders
  of several sweepers on one sweep dir never collide); the job reports each phase's objective and asks
  the pruner (`multirun.trial`), and tells a pruned trial PRUNED itself;
- each thread of this process (`n_jobs`, default 1) keeps one job in flight: ask a trial, launch it,
  tell its value, ask the next; no batch barrier;
- trials are asked under a lock held across every process sharing the study (a file lock next to a
  SQLite database, a PostgreSQL or MySQL advisory lock), so the study ends with exactly `n_trials`
  trials however many sweepers (same command, one or many machines) work on it. Optuna's own
  `MaxTrialsCallback` can overshoot by one trial per extra worker, hence the lock;
- a sweep stopped (Ctrl-C, SIGTERM, SIGKILL) leaves its trial RUNNING, owned by a process that is gone
  (user attr `sweeper` = host:pid:start time). The same command, on the same machine, takes such a trial
  over before asking a new one: the same trial number and parameters, so its job resumes its own run and
  the study ends with its `n_trials`. (A trial owned by another machine is left to a sweeper there: from
  here there is no telling whether that process still runs.)
"""
import contextlib
import functools
import logging
import math
import os
import socket
import threading
from pathlib import Path
from typing import Any, Optional

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..common.errors import fail
from ..common.locks import exclusive

log = logging.getLogger(__name__)


def config_problem(sweeper: DictConfig, launcher: DictConfig) -> Optional[str]:
    """Bad sweeper settings as one line (checked before the sweep's parent run exists), or None."""
    from .trial import PRUNERS
    if str(sweeper.get("_target_", "")) != f"{__name__}.OptunaSweeper":
        return None
    storage, n_trials, n_jobs = sweeper.get("storage"), sweeper.get("n_trials"), sweeper.get("n_jobs")
    if not storage or "://" not in str(storage):
        return f"hydra.sweeper.storage must be a database URL (sqlite:///optuna.db, postgresql://...); got {storage!r}"
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        return f"hydra.sweeper.n_trials must be a positive integer; got {n_trials!r}"
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        return f"hydra.sweeper.n_jobs must be a positive integer; got {n_jobs!r}"
    if n_jobs > 1 and str(launcher.get("_target_", "")).endswith("BasicLauncher"):
        return (f"hydra.sweeper.n_jobs={n_jobs} needs a launcher that runs jobs in their own processes "
                f"(hydra/launcher=joblib, submitit_local, slurm); or start the same command several times")
    name = (sweeper.get("pruner") or {}).get("name", "none")
    if name not in PRUNERS:
        return f"hydra.sweeper.pruner.name must be one of {', '.join(PRUNERS)}; got {name!r}"
    if not 0.0 <= float(sweeper.get("max_failure_rate", 1.0)) <= 1.0:
        return f"hydra.sweeper.max_failure_rate must be in [0, 1]; got {sweeper.get('max_failure_rate')}"
    return None


OWNER = "sweeper"  # the trial's user attr: which process runs it


def this_process() -> str:
    import psutil
    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.0f}"


def orphaned(trial) -> bool:
    """A RUNNING trial whose sweeper process, on this machine, is gone (its pid ended or was reused)."""
    import optuna
    import psutil
    host, _, rest = str(trial.user_attrs.get(OWNER, "")).partition(":")
    pid, _, started = rest.partition(":")
    if trial.state != optuna.trial.TrialState.RUNNING or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        return f"{psutil.Process(int(pid)).create_time():.0f}" != started
    except psutil.NoSuchProcess:
        return True


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any, storage: Optional[str], study_name: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, custom_search_space: Optional[str],
                 params: Optional[DictConfig], pruner: Any = None) -> None:
        self.sampler = instantiate(sampler, _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*",
                                                                   "optuna.samplers.*"))
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.pruner_spec = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else pruner
        self.params = params
        self.extend = instantiate({"_target_": custom_search_space, "_partial_": True}) if custom_search_space else None
        self.failures = self.launched = 0
        self.lock = threading.Lock()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def _directions(self) -> list[str]:
        d = self.direction
        items = list(d) if isinstance(d, (list, tuple)) or OmegaConf.is_list(d) else [d]
        return [getattr(x, "name", str(x)) for x in items]

    def sweep(self, arguments: list[str]) -> None:
        problem = config_problem(self.config.hydra.sweeper, self.config.hydra.launcher)
        if problem:
            fail(problem)
        self._open_study(arguments)
        errors: list[BaseException] = []

        def worker():
            try:
                while self._one_trial():
                    pass
            except BaseException as e:  # noqa: BLE001 (SystemExit from a job's bad input included)
                errors.append(e)

        if self.n_jobs == 1:
            worker()
        else:
            threads = [threading.Thread(target=worker, name=f"sweeper-{i}") for i in range(self.n_jobs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        self._write_results()

    def _open_study(self, arguments: list[str]) -> None:
        """The search space from `params` and the command line, the sampler (a grid's size caps n_trials), and
        the study, created under the study's lock (a fresh SQLite file gets its schema once)."""
        import optuna
        from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides

        from ..common.redaction import redact
        from .trial import build_pruner, open_storage
        space = [f"{k!s}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        distributions, fixed, fixed_overrides = create_params_from_overrides(space)
        for name in fixed:
            distributions.pop(name, None)
        if isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler:
            grid = {k: OptunaSweeperImpl._to_grid_sampler_choices(v) for k, v in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(values) for values in grid.values()))
        self.directions = self._directions()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with exclusive(self.storage, self.study_name):
            self.study = optuna.create_study(study_name=self.study_name, storage=open_storage(self.storage),
                                             sampler=self.sampler, pruner=build_pruner(self.pruner_spec),
                                             directions=self.directions, load_if_exists=True)
        log.info("Optuna study %s in %s: %d trial(s) in total, %d job(s) in flight here, sampler %s, pruner %s",
                 self.study_name, redact(str(self.storage)), self.n_trials, self.n_jobs, type(self.sampler).__name__,
                 (self.pruner_spec or {}).get("name", "none"))
        self.distributions, self.fixed, self.fixed_overrides = distributions, fixed, fixed_overrides

    def _ask(self):
        """The next trial of the study, or None once it holds n_trials (waiting, enqueued trials first)."""
        import optuna
        with exclusive(self.storage, self.study_name):
            trials = self.study.get_trials(deepcopy=False)
            orphan = next((t for t in trials if orphaned(t)), None)
            if orphan is not None:  # its sweeper was stopped: this one runs it again (its job resumes)
                self.study._storage.set_trial_user_attr(orphan._trial_id, OWNER, this_process())
                log.info("trial %d: its sweeper (%s) is gone; running it again here", orphan.number,
                         orphan.user_attrs[OWNER])
                return optuna.trial.Trial(self.study, orphan._trial_id)
            waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
            if not waiting and len(trials) >= self.n_trials:
                return None
            trial = self.study.ask(fixed_distributions=self.distributions)
            trial.set_user_attr(OWNER, this_process())
        for name, value in self.fixed.items():
            trial.set_user_attr(name, value)
        if self.extend is not None:
            self.extend(self.config, trial)
        return trial

    def _one_trial(self) -> bool:
        import optuna
        trial = self._ask()
        if trial is None:
            return False
        params = {**trial.params, **self.fixed}
        overrides = [f"{k}={v}" for k, v in params.items()] + list(self.fixed_overrides) + [f"+optuna.trial={trial.number}"]
        log.info("trial %d: %s", trial.number, " ".join(f"{k}={v}" for k, v in params.items()))
        ret = self.launcher.launch([overrides], initial_job_idx=trial.number)[0]
        from ..tracking.signals import INTERRUPTED
        if INTERRUPTED.is_set():  # Ctrl-C/SIGTERM reached the job, wherever it landed (its error may be another
            raise KeyboardInterrupt("the sweep was stopped")  # one): stop; the trial stays RUNNING for the next sweep
        with self.lock:
            self.launched += 1
        state = self.study._storage.get_trial(trial._trial_id).state
        if state.is_finished():  # the job told it (PRUNED)
            log.info("trial %d: %s", trial.number, state.name)
            return True
        try:
            values = ret.return_value if len(self.directions) > 1 else [ret.return_value]
            values = [float(v) for v in values]
            if len(values) != len(self.directions):
                raise ValueError(f"the job returned {len(values)} values for {len(self.directions)} directions")
            self.study.tell(trial, values=values)
            log.info("trial %d: %s", trial.number, ", ".join(f"{v:.4g}" for v in values))
        except Exception as e:  # a failed job: FAIL, and the sweep goes on within max_failure_rate
            with contextlib.suppress(RuntimeError):  # (the grid sampler stops the study once the grid is done)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, e)
            with self.lock:
                self.failures += 1
                too_many = self.failures / self.launched > self.max_failure_rate
            if too_many:
                log.error("%d of %d trials failed, more than max_failure_rate=%s", self.failures, self.launched,
                          self.max_failure_rate)
                raise
        return True

    def _write_results(self) -> None:
        import optuna
        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        states = {}
        for t in self.study.get_trials(deepcopy=False):
            states[t.state.name] = states.get(t.state.name, 0) + 1
        log.info("study %s: %s", self.study_name, ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
        if not done:
            return
        if len(self.directions) == 1:
            best = self.study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value,
                       "best_trial": best.number, "trials": states}
            log.info("best trial %d: value %.6g, params %s", best.number, best.value, best.params)
        else:
            results = {"name": "optuna", "trials": states,
                       "solutions": [{"params": t.params, "values": t.values} for t in self.study.best_trials]}
        OmegaConf.save(OmegaConf.create(results), Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml")
