"""Networks and their presets. `build_network(preset, ...)` is the one entry point."""
from .mlp import MLP
from .unet import UNet

PRESETS = {
    # The papers' CIFAR-10 teacher (PD configs/cifar_base.py; algorithms.md 1.6).
    "unet_cifar10": dict(kind="unet", channels=256, channel_mult=(1, 1, 1), num_res_blocks=3,
                         attention_resolutions=(16, 8), dropout=0.2, biggan_resample=True, image_size=32),
    # 28x28 (Fashion-MNIST, MNIST): 28 -> 14 -> 7.
    "unet_small": dict(kind="unet", channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                       attention_resolutions=(7,), dropout=0.1, biggan_resample=False, image_size=28),
    # 8x8 digits on a CPU: ~0.27M parameters, ~0.13 s per batch-128 update on 2 cores.
    "unet_tiny": dict(kind="unet", channels=32, channel_mult=(1, 1), num_res_blocks=1,
                      attention_resolutions=(), dropout=0.0, biggan_resample=False, image_size=8),
    # toy2d points.
    "mlp": dict(kind="mlp", hidden=128, depth=3),
}


def build_network(preset: str, in_channels: int, out_heads: int = 1, **overrides):
    """A network for `preset` with `overrides` (e.g. dropout=0) applied on top; `width` is the U-Net's base
    channels or the MLP's hidden units."""
    if preset not in PRESETS:
        raise ValueError(f"model.preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    spec = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None and k != "width"}}
    kind = spec.pop("kind")
    if overrides.get("width") is not None:
        spec["hidden" if kind == "mlp" else "channels"] = int(overrides["width"])
    if kind == "mlp":
        return MLP(dim=in_channels, out_heads=out_heads, **spec)
    return UNet(in_channels=in_channels, out_heads=out_heads, **spec)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
