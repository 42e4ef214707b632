"""distill_core: the diffusion-distillation training core (pure PyTorch).

Never imports Hydra, MLflow or Optuna: the application in `sweeps/` wraps it.
"""
