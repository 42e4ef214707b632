"""Checkpoints: written atomically (temp file + rename), read with weights_only=True.

A truncated or tampered file gives one clear error naming it, never an arbitrary pickle load.
"""
import hashlib
import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    pass


def save_atomic(obj, path) -> str:
    """torch.save to a temp file in the same folder, fsync, rename; returns the sha256. Temp files of this
    checkpoint left by a killed writer (`kill -9` mid-write) are removed first: one process owns a job folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sha256(path)


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checked(path, map_location="cpu", expected_sha256: str | None = None):
    """torch.load(weights_only=True) with a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise CheckpointError(f"checkpoint {path} does not match its recorded sha256 (tampered or truncated)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of a foreign class, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or not a distill-sweeps checkpoint: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
