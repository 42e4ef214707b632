"""How a job's ranks are laid out (`devices` per node x `nodes`), and whether that fits the batch sizes,
the GPUs and the launcher: one line naming the key, or None."""
import os
from typing import Any, Optional

import torch


def cluster_tasks() -> Optional[Any]:
    """submitit's JobEnvironment when this process is one of several tasks of a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit
    env = submitit.JobEnvironment()
    return env if env.num_tasks > 1 else None


def layout_problem(devices, nodes, batch_sizes: dict, device: str) -> Optional[str]:
    """`devices`/`nodes` against `batch_sizes` ({"distill.batch_size": 128, ...}: global batches that must
    split over the ranks), the visible GPUs and the launcher: one line or None."""
    for key, value in (("devices", devices), ("nodes", nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{key} must be a positive integer; got {value!r}"
    ranks = devices * nodes
    for key, batch in batch_sizes.items():
        if isinstance(batch, int) and batch % ranks:
            return (f"{key}={batch} does not split over devices x nodes = {devices} x {nodes} = {ranks} ranks; "
                    f"use a multiple of {ranks}")
    tasks = cluster_tasks()
    if tasks is not None:
        if tasks.num_tasks != ranks:
            return (f"devices x nodes = {devices} x {nodes} = {ranks} ranks, but the job runs as {tasks.num_tasks} "
                    f"tasks; set hydra.launcher.tasks_per_node=devices and hydra.launcher.nodes=nodes "
                    f"(the slurm preset does)")
        if device == "cuda" and torch.cuda.device_count() < tasks.num_tasks // tasks.num_nodes:
            return (f"devices={devices}: {tasks.num_tasks // tasks.num_nodes} tasks per node but "
                    f"{torch.cuda.device_count()} visible GPU(s)")
        return None
    if nodes > 1:
        return (f"nodes={nodes} needs a cluster launcher that starts one task per rank on each node "
                f"(hydra/launcher=slurm); this job runs as a single process")
    if device == "cuda" and devices > torch.cuda.device_count():
        return f"devices={devices} but only {torch.cuda.device_count()} GPU(s) are visible; use devices<={torch.cuda.device_count()}"
    return None
