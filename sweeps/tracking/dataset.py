"""The training data as a run's input: the UI's Dataset column (name-split, digest, source)."""
import logging

import mlflow


DATA_SOURCES = {"digits": "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
                "mnist": "https://yann.lecun.com/exdb/mnist/", "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
                "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html"}


def log_dataset(data, data_cfg: dict) -> None:
    """The training data as the active run's input (the UI's Dataset column): name-split, digest, source.
    A convenience: a failure here is a warning, never a failed job."""
    try:
        source = data_cfg.get("root") or DATA_SOURCES.get(data.name)
        dataset = mlflow.data.from_numpy(data.values.cpu().numpy(), name=f"{data.name}-{data_cfg['split']}",
                                         source=source)
        mlflow.log_input(dataset, context="training", tags={"split": str(data_cfg["split"])})
    except Exception as e:  # noqa: BLE001
        logging.getLogger(__name__).warning("could not log the dataset as the run's input: %s", e)
