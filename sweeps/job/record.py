"""job.json: what one job has done so far, so that the same command resumes it.

It holds the job's MLflow run, its status, its teacher's reference, the student's logged model and its
registered version; it is written atomically in the job's folder (where its checkpoints live) and
copied to Hydra's output folder.
"""
import json
import os
from pathlib import Path

from ..common.errors import fail


class JobRecord:
    def __init__(self, directory: Path, output: Path):
        self.dir, self.output = Path(directory), Path(output)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "job.json"
        try:
            self.state = json.loads(path.read_text()) if path.is_file() else {}
        except (ValueError, UnicodeDecodeError) as e:
            fail(f"{path.resolve()} is damaged ({type(e).__name__}: {str(e)[:80]}); the job's run and teacher cannot "
                 f"be read from it: delete {self.dir.resolve()} to start this job afresh (its MLflow run stays in the store)")
        if not isinstance(self.state, dict):
            fail(f"{path.resolve()} is not a job record; delete {self.dir.resolve()} to start this job afresh")

    def get(self, key):
        return self.state.get(key)

    def update(self, **values) -> None:
        self.state.update(values)
        text = json.dumps(self.state, indent=1)
        for folder in (self.dir, self.output):
            tmp = folder / ".job.json.tmp"
            tmp.write_text(text)
            os.replace(tmp, folder / "job.json")

    def reset(self) -> None:
        """A fresh job: forget an earlier finished one and its checkpoints."""
        for f in self.dir.glob("*"):
            if f.is_file():
                f.unlink()
        self.state = {}

    def resumable_run(self):
        """The recorded run id if the job was cut off (killed, not failed or finished) and its run exists."""
        from mlflow.tracking import MlflowClient
        run_id = self.state.get("run_id")
        if not run_id or self.state.get("status") != "RUNNING":
            return None
        try:
            run = MlflowClient().get_run(run_id)
        except Exception:
            return None
        return run_id if run.info.status != "FINISHED" else None
