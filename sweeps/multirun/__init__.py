"""A multirun: its MLflow parent run (a Hydra callback), our Optuna sweeper, and each job's trial and pruning."""
