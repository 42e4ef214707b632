"""Timing on a shared machine, and what a step costs in arithmetic: the pieces every benchmark uses."""
import time

import torch

from distill_core import data as core_data

DATA_FOR = {"unet_tiny": "digits", "unet_small": "fashion_mnist", "unet_cifar10": "cifar10", "mlp": "toy2d",
            "ddpm_tiny": "digits", "ddpm_small": "fashion_mnist", "ddpm_cifar10": "cifar10",
            "edm_ddpmpp_cifar10": "cifar10", "edm_ncsnpp_cifar10": "cifar10"}  # (EDM's nets: with --diffusion edm)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def per_call(fn, reps: int, device: str, warmup: int = 3, blocks: int = 5) -> float:
    """Seconds per call: the fastest of `blocks` timed blocks (as timeit does), because a shared
    machine only ever adds time; `reps` calls in all."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    per_block = max(1, reps // blocks)
    for _ in range(max(1, min(blocks, reps))):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / per_block)
    return best


def synthetic_data(preset: str, shape, n=2048):
    return core_data.TensorData(preset, torch.randint(0, 256, (n, *shape), dtype=torch.uint8))


# dense bf16 peak of the GPUs this project is lent (NVIDIA datasheets, SXM parts), for MFU
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device_name: str):
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def step_flops(model, x, t) -> float:
    """FLOPs of one training step's forward + backward, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        model.x_hat(x, t).square().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


FAMILY = {"vp": ({"family": "vp", "parameterization": "v"}, "snr_plus_one", "truncated_snr"),
          "edm": ({"family": "edm"}, "edm", "edm"),
          "ddpm": ({"family": "ddpm", "parameterization": "v"}, "snr_plus_one", "truncated_snr")}  # (family, teacher weighting, distillation weighting)
