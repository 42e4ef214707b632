"""An image set in NVlabs' `dataset_tool.py` zip format, as uint8 tensors: the way EDM ships ImageNet-64.

EDM (and StyleGAN before it) prepares a dataset once into a zip of PNG files (`00000/img00000000.png`, ...)
plus `dataset.json`, whose `labels` is a list of `[file name, class index]` pairs (or null for a set without
labels); its `training/dataset.py: ImageFolderDataset` reads that. We read the same zip with the standard
library and PIL: images in the zip's sorted file order, labels matched by file name. Nothing in the file is
run (PNG and JSON only).

The whole set is decoded into memory as uint8 (N, C, H, W), like the other sets here: ImageNet-64's 1.28M
images are 15.7 GB, decoded once per job with a progress bar.
"""
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ZipError(RuntimeError):
    """The file is not a readable dataset_tool zip, or its images do not have the expected shape."""


def read_zip(path, shape: tuple, key: str = "data.root") -> tuple:
    """(images uint8 (N, *shape), labels int64 (N,) or None) of the zip at `path`; ZipError (one line naming
    `key`) for a missing or unreadable file, no images, a foreign shape or a label file that does not match."""
    path = Path(path)
    if not path.is_file():
        raise ZipError(f"{key}={path}: no such file (expected a zip written by EDM's dataset_tool.py)")
    try:
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES)
            if not names:
                raise ZipError(f"{key}={path}: the zip holds no images (expected PNG files and dataset.json)")
            labels = _labels(z, names, f"{key}={path}")
            images = _images(z, names, shape, f"{key}={path}")
    except (zipfile.BadZipFile, OSError) as e:
        raise ZipError(f"{key}={path}: not a readable zip ({type(e).__name__}: {str(e)[:80]})") from None
    return images, labels


def _images(z: zipfile.ZipFile, names: list, shape: tuple, where: str) -> torch.Tensor:
    from PIL import Image
    from tqdm.auto import tqdm
    out = np.empty((len(names), *shape), dtype=np.uint8)
    for i, name in enumerate(tqdm(names, desc=f"decoding {Path(z.filename).name}", unit="img",
                                  disable=len(names) < 10_000)):
        image = np.asarray(Image.open(io.BytesIO(z.read(name))))
        image = image[:, :, None] if image.ndim == 2 else image
        if image.transpose(2, 0, 1).shape != tuple(shape):
            raise ZipError(f"{where}: {name} is {'x'.join(map(str, image.shape))} (HWC); this set's images are "
                           f"{shape[1]}x{shape[2]}x{shape[0]}")
        out[i] = image.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _labels(z: zipfile.ZipFile, names: list, where: str):
    """dataset.json's class indices in the images' order, or None where the zip has none."""
    if "dataset.json" not in z.namelist():
        return None
    try:
        labels = json.loads(z.read("dataset.json"))["labels"]
    except (ValueError, KeyError, TypeError):
        raise ZipError(f"{where}: dataset.json is not EDM's format ({{\"labels\": [[file, class], ...]}})") from None
    if labels is None:
        return None
    by_name = {str(name).replace("\\", "/"): label for name, label in labels}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ZipError(f"{where}: dataset.json has no label for {missing[0]} ({len(missing)} images unlabelled)")
    values = [by_name[n] for n in names]
    if any(isinstance(v, (list, bool)) or not isinstance(v, int) for v in values):
        raise ZipError(f"{where}: dataset.json's labels must be class indices (integers)")
    return torch.tensor(values, dtype=torch.long)
