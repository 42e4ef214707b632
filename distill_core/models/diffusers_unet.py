"""diffusers' `UNet2DModel` as one of our networks: what a diffusers teacher is, and what every student
that should leave the toolkit as a diffusers pipeline is built on.

`net(z, cond)` returns the U-Net's output tensor; `cond` is the family's noise-level input (the DDPM
family's integer timestep, which is what these networks are trained on); `net(z, cond, labels)` for a
class-conditional one (`UNet2DModel`'s own `num_class_embeds`, a label embedding added to the time embedding). The U-Net's own config is
kept as plain values (`unet`), so a model saves, registers and loads without pickles. diffusers is
imported when such a network is built, not before (it takes seconds).
"""
import math

from torch import nn


def unet_config(unet: dict, in_channels: int, out_heads: int, dropout=None, width=None, num_classes=None) -> dict:
    """The U-Net config for `in_channels` data and `out_heads` outputs; `width` scales the channels so
    that the first block has `width`, `dropout` replaces the config's, `num_classes` sets `num_class_embeds`."""
    config = {k: v for k, v in unet.items() if not k.startswith("_")}
    config.update(in_channels=in_channels, out_channels=in_channels * out_heads)
    if num_classes and not config.get("num_class_embeds"):  # a preset made class-conditional
        config["num_class_embeds"] = int(num_classes)
        config["norm_num_groups"] = groups_for_embeddings(config["block_out_channels"], config["norm_num_groups"])
    if dropout is not None:
        config["dropout"] = float(dropout)
    if width is not None:
        first = config["block_out_channels"][0]
        config["block_out_channels"] = [int(c * width // first) for c in config["block_out_channels"]]
    return config


def groups_for_embeddings(channels, groups: int, min_group: int = 4) -> int:
    """GroupNorm groups of at least `min_group` channels. With one channel per group (ddpm_tiny's 32 groups on
    32 channels) GroupNorm subtracts each channel's mean and so erases the embedding a ResNet block adds per
    channel: the label (and the time step) would never reach the output."""
    for c in channels:
        groups = math.gcd(groups, int(c))
    while groups > 1 and min(channels) // groups < min_group:
        groups //= 2
    return groups


class DiffusersUNet(nn.Module):
    def __init__(self, in_channels: int, out_heads: int = 1, unet: dict = None, dropout=None, width=None,
                 num_classes=None):
        super().__init__()
        if not unet:
            raise ValueError("model.preset=diffusers is a loaded diffusers teacher's network (teacher.source="
                             "diffusers:PATH); pick ddpm_tiny, ddpm_small or ddpm_cifar10 to build one")
        from diffusers import UNet2DModel
        self.unet = UNet2DModel.from_config(unet_config(unet, in_channels, out_heads, dropout, width, num_classes))
        self.num_classes = self.unet.config.num_class_embeds

    def forward(self, x, cond, labels=None):
        return self.unet(x, cond, class_labels=labels).sample
