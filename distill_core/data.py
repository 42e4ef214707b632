"""Datasets as tensors in [-1, 1], resident in memory, sampled by index.

All supported sets fit in RAM (digits 1,797 x 8x8; Fashion-MNIST 60k x 28x28; CIFAR-10
50k x 32x32x3 as uint8), so a batch is an index draw from a seeded generator: no DataLoader
workers, fully deterministic. Horizontal flips only for cifar10. ImageNet-64 is read from EDM's
`dataset_tool.py` zip (`image_zip`; `data.root=ZIP`). The image sets carry their class labels
(`labels`, `num_classes`): `draw` gives a batch with its labels, from the same index draw as `batch` (a
class-conditional job samples the training set uniformly, as both papers; DESIGN 3.10).
"""
import gzip
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "imagenet64", "toy2d")
SHAPES = {"digits": (1, 8, 8), "fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
          "imagenet64": (3, 64, 64), "toy2d": (2,)}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = {"digits": 10, "fashion_mnist": 10, "mnist": 10, "cifar10": 10, "imagenet64": 1000}  # sets with class labels (toy2d: none)


class DataError(RuntimeError):
    pass


@dataclass
class TensorData:
    """uint8 images (N, C, H, W) scaled by `levels`, or float points (N, D) for toy2d."""
    name: str
    values: torch.Tensor
    levels: Optional[int] = 255  # None: values are already float in model space
    flip: bool = False
    labels: Optional[torch.Tensor] = None  # (N,) class indices, for the sets that have them

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def shape(self) -> tuple:
        return tuple(self.values.shape[1:])

    def to_model_space(self, v: torch.Tensor) -> torch.Tensor:
        return v.float() if self.levels is None else v.float() * (2.0 / self.levels) - 1.0

    @property
    def num_classes(self) -> Optional[int]:
        return CLASSES.get(self.name) if self.labels is not None else None

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.draw(batch_size, generator)[0]

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple:
        """(x, y): a batch drawn uniformly with its labels (y None for a set without labels)."""
        idx = torch.randint(len(self), (batch_size,), generator=generator).to(self.values.device)
        x = self.to_model_space(self.values[idx])
        if self.flip:
            flip = (torch.rand(batch_size, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, (self.labels[idx] if self.labels is not None else None)

    def to(self, device) -> "TensorData":
        """The same data resident on `device` (uint8 stays uint8: CIFAR-10 is 150 MB): batches are
        then drawn, scaled and flipped there, with only the indices crossing from the host."""
        return TensorData(self.name, self.values.to(device), self.levels, self.flip,
                          self.labels.to(device) if self.labels is not None else None)

    def all(self) -> torch.Tensor:
        return self.to_model_space(self.values)

    def uint8_images(self) -> torch.Tensor:
        """Images as uint8 0..255 (for FID reference statistics and grids)."""
        return ((self.all() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def load(name: str, split: str = "train", root: Optional[str] = None, seed: int = 0, toy_size: int = 8192) -> TensorData:
    if name not in DATASETS:
        raise DataError(f"data.name must be one of {', '.join(DATASETS)}; got {name!r}")
    if split not in ("train", "test"):
        raise DataError(f"data.split must be train or test; got {split!r}")
    return {"digits": _digits, "fashion_mnist": _fashion_mnist, "mnist": _mnist,
            "cifar10": _cifar10, "imagenet64": _imagenet64, "toy2d": _toy2d}[name](split, root, seed, toy_size)


def _digits(split, root, seed, toy_size) -> TensorData:
    """scikit-learn's bundled 1,797 8x8 digits (values 0..16). 'test' is a fixed 10% holdout."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.uint8))[:, None]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))
    n_test = len(images) // 10
    idx = order[n_test:] if split == "train" else order[:n_test]
    return TensorData("digits", images[idx], levels=16, labels=torch.from_numpy(digits.target).long()[idx])


def _toy2d(split, root, seed, toy_size) -> TensorData:
    """Eight Gaussians on a circle of radius 0.7 (std 0.05), inside [-1, 1]^2."""
    g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
    k = torch.randint(8, (toy_size,), generator=g)
    angle = k.float() * (2 * math.pi / 8)
    centers = 0.7 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return TensorData("toy2d", centers + 0.05 * torch.randn(toy_size, 2, generator=g), levels=None)


def _fashion_mnist(split, root, seed, toy_size) -> TensorData:
    """Full Fashion-MNIST: torchvision's layout under `root`, filled from Debian's
    dataset-fashion-mnist package when present, else torchvision's download."""
    from torchvision.datasets import FashionMNIST
    root = Path(root or Path.home() / ".cache" / "distill-sweeps" / "data")
    raw = root / "FashionMNIST" / "raw"
    if DEBIAN_FASHION_MNIST.is_dir() and not any(raw.glob("*ubyte")):
        raw.mkdir(parents=True, exist_ok=True)
        for gz in DEBIAN_FASHION_MNIST.glob("*.gz"):
            with gzip.open(gz) as src, open(raw / gz.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
    ds = _torchvision(FashionMNIST, root, split, f"{raw}/*-ubyte (apt-get install dataset-fashion-mnist)")
    return TensorData("fashion_mnist", ds.data[:, None].clone(), labels=torch.as_tensor(ds.targets).long())


def _mnist(split, root, seed, toy_size) -> TensorData:
    from torchvision.datasets import MNIST
    root = Path(root or Path.home() / ".cache" / "distill-sweeps" / "data")
    ds = _torchvision(MNIST, root, split, f"{root}/MNIST/raw/*-ubyte")
    return TensorData("mnist", ds.data[:, None].clone(), labels=torch.as_tensor(ds.targets).long())


def _cifar10(split, root, seed, toy_size) -> TensorData:
    """torchvision's CIFAR-10 under `root`, or an .npz of uint8 NCHW arrays x_train / x_test
    (such as shared/assets/cifar10_partial.npz) when `root` names a .npz file."""
    if root and str(root).endswith(".npz"):
        if not Path(root).is_file():
            raise DataError(f"data.root: CIFAR-10 .npz not found at {root}")
        with np.load(root) as f:
            x = torch.from_numpy(f[f"x_{split}"])
            y = torch.from_numpy(f[f"y_{split}"].astype(np.int64)).reshape(-1) if f"y_{split}" in f else None
        return TensorData("cifar10", x, flip=split == "train", labels=y)
    from torchvision.datasets import CIFAR10
    root = Path(root or Path.home() / ".cache" / "distill-sweeps" / "data")
    ds = _torchvision(CIFAR10, root, split, f"{root}/cifar-10-batches-py/")
    return TensorData("cifar10", torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), flip=split == "train",
                      labels=torch.as_tensor(ds.targets).long())


def _imagenet64(split, root, seed, toy_size) -> TensorData:
    """ImageNet 64x64 as EDM prepares it (`dataset_tool.py --resolution=64x64`): a zip of PNGs and dataset.json
    class labels, at `root`. One split (EDM trains and computes its FID references on the same zip); no flips
    (EDM's ImageNet run has xflip off)."""
    from .image_zip import ZipError, read_zip
    if not root:
        raise DataError("data.name=imagenet64 needs data.root=/path/to/imagenet-64x64.zip (EDM's dataset_tool.py zip)")
    if split != "train":
        raise DataError("data.name=imagenet64 has one split (EDM's dataset_tool.py zip): use data.split=train")
    try:
        images, labels = read_zip(root, SHAPES["imagenet64"])
    except ZipError as e:
        raise DataError(str(e)) from None
    if labels is not None and not 0 <= int(labels.min()) <= int(labels.max()) < CLASSES["imagenet64"]:
        raise DataError(f"data.root={root}: dataset.json's labels run {int(labels.min())}..{int(labels.max())}; "
                        f"ImageNet's classes are 0..{CLASSES['imagenet64'] - 1}")
    return TensorData("imagenet64", images, labels=labels)


def _torchvision(cls, root: Path, split: str, expected: str):
    try:
        return cls(str(root), train=split == "train", download=False)
    except RuntimeError:
        pass
    try:
        return cls(str(root), train=split == "train", download=True)
    except Exception as e:
        raise DataError(f"{cls.__name__} files not found: expected {expected} "
                        f"(download failed: {type(e).__name__})") from None
