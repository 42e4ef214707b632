"""`python -m sweeps.report`: an ablation as the paper's table and plots, or an Optuna study's trials."""
