"""`python -m distill_core.models`: the presets and their parameter counts."""
from . import build_network, count_parameters

CHANNELS = {"unet_cifar10": 3, "unet_small": 1, "unet_tiny": 1, "ddpm_cifar10": 3, "ddpm_small": 1, "ddpm_tiny": 1,
            "mlp": 2}

for name in CHANNELS:
    for heads in (1, 2):
        if heads == 2 and name.startswith("ddpm_"):
            continue  # (diffusers' prediction types have one output)
        n = count_parameters(build_network(name, CHANNELS[name], heads))
        print(f"{name:<14} {'both' if heads == 2 else 'eps/x/v':<8} {n:>12,d} parameters")
