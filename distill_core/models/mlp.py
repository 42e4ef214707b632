"""A small MLP denoiser for toy2d points: fast enough for learning tests on a CPU."""
import torch
from torch import nn

from .embedding import logsnr_embedding


class MLP(nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, out_heads: int = 1, emb_dim: int = 32):
        super().__init__()
        self.emb_dim = emb_dim
        layers, width = [], dim + emb_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim * out_heads))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, logsnr_embedding(logsnr, self.emb_dim)], dim=1))
