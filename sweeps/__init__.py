"""sweeps: the Hydra application, MLflow tracking and registry, Optuna sweeps, reports."""
from . import resolvers  # noqa: F401  (config resolvers must exist before any config is composed)
