"""`python -m distill_core.models`: the presets and their parameter counts."""
from . import PRESETS, build_network, count_parameters

CHANNELS = {"unet_cifar10": 3, "unet_small": 1, "unet_tiny": 1, "mlp": 2}

for name in PRESETS:
    for heads in (1, 2):
        n = count_parameters(build_network(name, CHANNELS[name], heads))
        print(f"{name:<14} {'both' if heads == 2 else 'eps/x/v':<8} {n:>12,d} parameters")
