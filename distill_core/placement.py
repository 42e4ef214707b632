"""Where a job's updates run: one device, or data-parallel ranks over torch.distributed (DESIGN 2).

The runner asks a placement five things and never which one it has:
- `shard(x)`: this rank's slice of a global batch. Every rank draws the whole global batch from the
  same seeded generator and keeps its slice, so N ranks train on exactly the examples, times and
  noise one device draws (the equivalence the tests check by comparing weights);
- `wrap(model)`: the x_hat call to train through; under DDP it is DistributedDataParallel's
  forward, so the gradients meet (averaged) in the backward pass;
- `mean(value)`: a logged value averaged over the ranks (the global batch's loss);
- `is_main`: the rank that reports, checkpoints and evaluates (the others train only);
- `check_in_step(name, module)`: that a module's weights are bit-identical on every rank;
- `agree(flag)`: rank 0's decision (go on or stop at a phase end), the same on every rank.
The process group itself is the application's business (who launches the ranks, which backend).
"""
import warnings
from datetime import timedelta

import torch
from torch import nn
from torch import distributed as dist

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a rank that stops answering ends the job, never a hang


class DriftError(RuntimeError):
    pass


class Single:
    """One process, one device."""
    rank, world_size, is_main = 0, 1, True

    def shard(self, x):
        return x

    def wrap(self, model):
        return model.x_hat

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def barrier(self) -> None:
        pass

    def check_in_step(self, name: str, module: nn.Module) -> None:
        pass

    def agree(self, flag: bool) -> bool:
        return flag

    def describe(self) -> str:
        return "1 device"


class _XHat(nn.Module):
    """DDP synchronises gradients through a module's forward: this one's forward is x_hat."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z, t, labels=None):
        return self.model.x_hat(z, t, labels=labels)


class DataParallel(Single):
    """One rank of an initialised process group (gloo on CPU, NCCL on CUDA)."""

    def __init__(self, device):
        if not dist.is_initialized():
            raise RuntimeError("DataParallel needs an initialised torch.distributed process group")
        # the CPU kernels hand 1x1 convolutions' weight gradients back channels_last: a copy, not an error
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = torch.device(device)

    def shard(self, x):
        """This rank's rows of a global batch (a tensor with the batch first; other values pass)."""
        if not torch.is_tensor(x) or x.dim() == 0:
            return x
        n = x.shape[0]
        if n % self.world_size:
            raise ValueError(f"a batch of {n} does not split over {self.world_size} ranks")
        size = n // self.world_size
        return x[self.rank * size:(self.rank + 1) * size]

    def wrap(self, model):
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(_XHat(model), device_ids=ids, gradient_as_bucket_view=True)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def barrier(self) -> None:
        dist.barrier()

    def check_in_step(self, name: str, module: nn.Module) -> None:
        """All ranks apply identical averaged gradients, so their weights must agree bit for bit."""
        flat = torch.cat([p.detach().reshape(-1).double() for p in module.state_dict().values()
                          if torch.is_tensor(p) and p.is_floating_point()])
        mine = torch.stack([flat.sum(), flat.abs().sum(), (flat * torch.arange(flat.numel(), device=flat.device,
                                                                                 dtype=flat.dtype).remainder(7)).sum()])
        every = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(every, mine)
        bad = [r for r, v in enumerate(every) if not torch.equal(v, every[0])]
        if bad:
            raise DriftError(f"{name} weights differ between rank 0 and rank(s) {bad}: the ranks drifted apart")

    def agree(self, flag: bool) -> bool:
        """Rank 0's flag on every rank (only rank 0 asks the sweep whether to go on)."""
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def describe(self) -> str:
        return f"{self.world_size} ranks ({dist.get_backend()})"
