"""`python -m sweeps.bench`: what a distillation step costs, against its arithmetic floor.

Measures in one process: teacher-training, BTD and TRACT step times at the same model and
batch (the ratios' floor is ~5/3: a training step is ~3 forward-equivalents, a distillation
step adds 2 frozen forwards), the DDIM sampler's overhead over bare forwards, evaluation and
sampling throughput, the step time with MLflow logging on vs off, the start-up time of
`python -m sweeps.run --help`, and peak memory. `--diffusion edm` measures the EDM family (EDM
teacher training; TRACT-VE and BTD-VE, whose Heun teacher step costs two frozen forwards).
`--devices N` measures data-parallel scaling instead: TRACT's step time and images/s on 1..N ranks at
`--batch` per rank (gloo processes on the CPU, one GPU each on CUDA) and the scaling efficiency
(images/s on n ranks over n times that on one). `--json` prints one JSON object last.
"""
import argparse
import json

import torch

from ...common.errors import command
from .scaling import scaling
from .steps import bench
from .timing import DATA_FOR, FAMILY


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--preset", default="unet_tiny", choices=sorted(DATA_FOR))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--steps", type=int, default=16, help="sampler steps for the overhead measurement")
    p.add_argument("--data-root", default=None)
    p.add_argument("--mlflow", action="store_true", help="also log the figures as an MLflow run (MLFLOW_TRACKING_URI)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network calls (as compile=true)")
    p.add_argument("--diffusion", default="vp", choices=sorted(FAMILY), help="the noise family (as diffusion=...)")
    p.add_argument("--devices", type=int, default=None,
                   help="measure data-parallel scaling on 1..N ranks instead (batch is per rank)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="the network precision on CUDA")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.batch < 1 or a.reps < 1:
        p.error("--batch and --reps must be positive")
    if a.devices is not None:
        if a.devices < 1 or a.device == "cuda" and a.devices > torch.cuda.device_count():
            p.error(f"--devices must be between 1 and the number of visible GPUs ({torch.cuda.device_count()}) on CUDA")
        out = scaling(a.preset, a.batch, a.reps, a.device, a.devices, a.diffusion, a.precision)
    else:
        out = bench(a.preset, a.batch, a.reps, a.device, a.steps, a.mlflow, a.data_root, a.compile, a.diffusion)
    width = max(map(len, out))
    for k, v in out.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if a.json:
        print(json.dumps(out))
    return 0
