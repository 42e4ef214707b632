"""Class accuracy of a class-conditional model (DESIGN 3.10): the fraction of its samples that a fixed classifier
assigns to the label they were drawn for.

The classifier is scikit-learn's multinomial logistic regression on the training set's pixels in [-1, 1]:
seconds to fit on digits (~96% on its held-out 10%), fitted once per dataset and cached (its weights, as a
plain .npz) under the data's digest, so every phase and every job of a sweep scores with the same one. It
exists for the grey-scale sets (digits, mnist, fashion_mnist); for others there is none (`for_data` returns
None) and the metric is left out. Samples and labels are drawn class-balanced (y_i = i mod K).
"""
import hashlib
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

CLASSIFIABLE = ("digits", "mnist", "fashion_mnist")
MAX_TRAIN = 10_000  # examples the classifier is fitted on (the first ones of a fixed permutation)


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_SWEEPS_CLASSIFIERS", Path.home() / ".cache" / "distill-sweeps" / "classifiers"))


def digest(data) -> str:
    h = hashlib.sha256(data.name.encode())
    h.update(data.values.cpu().contiguous().numpy().tobytes())
    h.update(data.labels.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class PixelClassifier:
    """Logistic regression on flattened pixels: `predict(images)` -> class indices."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray):
        self.weights, self.bias = torch.from_numpy(weights).float(), torch.from_numpy(bias).float()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return (images.detach().float().cpu().flatten(1) @ self.weights.T + self.bias).argmax(1)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(images) == torch.as_tensor(labels).cpu()).float().mean())


def fit(data) -> PixelClassifier:
    from sklearn.linear_model import LogisticRegression
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:MAX_TRAIN]
    x = data.to_model_space(data.values[order].cpu()).flatten(1).numpy()
    y = data.labels[order].cpu().numpy()
    model = LogisticRegression(max_iter=500, C=1.0).fit(x, y)
    return PixelClassifier(model.coef_.astype(np.float32), model.intercept_.astype(np.float32))


def for_data(data, folder: Optional[Path] = None) -> Optional[PixelClassifier]:
    """The dataset's classifier (fitted once, then read from the cache), or None where there is none."""
    if data.name not in CLASSIFIABLE or data.labels is None:
        return None
    path = Path(folder or cache_dir()) / f"{data.name}-{digest(data)}.npz"
    if path.is_file():
        with np.load(path) as f:
            return PixelClassifier(f["weights"], f["bias"])
    classifier = fit(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, weights=classifier.weights.numpy(), bias=classifier.bias.numpy())
    os.replace(tmp, path)
    return classifier


def class_accuracy(model, classifier: PixelClassifier, noise: torch.Tensor, steps: int) -> float:
    """The fraction of `model`'s `steps`-step samples from `noise` that `classifier` assigns to their label
    (class-balanced: sample i drawn for class i mod K)."""
    labels = torch.arange(len(noise)) % model.num_classes
    with torch.inference_mode():
        samples = model.sample(noise, steps, labels=labels)
    return classifier.accuracy(samples, labels)
