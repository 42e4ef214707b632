"""Makes `old_layout_store.tar.gz`: a store written by the flat `sweeps/` layout (commit 854ecac), for
`tests/test_old_store.py` (the redesign must read stored runs, registered versions and job folders).

    git worktree add /tmp/old 854ecac
    PYTHONPATH=/tmp/old .venv/bin/python tests/data/make_old_layout_store.py /tmp/old-store

Two tiny jobs (width-4 U-Net, small files) in the experiment `ablation-tract_mu_s`: mu_s=0.5 runs to its end (it
trains and registers the teacher, registers student version 1); mu_s=0.9 is SIGKILLed in its second
phase (its run stays RUNNING, its job folder holds the resume point). The folder's absolute path is
written to ORIGIN: the test moves the store's paths to where it unpacks it.
"""
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

COMMON = ["+debug=tiny", "model.width=4", "experiment_name=ablation-tract_mu_s", "tracking.system_metrics=false",
          "distill.schedule=[8,4,2,1]", "distill.updates_per_phase=30", "distill.checkpoint_every=10"]
FINISHED = [*COMMON, "distill.mu_s=0.5", "hydra.run.dir=outputs/finished"]
KILLED = [*COMMON, "distill.mu_s=0.9", "hydra.run.dir=outputs/killed"]


def main(folder: str) -> None:
    folder = Path(folder).resolve()
    folder.mkdir(parents=True)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default sqlite:///mlflow.db, relative: the job key moves with it
    subprocess.run([sys.executable, "-m", "sweeps.run", *FINISHED], cwd=folder, env=env, check=True)
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.run", *KILLED], cwd=folder, env=env)
    while True:
        jobs = [p for p in folder.glob(".distill-sweeps/jobs/*/job.json") if '"RUNNING"' in p.read_text()]
        if jobs:
            state = resume_point_of(jobs[0].parent)
            if state and state[0] == 1 and state[1] > 0:
                break
        assert proc.poll() is None, "the job ended before its second phase"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    import sqlite3
    with sqlite3.connect(folder / "mlflow.db") as con:  # what the killed job left in the write-ahead log, into the file
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (folder / "ORIGIN").write_text(str(folder))
    out = Path(__file__).with_name("old_layout_store.tar.gz")
    with tarfile.open(out, "w:gz") as tar:
        for name in ("mlflow.db", "mlruns", ".distill-sweeps", "ORIGIN"):
            tar.add(folder / name, arcname=name)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


def resume_point_of(job_dir: Path):
    import torch
    path = job_dir / "distill_latest.pt"
    try:
        state = torch.load(path, weights_only=True)
    except Exception:  # (not there yet, or being written)
        return None
    return state["phase"], state["step"]


if __name__ == "__main__":
    main(sys.argv[1])
