"""The job's settings as plain typed values: what each stage receives instead of the Hydra config.

The core's own configs (`TeacherConfig`, `DistillConfig`) are used as they are; the rest of the
public keys are grouped as in `conf/` (data, eval, tracking, registry). Everything a job derives from
Hydra (its key, run name, output folder, params) is computed once and carried here.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from distill_core.distill import DistillConfig
from distill_core.teacher import TeacherConfig


@dataclass(frozen=True)
class DataSettings:
    name: str
    split: str = "train"
    root: Optional[str] = None

    def as_dict(self) -> dict:
        """As keyed into a trained teacher's key and logged with the run's dataset (stored keys depend on it)."""
        return {"name": self.name, "split": self.split, "root": self.root}

    def load(self, seed: int):
        from distill_core import data as core_data
        return core_data.load(self.name, self.split, self.root, seed=seed)


@dataclass(frozen=True)
class EvalSettings:
    gap_samples: int = 64
    grid_samples: int = 64
    fid: bool = False
    kid: bool = False
    num_samples: Optional[int] = None
    inception_weights: Optional[str] = "offline"
    fid_seeds: int = 1
    fid_extrapolate: bool = False
    fid_ref: Optional[str] = None
    pixel_fd_samples: int = 500
    teacher_curves: bool = False
    teacher_base: bool = False
    ancestral_gammas: tuple = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class TrackingSettings:
    uri: str
    experiment: str
    async_logging: bool = True
    outage_limit_s: float = 600.0
    system_metrics: bool = True
    system_metrics_interval: float = 10.0


@dataclass(frozen=True)
class RegistrySettings:
    name: str = "distill-students"
    teacher_name: str = "distill-teachers"
    pickle: bool = False


@dataclass
class JobSettings:
    teacher: TeacherConfig
    distill: DistillConfig
    teacher_source: str
    data: DataSettings
    eval: EvalSettings
    tracking: TrackingSettings
    registry: RegistrySettings
    seed: int = 0
    teacher_sha256: Optional[str] = None  # teacher.sha256: the pinned hash of an edm: file (null: not pinned)
    objective: str = "gap"
    device: str = "cpu"  # resolved: cpu or cuda
    devices: int = 1
    nodes: int = 1
    cache_dir: Path = Path(".distill-sweeps")
    output_dir: Path = Path(".")
    key: str = ""  # the job's key: its folder under cache_dir/jobs (same command, same key)
    label: str = ""  # the run's name: method, family, schedule and the values given on the command line
    overrides: list = field(default_factory=list)
    params: dict = field(default_factory=dict)  # the run's params (tracking.params.job_params)
    resolved_yaml: str = ""  # the resolved config, secrets redacted: the run's config_resolved.yaml
    trial: Any = None  # the job's Optuna trial (multirun.trial.TrialLink) under our sweeper

    @property
    def family(self) -> str:
        return self.teacher.family["family"]

    @property
    def job_dir(self) -> Path:
        return self.cache_dir / "jobs" / self.key

    @property
    def what(self) -> str:
        """e.g. `tract vp, schedule 256-16-1`."""
        return f"{self.distill.method} {self.family}, schedule {'-'.join(map(str, self.distill.schedule))}"
