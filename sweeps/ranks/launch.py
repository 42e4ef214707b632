"""Launching a job's trainings on its ranks (`devices=N`, `nodes=M`): one process, elastic workers, or cluster tasks.

The job process (Hydra's job, under any launcher or sweeper) does all but the training: config
checks, its MLflow run, the teacher lookup, registration. Each training (a teacher, a distillation)
is a *task*, `fn(placement, device, *args)`, which `Ranks.run` executes:
- `devices=1`: in the job process itself (the single-device path, unchanged);
- `devices=N` in one job process: N workers started by torch's elastic launcher
  (`torch.distributed.launcher`, c10d rendezvous on 127.0.0.1; gloo on CPU, NCCL on CUDA; CPU workers forked
  from a fork server that imported the training code once, GPU workers spawned);
- the job running as several SLURM (or submitit-local) tasks, one per rank: the process group is
  initialised once from the cluster's environment (submitit's `TorchDistributedEnvironment`); task 0
  is the job process and sends each task, with its arguments, to the other tasks, which run it too.
Rank 0 reports into the job's MLflow run on the job's behalf (a picklable `tracking.reporter.RunReporter`
builds the callback where it runs), checkpoints and evaluates; its result comes back to the job process. A
worker that fails ends the launch with one line naming the rank and the error; collectives time out
(`distill_core.placement.COLLECTIVE_TIMEOUT`) instead of hanging.
"""
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from distill_core.loop import DivergenceError
from distill_core.placement import COLLECTIVE_TIMEOUT, DataParallel, Single

from .layout import cluster_tasks

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A rank failed (one line: which rank, what)."""


@dataclass
class _Failure:
    """An expected failure on the ranks (a diverged loss), re-raised as itself in the job process."""
    kind: str
    message: str


def _cpu(result):
    if isinstance(result, torch.nn.Module):
        return result.cpu()
    if hasattr(result, "model"):
        result.model = result.model.cpu()
    return result


def _rank_device(kind: str, local_rank: int) -> str:
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def _run_on_rank(fn, device: str, args):
    placement = DataParallel(device)
    try:
        result = fn(placement, device, *args)
    except DivergenceError as e:  # every rank sees the same averaged loss: a clean, shared failure
        return _Failure("divergence", str(e))
    if placement.is_main:
        from ..tracking.store import flush
        flush()
        return _cpu(result)
    return None


@record  # the failing rank's error reaches the launcher (and our one line)
def _elastic_worker(fn, kind: str, threads: int, args, job_pid: int):
    """One rank started by the elastic launcher (env: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    import torch.distributed as dist
    _die_with_job(job_pid)
    local_rank = int(os.environ["LOCAL_RANK"])
    if kind == "cpu":
        torch.set_num_threads(threads)  # N processes share the cores instead of oversubscribing them
    device = _rank_device(kind, local_rank)
    if int(os.environ["RANK"]) == 0:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][rank 0][%(name)s] %(message)s", stream=sys.stderr)
    dist.init_process_group("nccl" if kind == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        return _run_on_rank(fn, device, args)
    except Exception as e:
        if _secondary(str(e)):  # a peer died: let the launcher see that rank's failure first
            time.sleep(3)
        raise
    finally:
        dist.destroy_process_group()


def _die_with_job(job_pid: int) -> None:
    """A killed job takes its workers with it (Linux): no orphan rank goes on writing checkpoints. A spawned rank
    is the job's child: the kernel kills it when its parent dies (PR_SET_PDEATHSIG). A rank forked by the fork
    server is the server's child, and the server lives on while a rank does: a thread waits on the job's pidfd."""
    import signal
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == job_pid:
        return
    import select
    import threading
    try:
        job = os.pidfd_open(job_pid)
    except ProcessLookupError:  # gone already
        os.kill(os.getpid(), signal.SIGKILL)
    except (OSError, AttributeError):  # no pidfd here (old kernel): look every half second
        job = None

    def watch():
        if job is not None:
            select.select([job], [], [])  # readable when the job has exited
        else:
            while os.path.exists(f"/proc/{job_pid}"):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-job", daemon=True).start()


def _secondary(message: str) -> bool:
    """An error that only says another rank went away."""
    return any(s in message for s in ("Connection reset by peer", "Connection closed by peer", "Broken pipe"))


def _failure_line(devices: int, error) -> str:
    failures = getattr(error, "failures", {}) or {}
    if not failures:
        return f"devices={devices}: the workers failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    def text_of(failure):
        message = failure.message
        return str(message.get("message", "") if isinstance(message, dict) else message)

    # the cause, not its echo: a rank that failed first, and not because a peer's connection dropped
    ranked = sorted(failures.items(), key=lambda kv: (_secondary(text_of(kv[1])),
                                                      kv[1].timestamp or 0, kv[0]))
    rank, failure = ranked[0]
    text = text_of(failure).strip().splitlines()
    what = text[-1] if text else ""
    if not what or what.startswith("To enable traceback") or "Signal" in what or failure.exitcode < 0:
        what = f"exited with code {failure.exitcode}" + (f" ({what})" if what else "")
    return f"devices={devices}: rank {rank} failed: {what[:300]}"


# What a CPU rank imports before its first step: its fork server imports it once per job (the job's teacher
# and its distillation are two launches of N ranks each; a fresh interpreter per rank costs ~8 s of CPU).
RANK_PRELOAD = ["torch", "torch.distributed", "mlflow", "sweeps.ranks.launch", "sweeps.ranks.tasks",
                "distill_core.distill", "distill_core.teacher", "sweeps.tracking.run_logger", "sweeps.tracking.outbox"]


def start_method(kind: str) -> str:
    """CPU ranks are forked from a fork server that has imported the training code (`RANK_PRELOAD`), not
    spawned as fresh interpreters; GPU ranks keep `spawn`, the start method NCCL jobs are known to work with.
    A rank's parent is then the fork server, not the job: `_die_with_job` watches the job itself."""
    if kind == "cuda":
        return "spawn"
    import multiprocessing
    multiprocessing.set_forkserver_preload(RANK_PRELOAD)
    return "forkserver"


class Ranks:
    """Runs the job's trainings on its ranks (see the module docstring)."""

    def __init__(self, devices: int, device: str):
        self.devices, self.kind = devices, "cuda" if str(device).startswith("cuda") else "cpu"
        self.tasks = cluster_tasks()
        self.group = None  # the control group of a multi-task job (gloo: carries pickled tasks)
        if self.tasks is not None:
            self._init_from_cluster()

    @property
    def follower(self) -> bool:
        return self.tasks is not None and self.tasks.global_rank != 0

    @property
    def host_device(self) -> str:
        """Where the job process keeps models between trainings (CPU when workers train elsewhere)."""
        return "cpu" if self.devices > 1 and self.tasks is None else self.kind

    def _init_from_cluster(self) -> None:
        import submitit
        import torch.distributed as dist
        env = submitit.helpers.TorchDistributedEnvironment()
        if os.environ.get("SUBMITIT_EXECUTOR") == "local":
            env.master_addr = "127.0.0.1"
        env.export(set_cuda_visible_devices=self.kind == "cuda", overwrite=True)
        dist.init_process_group("nccl" if self.kind == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
        self.group = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
        if self.kind == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.local_world_size))

    def run(self, fn, *args):
        if self.tasks is not None:
            return self._run_tasks(fn, args)
        if self.devices == 1:
            return fn(Single(), self.kind, *args)
        return self._run_elastic(fn, args)

    def _run_elastic(self, fn, args):
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=self.devices, run_id=uuid.uuid4().hex[:12],
                              rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
                              start_method=start_method(self.kind))
        threads = max(1, (os.cpu_count() or 1) // self.devices)
        quiet = logging.getLogger("torch.distributed.elastic")
        level, quiet.level = quiet.level, logging.CRITICAL  # our one line replaces its tracebacks
        log.info("training on %d ranks (%s)", self.devices, "NCCL" if self.kind == "cuda" else "gloo")
        try:
            results = elastic_launch(config, _elastic_worker)(fn, self.kind, threads, args, os.getpid())
        except ChildFailedError as e:
            raise WorkerError(_failure_line(self.devices, e)) from None
        finally:
            quiet.setLevel(level)
        return self._result(results[0])

    @staticmethod
    def _result(result):
        if isinstance(result, _Failure):
            raise DivergenceError(result.message)
        return result

    # --- several submitit tasks, one per rank ---
    def _broadcast(self, item):
        import torch.distributed as dist
        box = [item]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def _run_tasks(self, fn, args):
        self._broadcast((fn, args))
        return self._result(_run_on_rank(fn, self._device(), args))

    def _device(self) -> str:
        return _rank_device(self.kind, 0) if self.kind == "cuda" else "cpu"  # one visible GPU per task

    def follow(self) -> None:
        """A follower task: run what task 0 sends until it says stop."""
        import torch.distributed as dist
        log.info("rank %d of %d: following task 0", dist.get_rank(), dist.get_world_size())
        while True:
            item = self._broadcast(None)
            if item is None:
                break
            fn, args = item
            _run_on_rank(fn, self._device(), args)

    def close(self) -> None:
        """Task 0 tells the followers to stop (also when the job fails), then everyone leaves the group."""
        if self.tasks is None:
            return
        import torch.distributed as dist
        try:
            if not self.follower:
                self._broadcast(None)
        finally:
            dist.destroy_process_group()
