"""diffusers' `UNet2DModel` as one of our networks: what a diffusers teacher is, and what every student
that should leave the toolkit as a diffusers pipeline is built on.

`net(z, cond)` returns the U-Net's output tensor; `cond` is the family's noise-level input (the DDPM
family's integer timestep, which is what these networks are trained on). The U-Net's own config is
kept as plain values (`unet`), so a model saves, registers and loads without pickles. diffusers is
imported when such a network is built, not before (it takes seconds).
"""
from torch import nn


def unet_config(unet: dict, in_channels: int, out_heads: int, dropout=None, width=None) -> dict:
    """The U-Net config for `in_channels` data and `out_heads` outputs; `width` scales the channels so
    that the first block has `width`, `dropout` replaces the config's."""
    config = {k: v for k, v in unet.items() if not k.startswith("_")}
    config.update(in_channels=in_channels, out_channels=in_channels * out_heads)
    if dropout is not None:
        config["dropout"] = float(dropout)
    if width is not None:
        first = config["block_out_channels"][0]
        config["block_out_channels"] = [int(c * width // first) for c in config["block_out_channels"]]
    return config


class DiffusersUNet(nn.Module):
    def __init__(self, in_channels: int, out_heads: int = 1, unet: dict = None, dropout=None, width=None):
        super().__init__()
        if not unet:
            raise ValueError("model.preset=diffusers is a loaded diffusers teacher's network (teacher.source="
                             "diffusers:PATH); pick ddpm_tiny, ddpm_small or ddpm_cifar10 to build one")
        from diffusers import UNet2DModel
        self.unet = UNet2DModel.from_config(unet_config(unet, in_channels, out_heads, dropout, width))

    def forward(self, x, cond):
        return self.unet(x, cond).sample
