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


def scatter_image(points: torch.Tensor, size: int = 128) -> torch.Tensor:
    """Render 2-D points in [-1, 1]^2 as a (1, size, size) image in [-1, 1] (white dots on black)."""
    img = -torch.ones(1, size, size)
    ij = ((points.clamp(-1, 1) + 1) * 0.5 * (size - 1)).round().long()
    img[0, size - 1 - ij[:, 1], ij[:, 0]] = 1.0
    return img
