"""Where a job's teacher comes from: trained once per distinct teacher config, then reused.

The key is a hash of everything that determines the teacher (its training config, the
network, the data, the seed). The first job that needs a key takes a file lock, trains the
teacher in an MLflow run of its own, and registers it in `registry.teacher_name` with the key as
a tag; every later job (or a concurrent one waiting on the lock) loads that version instead.
`teacher.source=models:/NAME@ALIAS` loads a registered model directly.
"""
import fcntl
import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from distill_core.teacher import TeacherConfig

from . import registry
from .distributed import Reporter, teacher_task

log = logging.getLogger(__name__)


class TeacherError(RuntimeError):
    pass


def teacher_key(tc: TeacherConfig, data_cfg: dict) -> str:
    """The noise family is part of the key, except the sampler (a sampling choice, applied at load) and
    the t = 0 convention (training draws t ~ U(0, 1); both are applied at load);
    speed choices (compile, precision) are not.
    VP keys are those from before families existed, so stores keep reusing their VP teachers."""
    spec = {"teacher": {k: v for k, v in asdict(tc).items() if k not in ("checkpoint_every", "compile", "precision", "family")
                        and not (k == "width" and v is None)},  # (keys from before model.width stay valid)
            "data": data_cfg}
    family = {k: v for k, v in tc.family.items() if k not in ("sampler", "t0")}  # (training never draws t = 0)
    if family != {"family": "vp"}:
        spec["diffusion"] = family
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def family_of(version) -> str:
    """A registered version's noise family (versions registered before families existed are VP)."""
    return version.tags.get("family", "vp")


@contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def find_registered(name: str, key: str):
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}' and tags.teacher_key = '{key}'")
    except mlflow.exceptions.MlflowException:
        return None
    versions = [v for v in versions if v.tags.get("teacher_key") == key]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def resolve_uri(uri: str):
    """models:/NAME@ALIAS or models:/NAME/VERSION -> the model version, or one clear error."""
    client = MlflowClient()
    body = uri[len("models:/"):]
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, version = body.rsplit("/", 1)
        return client.get_model_version(name, version)
    except (mlflow.exceptions.MlflowException, ValueError):
        raise TeacherError(f"teacher.source: no registered model at {uri!r} "
                           f"(expected models:/NAME@ALIAS or models:/NAME/VERSION of an existing version)") from None


def get_teacher(cfg, tc: TeacherConfig, data, data_cfg: dict, ranks, run_id: str):
    """Returns (teacher model, 'NAME/VERSION' it was registered as); a teacher is trained on the
    job's ranks (`sweeps.distributed.Ranks`)."""
    device = ranks.host_device
    source = str(cfg.teacher.source)
    if source.startswith("models:/"):
        version = resolve_uri(source)
        return (registry.load(f"models:/{version.name}/{version.version}", device, allow_pickle=cfg.registry.pickle),
                f"{version.name}/{version.version}")
    name, key = cfg.registry.teacher_name, teacher_key(tc, data_cfg)
    cache = Path(cfg.cache_dir)
    with file_lock(cache / "locks" / f"teacher-{key}.lock"):
        found = find_registered(name, key)
        if found is not None and registry.is_pickle_only(found) and not cfg.registry.pickle:
            log.warning("teacher %s version %s is stored only as a pickle (registered before the weights format); "
                        "not loading it (registry.pickle=false): training a new one", name, found.version)
            found = None
        if found is not None:
            log.info("reusing teacher %s version %s (key %s)", name, found.version, key)
            return (registry.load(f"models:/{name}/{found.version}", device, allow_pickle=cfg.registry.pickle),
                    f"{name}/{found.version}")
        log.info("training teacher (key %s): %d updates of %s on %s", key, tc.updates, tc.preset, data.name)
        from . import tracking
        active = mlflow.active_run()  # the teacher's run is a top-level run of the same experiment, which
        # every student that uses it links to (tag teacher_run_id), not a child of the first of them
        created = MlflowClient().create_run(active.info.experiment_id if active else "0", run_name=f"teacher {key}",
                                            tags={"role": "teacher", "teacher_key": key, "family": tc.family["family"]})
        with mlflow.start_run(run_id=created.info.run_id, nested=active is not None,
                              log_system_metrics=bool(cfg.tracking.system_metrics)) as run, \
                tracking.killed_on_interrupt():
            mlflow.log_params(tracking.job_params(cfg, tracking.TEACHER_PARAMS))
            tracking.log_dataset(data, data_cfg)
            try:
                teacher = ranks.run(teacher_task, data, tc, Reporter(mlflow.get_tracking_uri(), run.info.run_id,
                                                                        synchronous=not cfg.tracking.async_logging,
                                                                        outage_limit_s=float(cfg.tracking.outage_limit_s)),
                                    cache / "teachers" / key / "train_state.pt")
            except Exception as e:  # the teacher's run ends FAILED with the reason (the `with` ends it)
                mlflow.set_tag("failure", str(e))
                raise
            teacher.info["teacher_key"] = key
            version = registry.log_and_register(teacher, "teacher", name, {"teacher_key": key, "role": "teacher",
                                                "dataset": data.name, "preset": tc.preset,
                                                "parameterization": tc.parameterization,
                                                "family": tc.family["family"]}, run.info.run_id,
                                                pickle=cfg.registry.pickle)
            mlflow.flush_async_logging()
        return teacher, f"{name}/{version}"
