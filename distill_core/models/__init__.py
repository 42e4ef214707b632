"""Networks and their presets. `build_network(preset, ...)` is the one entry point.

`unet_*` are the papers' hand-written U-Net (log-SNR input); `ddpm_*` are diffusers' `UNet2DModel`
(timestep input, `diffusion=ddpm`), which export as diffusers pipelines; `diffusers` is a loaded
diffusers teacher's own network (its config in `unet`).
"""
from .mlp import MLP
from .unet import UNet


def _ddpm_unet(channels, attention, layers, size, groups=32) -> dict:
    """A `UNet2DModel` config: `attention[i]` puts self-attention in block i (down and mirrored up)."""
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    return dict(sample_size=size, block_out_channels=list(channels), down_block_types=down, up_block_types=up,
                layers_per_block=layers, norm_num_groups=groups, act_fn="silu", attention_head_dim=None,
                center_input_sample=False, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
                mid_block_scale_factor=1, norm_eps=1e-6, time_embedding_type="positional")


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
    # google/ddpm-cifar10-32's architecture exactly (Ho et al. 2020; 35.7M parameters).
    "ddpm_cifar10": dict(kind="diffusers", unet=_ddpm_unet((128, 256, 256, 256), (0, 1, 0, 0), 2, 32)),
    # 28x28 (Fashion-MNIST, MNIST): 28 -> 14 -> 7, attention at 7.
    "ddpm_small": dict(kind="diffusers", unet=_ddpm_unet((32, 64, 64), (0, 0, 1), 1, 28)),
    # 8x8 digits on a CPU: 8 -> 4, attention at 4.
    "ddpm_tiny": dict(kind="diffusers", unet=_ddpm_unet((32, 32), (0, 1), 1, 8)),
    # a loaded diffusers teacher (teacher.source=diffusers:PATH): its config comes as `unet`.
    "diffusers": dict(kind="diffusers"),
    # toy2d points.
    "mlp": dict(kind="mlp", hidden=128, depth=3),
    # EDM's published networks (NVlabs/edm train.py's presets; edm_nets.py): with diffusion=edm.
    "edm_ddpmpp_cifar10": dict(kind="edm", architecture="SongUNet", kwargs=dict(
        img_resolution=32, model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
        dropout=0.13, embedding_type="positional", encoder_type="standard", decoder_type="standard",
        channel_mult_noise=1, resample_filter=[1, 1])),
    "edm_ncsnpp_cifar10": dict(kind="edm", architecture="SongUNet", kwargs=dict(
        img_resolution=32, model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
        dropout=0.13, embedding_type="fourier", encoder_type="residual", decoder_type="standard",
        channel_mult_noise=2, resample_filter=[1, 3, 3, 1])),
    "edm_adm_imagenet64": dict(kind="edm", architecture="DhariwalUNet", kwargs=dict(
        img_resolution=64, label_dim=1000, model_channels=192, channel_mult=[1, 2, 3, 4], num_blocks=3,
        attn_resolutions=[32, 16, 8], dropout=0.1)),
    # a loaded NVlabs EDM file's own network (its class as `architecture`, its arguments as `kwargs`).
    "edm": dict(kind="edm"),
}


def build_network(preset: str, in_channels: int, out_heads: int = 1, **overrides):
    """A network for `preset` with `overrides` (e.g. dropout=0) applied on top; `width` is the U-Net's base
    channels or the MLP's hidden units; `num_classes` makes it class-conditional (its `num_classes`
    attribute: None when unconditional)."""
    if preset not in PRESETS:
        raise ValueError(f"model.preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    spec = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None and k != "width"}}
    kind = spec.pop("kind")
    if overrides.get("width") is not None:
        spec["hidden" if kind == "mlp" else "channels"] = int(overrides["width"])
    if kind == "mlp":
        if spec.pop("num_classes", None):
            raise ValueError("model.num_classes: the mlp preset has no class embedding; use a unet_* or ddpm_* preset")
        return MLP(dim=in_channels, out_heads=out_heads, **spec)
    if kind == "diffusers":
        from .diffusers_unet import DiffusersUNet
        return DiffusersUNet(in_channels, out_heads, spec.get("unet"), spec.get("dropout"), overrides.get("width"),
                             spec.get("num_classes"))
    if kind == "edm":
        from .edm_nets import EDMNetwork
        if not spec.get("architecture"):
            raise ValueError("model.preset=edm is a loaded EDM file's network (teacher.source=edm:PATH); pick "
                             "edm_ddpmpp_cifar10, edm_ncsnpp_cifar10 or edm_adm_imagenet64 to build one")
        kwargs = dict(spec.get("kwargs") or {})
        if spec.get("num_classes"):
            kwargs["label_dim"] = int(spec["num_classes"])
        if overrides.get("width") is not None:
            kwargs["model_channels"] = int(overrides["width"])
        return EDMNetwork(in_channels, out_heads, spec["architecture"], kwargs, spec.get("dropout"))
    return UNet(in_channels=in_channels, out_heads=out_heads, **spec)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
