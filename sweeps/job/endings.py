"""How a job ends when something fails at run time, in one place.

- a diverged loss: the run ends FAILED (tag `failure`), the job is done (a rerun starts afresh);
- a rank that died (a killed worker, a lost node): FAILED, but resumable: the rerun continues in the
  same run from the last checkpoint;
- out of GPU memory: FAILED, with one line naming the batch key, the model and the device;
- a tracking store away past `tracking.outage_limit_s`: the run stays as it is in the store, one line,
  exit 3; the same command resumes it;
- a reused or resumed teacher that fails its checks (tampered weights), a checkpoint that cannot be read
  (the core already falls back to the last readable one): FAILED, one line, exit 2;
- a full disk (the job folder's or the store's): FAILED, one line naming both and their free space, exit 2;
  resumable: once there is room the same command goes on from the last checkpoint, in the same run.
The error goes on to the sweeper (a failed trial), except where the process exits.
"""
import logging
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from ..common.errors import disk_full, fail

log = logging.getLogger(__name__)


class OutOfMemory(RuntimeError):
    """The device ran out of memory: one line with the batch size and the device's memory."""


class DiskFull(OSError):
    """No space left where the job writes: one line with the places and their free space."""


@contextmanager
def endings(s, run):
    import torch

    from distill_core.checkpoint import CheckpointError
    from distill_core.loop import DivergenceError

    from ..ranks.launch import WorkerError
    from ..teachers import TeacherError
    from ..tracking.outbox import TrackingOutage
    from ..tracking.registry import RegistryError
    try:
        yield
    except DivergenceError as e:
        failed(run, e, resumable=False)
    except WorkerError as e:
        failed(run, e, resumable=True)
    except torch.cuda.OutOfMemoryError:
        failed(run, OutOfMemory(out_of_memory_line(s, run)), resumable=False)
    except TrackingOutage as e:
        stop_for_outage(s, run, e)
    except (RegistryError, TeacherError, CheckpointError) as e:
        failed(run, e, resumable=False, line=True)
    except Exception as e:  # noqa: BLE001 (a full disk surfaces as OSError, torch's RuntimeError, SQLAlchemy's errors)
        if not disk_full(e):
            raise
        failed(run, DiskFull(disk_full_line(s, run)), resumable=True, line=True)


def disk_full_line(s, run) -> str:
    places = {"the job folder": Path(run.record.dir).resolve()}
    uri = str(s.tracking.uri)
    if uri.startswith("sqlite:///"):
        places["the store"] = Path(uri[len("sqlite:///"):]).resolve().parent
    free = "; ".join(f"{name} {path}: {shutil.disk_usage(path).free / 2 ** 20:.0f} MB free" for name, path in places.items())
    return (f"no space left on the device ({free}); make room (or point DISTILL_SWEEPS_CACHE / tracking.uri "
            f"elsewhere) and run the same command again: it goes on from the last checkpoint, in the same run")


def failed(run, error: Exception, resumable: bool, line: bool = False) -> None:
    """The run ends FAILED with the reason as its `failure` tag; the error goes on (or, `line`: exit 2)."""
    import mlflow

    from ..tracking.store import flush
    if not resumable:
        run.record.update(status="FAILED")
    try:
        flush()
        mlflow.set_tag("failure", str(error))
        mlflow.end_run("FAILED")
    except Exception as e:  # noqa: BLE001 (a store that cannot write: the next command ends or resumes the run)
        log.warning("the store could not record the failure (%s)", str(e).splitlines()[0] if str(e) else type(e).__name__)
    if line:
        fail(str(error))
    log.error("%s", error)
    raise error


def stop_for_outage(s, run, error) -> None:
    """The tracking store stayed away past `tracking.outage_limit_s`: the training stopped after a
    checkpoint; the run stays as it was in the store and the same command resumes it."""
    from ..common.redaction import redact
    print(f"error: tracking.uri={redact(str(s.tracking.uri))}: {error}; the job stopped after its last checkpoint "
          f"and kept the undelivered metrics in {run.record.dir}; run the same command again to resume in the same run",
          file=sys.stderr, flush=True)
    os._exit(3)  # MLflow's own exit handlers would wait on the absent store


def out_of_memory_line(s, run) -> str:
    """Which batch did not fit: the teacher's while it trains (no teacher recorded yet), else the distillation's."""
    import torch

    from ..teachers import TAG
    key, batch = (("distill.batch_size", s.distill.batch_size) if run.record.get(TAG) or run.record.get("teacher_trained")
                  else ("teacher.batch_size", s.teacher.batch_size))
    props = torch.cuda.get_device_properties(torch.device(s.device) if ":" in s.device else 0)
    torch.cuda.empty_cache()
    return (f"CUDA out of memory: {key}={batch} ({batch // (s.devices * s.nodes)} per rank) with model={s.teacher.preset} "
            f"does not fit on {props.name} ({props.total_memory / 2 ** 30:.0f} GiB); lower {key} or spread it with "
            f"devices=N")
