"""A job is owned by one live process: whoever runs a job holds its lock for the job's lifetime.

The lock (`common.locks`: an flock through `filelock`) is the operating system's: the process that dies,
even by SIGKILL, lets go of it, so the next command for the same job resumes it. Only when no live owner
holds it is a job resumed; a second process for a held job touches nothing (no run, no checkpoint) and
exits 2 with one line naming the owner (host, pid), its run and where to see it. On a shared filesystem
(a cluster's job folders) this holds across machines where the filesystem supports flock (NFSv4 with
locking, Lustre mounted with `flock`); elsewhere it serialises the processes of one machine only.
"""
import json
import os
import socket
import time
from contextlib import contextmanager

from ..common.errors import fail


@contextmanager
def owned(s, experiment_id: str):
    """Hold the job's lock (cache_dir/locks/job-KEY.lock) for the `with` block; another live owner: exit 2."""
    from ..common.locks import Held, exclusive
    lock = s.cache_dir / "locks" / f"job-{s.key}.lock"
    owner = lock.with_name(f"job-{s.key}.owner.json")
    try:
        held = exclusive(lock, wait=False)
        held.__enter__()
    except Held:
        fail(busy_line(s, owner, experiment_id))
    try:
        owner.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        held.__exit__(None, None, None)


def busy_line(s, owner, experiment_id: str) -> str:
    """Who owns the job, its run and where to see it, and how to run an independent copy."""
    from ..tracking.store import ui_link
    try:
        who = json.loads(owner.read_text())
    except (OSError, ValueError):
        who = {}
    try:
        run_id = json.loads((s.job_dir / "job.json").read_text()).get("run_id")
    except (OSError, ValueError):
        run_id = None
    where = (f"in run {run_id} ({ui_link(s.tracking.uri, page=f'#/experiments/{experiment_id}/runs/{run_id}')})"
             if run_id else "(its run is not started yet)")
    return (f"this job (key {s.key}) is being run by pid {who.get('pid', '?')} on {who.get('host', '?')} since "
            f"{who.get('since', '?')} {where}; wait for it, or run an independent copy with another "
            f"experiment_name or seed")
