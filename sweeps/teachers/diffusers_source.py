"""A published diffusers teacher: `teacher.source=diffusers:PATH` (a local folder) or
`teacher.source=hf:REPO[@REVISION]` (through huggingface-hub's cache; the resolved commit is recorded).

The teacher brings its noise family (`ddpm`, from its scheduler config) and its network (`preset=diffusers`,
its own `UNet2DModel` config). Everything about the folder is checked before any run exists (`check`).
The first job registers it once in `registry.teacher_name`, in a teacher run of its own, keyed by a hash of
the weights' sha256 and both configs (tags: source, revision, sha256, the scheduler's values); every
later job of a sweep reuses that version, as it reuses a trained teacher.
"""
import logging
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from . import diffusers_files as files
from .base import Acquired, reuse_or_register
from .reference import TeacherError

log = logging.getLogger(__name__)


def resolve(source: str, allow_pickle: bool = False) -> files.Folder:
    """The folder that `source` names; an hf: id through the hub's cache (offline: the cache only): its
    configs and safetensors, and its pickled weights only where there are no safetensors and they are allowed."""
    if source.startswith("diffusers:"):
        return files.locate(source, Path(source[len("diffusers:"):]).expanduser())
    repo, _, revision = source[len("hf:"):].partition("@")
    from huggingface_hub import snapshot_download
    try:
        path = Path(snapshot_download(repo, revision=revision or None, allow_patterns=["*.json", "*.safetensors"]))
        if allow_pickle and not list(path.rglob(files.SAFETENSORS)):
            path = Path(snapshot_download(repo, revision=revision or None, allow_patterns=[f"*{files.PICKLED}"]))
    except Exception as e:  # noqa: BLE001 (offline, unknown repo, no network: many types, one answer)
        raise TeacherError(f"teacher.source={source}: not in the Hugging Face cache and the hub cannot be reached "
                           f"({type(e).__name__}); pass teacher.source=diffusers:/path/to/folder, or fill the cache "
                           f"(`hf download {repo}`) where the hub is reachable") from None
    return files.locate(source, path, path.name)  # (a snapshot folder is named by its commit)


def check_fits(source: str, shape: tuple, data_name: str, schedule, family: dict) -> None:
    """The data has the teacher's image shape; the schedule starts within the teacher's steps."""
    from distill_core.data import SHAPES
    if SHAPES.get(data_name) != shape:
        fits = [n for n, s in SHAPES.items() if s == shape]
        hint = f"use data.name={' or '.join(fits)}" if fits else "no bundled dataset has that shape"
        raise TeacherError(f"data.name={data_name} ({'x'.join(map(str, SHAPES.get(data_name, ())))}) does not fit "
                           f"teacher.source={source}, which makes {'x'.join(map(str, shape))} images: {hint}")
    k = family.get("num_train_timesteps", 1000)
    if schedule[0] > k:
        raise TeacherError(f"distill.schedule={list(schedule)} starts at {schedule[0]} steps but teacher.source={source} "
                           f"has num_train_timesteps={k}: start at most at {k} (e.g. [{k}, 50, 1])")


def load_teacher(folder: files.Folder, weights: Path, shape: tuple, family: dict, info: dict):
    """The teacher as our model: its UNet2DModel with the folder's weights, read without pickles."""
    import torch
    from safetensors.torch import load_file

    from distill_core.diffusion import DiffusionModel
    model = DiffusionModel("diffusers", shape, family, {"unet": folder.unet_config()}, info=info)
    state = load_file(str(weights)) if weights.suffix == ".safetensors" else \
        torch.load(weights, map_location="cpu", weights_only=True)
    model.net.unet.load_state_dict(state)
    return model.eval()


class DiffusersTeacher:
    def __init__(self, settings):
        self.s, self.source = settings, settings.teacher_source

    def check(self) -> None:
        from distill_core import families
        s = self.s
        self.folder = resolve(self.source, s.registry.pickle)
        self.shape, self.family = files.image_shape(self.folder), files.family_config(self.folder)
        try:
            families.build(self.family)
        except ValueError as e:
            raise TeacherError(f"teacher.source={self.source}: {e}") from None
        check_fits(self.source, self.shape, s.data.name, s.distill.schedule, self.family)
        from ..settings.checks import teacher_classes_problem
        problem = teacher_classes_problem(self.source, self.folder.unet_config().get("num_class_embeds"),
                                          s.teacher.num_classes, s.data.name)
        if problem:
            raise TeacherError(problem)
        self.weights = self.folder.weights(s.registry.pickle)
        self.sha256, self.key = files.fingerprint(self.folder, self.weights)

    def acquire(self, data, ranks, experiment_id: str) -> Acquired:
        return reuse_or_register(self.s, self.key, self.source, ranks, lambda: load_teacher(self.folder, self.weights, self.shape, self.family, self.info()),
                                 lambda model: self.register(model, experiment_id))

    def info(self) -> dict:
        return {"role": "teacher", "source": self.source, "revision": self.folder.revision,
                "source_sha256": self.sha256, "teacher_key": self.key}

    def register(self, model, experiment_id: str) -> str:
        """One teacher run (role=teacher) holding the source, its configs and the registered version."""
        from ..tracking import registry
        sc = self.folder.scheduler_config()
        tags = {"role": "teacher", "teacher_key": self.key, "family": "ddpm", "source": self.source,
                **({"num_classes": model.num_classes} if model.num_classes else {})}
        run = MlflowClient().create_run(experiment_id, run_name=f"teacher {self.source}", tags=tags)
        with mlflow.start_run(run_id=run.info.run_id, nested=mlflow.active_run() is not None):
            mlflow.log_params({"teacher.source": self.source, "teacher.revision": self.folder.revision or None,
                               "teacher.weights_sha256": self.sha256, "model.preset": "diffusers",
                               **{f"diffusion.{k}": sc.get(k) for k in files.SCHEDULER_KEYS if k != "trained_betas"}})
            mlflow.log_dict(sc, "teacher/scheduler_config.json")
            mlflow.log_dict(self.folder.unet_config(), "teacher/unet_config.json")
            version = registry.log_and_register(model, "teacher", self.s.registry.teacher_name, {
                **tags, "revision": self.folder.revision or None, "source_sha256": self.sha256, "preset": "diffusers",
                "parameterization": self.family["parameterization"], "dataset": self.s.data.name},
                run.info.run_id, pickle=self.s.registry.pickle)
        log.info("registered teacher %s version %s from %s", self.s.registry.teacher_name, version, self.source)
        return str(version)
