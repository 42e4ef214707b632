"""Logging models to MLflow and registering them (students and teachers alike).

Models are pickled (`serialization_format="pickle"`): MLflow 3's default torch.export would
load back as an fx graph without `sample`. The registry is a trusted store: loading a pickled
model runs code, so only load from registries you control.
"""
import logging

import mlflow
from mlflow.tracking import MlflowClient

# We choose pickle deliberately (see above); MLflow's warning about it would repeat every job.
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)

PIP_REQUIREMENTS = ["torch", "torchvision", "distill-sweeps"]


def log_and_register(model, name: str, registered_name: str, tags: dict, run_id: str) -> str:
    """Log `model` under the active run and register it; returns the new version number."""
    info = mlflow.pytorch.log_model(model, name=name, serialization_format="pickle",
                                    pip_requirements=PIP_REQUIREMENTS)
    clean = {k: str(v) for k, v in tags.items() if v is not None}
    version = mlflow.register_model(info.model_uri, registered_name, tags=clean)
    MlflowClient().set_tag(run_id, f"registry.{name}", f"{registered_name}/{version.version}")
    return version.version


def load(uri: str, device: str = "cpu"):
    """A registered teacher or student, ready to `sample(noise, steps)`."""
    return mlflow.pytorch.load_model(uri, map_location=device)
