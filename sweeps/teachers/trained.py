"""A trained teacher (`teacher.source=train`): trained once per distinct teacher config, then reused.

The key is a hash of everything that determines the teacher (its training config, the network, the
data, the seed). The first job that needs a key takes a lock, trains the teacher in an MLflow run of
its own, and registers it in `registry.teacher_name` with the key as a tag; every later job (or a
concurrent one waiting on the lock) loads that version instead.
"""
import contextlib
import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from distill_core.teacher import TeacherConfig

from ..common.errors import disk_full
from ..common.locks import exclusive
from .base import Acquired
from .reference import TeacherRef

log = logging.getLogger(__name__)


def teacher_key(tc: TeacherConfig, data_cfg: dict) -> str:
    """The noise family is part of the key, except the sampler (a sampling choice, applied at load) and
    the t = 0 convention (training draws t ~ U(0, 1); both are applied at load);
    speed choices (compile, precision) are not.
    VP keys are those from before families existed, so stores keep reusing their VP teachers."""
    spec = {"teacher": {k: v for k, v in asdict(tc).items() if k not in ("checkpoint_every", "compile", "precision", "family")
                        and not (k in ("width", "num_classes") and v is None)},  # (keys from before them stay valid)
            "data": data_cfg}
    family = {k: v for k, v in tc.family.items() if k not in ("sampler", "t0")}  # (training never draws t = 0)
    if family != {"family": "vp"}:
        spec["diffusion"] = family
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def find_registered(name: str, key: str):
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}' and tags.teacher_key = '{key}'")
    except mlflow.exceptions.MlflowException:
        return None
    versions = [v for v in versions if v.tags.get("teacher_key") == key]
    return max(versions, key=lambda v: int(v.version)) if versions else None


class TrainedTeacher:
    def __init__(self, settings):
        self.s = settings
        self.key = teacher_key(settings.teacher, settings.data.as_dict())

    def check(self) -> None:
        """Nothing to know before the run: the teacher is found or trained in `acquire`."""

    def acquire(self, data, ranks, experiment_id: str) -> Acquired:
        s, name = self.s, self.s.registry.teacher_name
        lock = contextlib.ExitStack()  # (held past this call by a teacher whose hand-off waits for the store)
        lock.enter_context(exclusive(s.cache_dir / "locks" / f"teacher-{self.key}.lock"))
        try:
            found = self.reusable(name)
            if found is not None:
                log.info("reusing teacher %s version %s (key %s)", name, found.version, self.key)
                ref = TeacherRef.of(found)
                acquired = Acquired(ref.load(ranks.host_device, s.registry.pickle), ref)
            else:
                acquired = self.train(data, ranks, experiment_id, lock)
        except BaseException:
            lock.close()
            raise
        if acquired.pending is None:
            lock.close()
        return acquired

    def reusable(self, name: str):
        """The registered version of this key, unless it is a pickle the user did not allow."""
        from ..tracking.registry import is_pickle_only
        found = find_registered(name, self.key)
        if found is not None and is_pickle_only(found) and not self.s.registry.pickle:
            log.warning("teacher %s version %s is stored only as a pickle (registered before the weights format); "
                        "not loading it (registry.pickle=false): training a new one", name, found.version)
            return None
        return found

    def train(self, data, ranks, experiment_id: str, lock) -> Acquired:
        """Train in a top-level run of the job's experiment (which every student that uses it links to, tag
        `teacher_run_id`), register, return it. A run of this key left RUNNING or KILLED by a process that
        died (the lock is ours, so none is alive) is continued, from the teacher's last checkpoint. Where the
        store does not answer at the end, the registration is handed to a thread (`handoff.Handoff`) that holds
        `lock` until it is done, and the job distils meanwhile."""
        from ..tracking import signals
        s = self.s
        run_id, resumed = self.teacher_run(experiment_id)
        with signals.killed_on_interrupt():
            mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None,
                             log_system_metrics=bool(s.tracking.system_metrics))
            try:
                teacher, lingering = self.trained(data, ranks, run_id, resumed)
                teacher.info["teacher_key"] = self.key
                if lingering is None:  # the store took everything: registered now
                    version = self.hand_over(teacher, data, run_id)
            except Exception as e:  # the teacher's run ends FAILED with the reason
                with contextlib.suppress(Exception):  # (a full store records nothing: the rerun finds it RUNNING)
                    mlflow.set_tags({"failure": str(e), **({"resumable": "true"} if disk_full(e) else {})})
                    mlflow.end_run("FAILED")
                raise
            if lingering is None:
                mlflow.end_run()
                return Acquired(teacher, TeacherRef(s.registry.teacher_name, str(version)))
            return self.hand_over_later(teacher, data, run_id, lingering, lock)

    def trained(self, data, ranks, run_id: str, resumed: bool):
        """(the teacher, trained in the active run; the RunLogger still delivering its metrics, or None)."""
        from ..ranks.tasks import teacher_task
        from ..tracking import dataset, params
        from ..tracking.reporter import RunReporter
        from ..tracking.run_logger import logged_steps
        s, tc = self.s, self.s.teacher
        if not resumed:
            mlflow.log_params(params.teacher_params(s.params))
            dataset.log_dataset(data, s.data.as_dict())
            mlflow.log_text(s.resolved_yaml, "config_resolved.yaml")
        reporter = RunReporter(mlflow.get_tracking_uri(), run_id, synchronous=not s.tracking.async_logging,
                               logged=logged_steps(run_id) if resumed else None,
                               outage_limit_s=float(s.tracking.outage_limit_s))
        teacher = ranks.run(teacher_task, data, tc, reporter, s.cache_dir / "teachers" / self.key / "train_state.pt")
        return teacher, reporter.lingering

    def hand_over(self, teacher, data, run_id: str) -> str:
        """Register the trained teacher from its (active) run, with its grid and description; its version."""
        from ..tracking import registry
        s, tc = self.s, self.s.teacher
        version = registry.log_and_register(teacher, "teacher", s.registry.teacher_name, {
            "teacher_key": self.key, "role": "teacher", "dataset": data.name, "preset": tc.preset,
            "parameterization": tc.parameterization, "family": s.family, "num_classes": tc.num_classes},
            run_id, pickle=s.registry.pickle, step=tc.updates)
        grid = log_samples(teacher, int(s.distill.schedule[0]), int(s.eval.grid_samples), s.seed)
        mlflow.set_tag("mlflow.note.content", f"**Teacher** {tc.preset} ({s.family}, {tc.parameterization}) on "
                       f"{data.name}, {tc.updates} updates, key `{self.key}`: registered as "
                       f"[{s.registry.teacher_name}/{version}]({TeacherRef(s.registry.teacher_name, version).page}"
                       "?workflowType=machine_learning); every job with this teacher config reuses it.\n\n"
                       f"![its samples](get-artifact?path=samples%2F{grid}&run_uuid={run_id})")
        mlflow.flush_async_logging()
        return version

    def hand_over_later(self, teacher, data, run_id: str, lingering, lock) -> Acquired:
        """The store does not answer at the teacher's end: the job goes on with the teacher at once, and a thread
        delivers its metrics, then registers it in its run, once the store answers (`handoff.Handoff`)."""
        import copy

        from ..tracking import store
        from .handoff import Handoff
        log.warning("tracking: the store does not answer at the teacher's end; distilling from it now, registering "
                    "it once the store is back")
        run_id, monitor = store.set_aside_active_run()
        frozen = copy.deepcopy(teacher)  # (what is registered: the job's copy goes on to be used and moved)

        def work() -> TeacherRef:
            lingering.close()  # its metrics first (waits for the store, up to tracking.outage_limit_s)
            if monitor is not None:
                monitor.finish()
            with mlflow.start_run(run_id=run_id, log_system_metrics=False):  # (this thread's own run stack)
                version = self.hand_over(frozen, data, run_id)
            log.info("tracking: the teacher is registered as %s/%s", self.s.registry.teacher_name, version)
            return TeacherRef(self.s.registry.teacher_name, str(version))
        return Acquired(teacher, None, Handoff(work, lock))

    def teacher_run(self, experiment_id: str) -> tuple[str, bool]:
        """(run id, resumed): this key's interrupted teacher run, else a new one."""
        client, tc = MlflowClient(), self.s.teacher
        ended = ("attributes.status = 'RUNNING'", "attributes.status = 'KILLED'",  # (and FAILED on a full disk)
                 "attributes.status = 'FAILED' and tags.resumable = 'true'")
        interrupted = [r for status in ended for r in client.search_runs(
            [experiment_id], f"tags.teacher_key = '{self.key}' and {status}", max_results=1)]
        if interrupted:
            log.info("continuing teacher run %s (key %s), whose process ended before it finished",
                     interrupted[0].info.run_id, self.key)
            return interrupted[0].info.run_id, True
        log.info("training teacher (key %s): %d updates of %s on %s", self.key, tc.updates, tc.preset, self.s.data.name)
        created = client.create_run(experiment_id, run_name=f"teacher {self.key}",
                                    tags={"role": "teacher", "teacher_key": self.key, "family": self.s.family})
        return created.info.run_id, False


def log_samples(teacher, steps: int, count: int, seed: int) -> str:
    """The teacher's own grid in its run (artifact `samples/`, image key `samples` at step 0), from the noise
    its students' grids use (seed + 1): what it draws before anything is distilled from it."""
    import tempfile

    import numpy as np
    import torch
    from PIL import Image

    from distill_core.distill import balanced_labels
    from distill_core.images import save_class_grid, save_grid
    noise = torch.randn((max(count, 1), *teacher.data_shape), generator=torch.Generator().manual_seed(seed + 1))
    labels = balanced_labels(len(noise), teacher.num_classes)
    with torch.no_grad():
        samples = teacher.sample(noise, steps, labels=labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"teacher_{steps}steps.png"
        path = save_grid(samples, path) if labels is None else save_class_grid(samples, labels, teacher.num_classes, path)
        mlflow.log_artifact(str(path), "samples")
        mlflow.log_image(np.asarray(Image.open(path).convert("RGB")), key="samples", step=0)
    return path.name

