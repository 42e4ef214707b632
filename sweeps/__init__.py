"""distill-sweeps' application: the Hydra job, its MLflow tracking, Optuna sweeps and the command-line tools.

Rooms (sub-packages), from the bottom up; each calls only the ones above it in this list:
  common/    the bad-input rule (one line, exit 2), locks, secrets kept out of what is written
  tracking/  MLflow: store and users, params, metric keys, the core's callback, outbox, registry, descriptions
  ranks/     launching a job's trainings on its ranks (one process, elastic workers, cluster tasks)
  multirun/  a multirun's parent run, our Optuna sweeper, each job's trial and pruning
  settings/  the Hydra config turned into typed settings once, every key checked
  teachers/  teacher sources (trained and reused by key, registered), behind one interface
  job/       one job as named stages: inputs -> the student's run -> teacher -> distil -> register -> finish
  tools/     the command-line tools: report, promote, jumps, bench
Entry points stay where users call them: `python -m sweeps.run` (Hydra), `python -m sweeps.report`,
`sweeps.promote`, `sweeps.jumps`, `sweeps.bench`; `from sweeps import registry` loads registered models.
"""
from . import resolvers  # noqa: F401  (config resolvers must exist before any config is composed)


def __getattr__(name: str):
    """`from sweeps import registry` (what registered models' descriptions tell users to write), imported
    when asked for: MLflow is not imported by `import sweeps`."""
    if name == "registry":
        from .tracking import registry
        return registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
