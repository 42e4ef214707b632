"""Sample grids as PNG, from fixed noise so grids of different runs compare image by image."""
from pathlib import Path

import torch


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> uint8 0..255."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_grid(samples: torch.Tensor, path, nrow: int = 8, upscale: int = 1) -> Path:
    """Write samples (B, C, H, W) in [-1, 1] as a grid PNG; 2-D points are drawn as a scatter."""
    from torchvision.utils import make_grid
    from torchvision.io import write_png
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().cpu()
    if samples.dim() == 2:
        samples = scatter_image(samples)[None]
    if upscale == 1 and samples.shape[-1] < 32:
        upscale = max(1, 32 // samples.shape[-1])
    if upscale > 1:
        samples = torch.nn.functional.interpolate(samples.float(), scale_factor=upscale, mode="nearest")
    grid = make_grid(to_uint8(samples.float()), nrow=nrow, padding=2, pad_value=255)
    write_png(grid if grid.shape[0] != 1 else grid.expand(3, -1, -1), str(path))
    return path


def save_class_grid(samples: torch.Tensor, labels: torch.Tensor, num_classes: int, path) -> Path:
    """A class-conditional model's samples as a grid with one row per class drawn (`grid_classes`: the first
    samples drawn for each, as many per row as the rarest of them has)."""
    labels = labels.detach().cpu()
    rows = [torch.nonzero(labels == k).flatten() for k in grid_classes(labels, num_classes)]
    per_row = min(len(r) for r in rows)
    order = torch.cat([r[:per_row] for r in rows])
    return save_grid(samples.detach().cpu()[order], path, nrow=per_row)


def grid_classes(labels: torch.Tensor, num_classes: int) -> list:
    """The classes a class grid has rows for: those drawn at least once, in order."""
    present = set(torch.as_tensor(labels).tolist())
    return [k for k in range(num_classes) if k in present]


def scatter_image(points: torch.Tensor, size: int = 128) -> torch.Tensor:
    """Render 2-D points in [-1, 1]^2 as a (1, size, size) image in [-1, 1] (white dots on black)."""
    img = -torch.ones(1, size, size)
    ij = ((points.clamp(-1, 1) + 1) * 0.5 * (size - 1)).round().long()
    img[0, size - 1 - ij[:, 1], ij[:, 0]] = 1.0
    return img
