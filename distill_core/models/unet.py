"""A DDPM-style U-Net conditioned on log-SNR (the PD / TRACT teacher architecture).

Res blocks with a scale-and-shift-free additive embedding, self-attention at chosen
resolutions, dropout, and optional BigGAN-style resampling (res blocks that down/up-sample)
instead of strided convolutions. The head emits `out_heads` images stacked on the channel
axis: two for the `both` parameterisation. Class-conditional (`num_classes`): the label, one-hot, through a
dense layer added to the time embedding, as PD's U-Net does (DESIGN 3.10); an unconditional network has no
such layer, so its parameters are those it always had.

The embedding is added to each res block's channels before a GroupNorm, which removes whatever is constant
over a group: with one channel per group (GroupNorm(32) on 32 channels, `unet_tiny`) it removes the
embedding entirely. A conditional network therefore normalises groups of at least 4 channels; the
unconditional presets keep the grouping their stored teachers were trained with.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import logsnr_embedding


def norm(channels: int, min_group: int = 1) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (PD's), each of at least `min_group` channels."""
    groups = math.gcd(32, channels)
    while groups > 1 and channels // groups < min_group:
        groups //= 2
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, resample: str = "none",
                 min_group: int = 1):
        super().__init__()
        self.resample = resample  # "none", "down" or "up" (BigGAN-style)
        self.norm1, self.conv1 = norm(c_in, min_group), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.drop = norm(c_out, min_group), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _resample(self, x):
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x, emb):
        h = F.silu(self.norm1(x))
        h, x = self._resample(h), self._resample(x)
        h = self.conv1(h) + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int = 1, min_group: int = 1):
        super().__init__()
        self.heads = heads
        self.norm = norm(channels, min_group)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.ModuleList):
    """A sequence of blocks that all take (x, emb)."""

    def forward(self, x, emb):
        for block in self:
            x = block(x, emb) if isinstance(block, ResBlock) else block(x)
        return x


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 128, channel_mult=(1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions=(16,), dropout: float = 0.0, biggan_resample: bool = False,
                 image_size: int = 32, out_heads: int = 1, emb_mult: int = 4, num_classes=None):
        super().__init__()
        self.channels, self.num_classes = channels, num_classes
        g = 4 if num_classes else 1  # channels per GroupNorm group, at least (see the module's docstring)
        emb_dim = channels * emb_mult
        self.emb = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)

        def down(c):
            return ResBlock(c, c, emb_dim, dropout, "down", g) if biggan_resample else Downsample(c)

        def up(c):
            return ResBlock(c, c, emb_dim, dropout, "up", g) if biggan_resample else Upsample(c)

        self.down, skips, c, res = nn.ModuleList(), [channels], channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks = Level([ResBlock(c, channels * mult, emb_dim, dropout, min_group=g)])
                c = channels * mult
                if res in attention_resolutions:
                    blocks.append(Attention(c, min_group=g))
                self.down.append(blocks)
                skips.append(c)
            if level != len(channel_mult) - 1:
                self.down.append(Level([down(c)]))
                skips.append(c)
                res //= 2
        self.mid = Level([ResBlock(c, c, emb_dim, dropout, min_group=g), Attention(c, min_group=g),
                          ResBlock(c, c, emb_dim, dropout, min_group=g)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks = Level([ResBlock(c + skips.pop(), channels * mult, emb_dim, dropout, min_group=g)])
                c = channels * mult
                if res in attention_resolutions:
                    blocks.append(Attention(c, min_group=g))
                if level != 0 and i == num_res_blocks:
                    blocks.append(up(c))
                    res *= 2
                self.up.append(blocks)
        self.head = nn.Sequential(norm(c, g), nn.SiLU(), nn.Conv2d(c, in_channels * out_heads, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        if num_classes:  # (made last: the other layers start as an unconditional network's would)
            self.label_emb = nn.Linear(int(num_classes), emb_dim)

    def forward(self, x: torch.Tensor, logsnr: torch.Tensor, labels=None) -> torch.Tensor:
        emb = self.emb(logsnr_embedding(logsnr, self.channels))
        if labels is not None:
            emb = emb + self.label_emb(F.one_hot(labels, self.num_classes).to(emb.dtype))
        h = self.stem(x)
        hs = [h]
        for blocks in self.down:
            h = blocks(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for blocks in self.up:
            h = blocks(torch.cat([h, hs.pop()], dim=1), emb)
        return self.head(h)
