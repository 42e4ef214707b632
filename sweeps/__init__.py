"""sweeps: the Hydra application, MLflow tracking and registry, Optuna sweeps, reports."""
