"""Logging models to MLflow and registering them (teachers and students alike), without pickle.

A registered model is a models-from-code pyfunc (`sweeps/pyfunc_model.py`) with two artifacts:
`weights.pt`, the model's plain state (config, info, tensors; `DiffusionModel.to_state`), read with
torch.load(weights_only=True), and `config.json`, the same config for people and tools. The
weights' sha256 is recorded at registration as the version tag `weights_sha256` and checked before
every load. `load(uri)` (jobs, `teacher.source`, promote, scripts) downloads the two files and
rebuilds the model: it never runs code from the store or unpickles anything.

`registry.pickle=true` logs the model with mlflow.pytorch's pickle flavour instead (the two files
ride along as extra files and `load` still reads those), so `mlflow.pytorch.load_model` works; it
runs whatever code the pickle holds: only for a store whose every writer you trust. Versions
registered before this format (pickles only) load only with `allow_pickle`.
"""
import json
import logging
import tempfile
import warnings
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from distill_core.checkpoint import CheckpointError, load_checked, save_atomic

# We choose pickle deliberately when asked to; MLflow's warning about it would repeat every job.
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)

log = logging.getLogger(__name__)
LARGE_BYTES = 20 * 2 ** 20  # a model whose registration is worth a line on the console
PIP_REQUIREMENTS = ["torch", "torchvision", "distill-sweeps"]
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
WEIGHTS, CONFIG = "weights.pt", "config.json"


class RegistryError(RuntimeError):
    pass


def write_files(model, folder: Path) -> tuple[Path, Path, str]:
    """weights.pt and config.json of `model` in `folder`; returns their paths and the weights' sha256."""
    folder = Path(folder)
    state = model.to_state()
    digest = save_atomic(state, folder / WEIGHTS)
    config = {"format": "distill-sweeps weights_only", "weights_sha256": digest,
              "config": {**state["config"], "data_shape": list(state["config"]["data_shape"])},
              "info": state["info"]}
    (folder / CONFIG).write_text(json.dumps(config, indent=1, default=str))
    return folder / WEIGHTS, folder / CONFIG, digest


def signature(model):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec
    shape = (-1, *model.data_shape)
    steps = int(model.info.get("steps") or 64)
    inputs = [TensorSpec(np.dtype(np.float32), shape)] if not model.num_classes else \
        [TensorSpec(np.dtype(np.float32), shape, "noise"), TensorSpec(np.dtype(np.int64), (-1,), "labels")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
                          params=ParamSchema([ParamSpec("steps", "long", steps)]))


def input_example(model):
    """One noise image of the model's shape (seeded) and `steps=1`: shown on the model's page, and what MLflow runs
    to check that the logged model loads and samples. One image at one step keeps that check to a network call or
    two (a published-size teacher at its own 40 Heun steps on the CPU took minutes)."""
    import numpy as np
    noise = np.random.default_rng(0).standard_normal((1, *model.data_shape)).astype(np.float32)
    data = noise if not model.num_classes else {"noise": noise, "labels": np.zeros(1, dtype=np.int64)}
    return data, {"steps": 1}


def weights_size(model) -> tuple[int, int]:
    """(parameters, bytes of the state) of `model`."""
    state = model.state_dict()
    return (sum(p.numel() for p in model.parameters()),
            sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "element_size")))


def say_logging(model, name: str) -> None:
    """A line on the console before a large model's upload and checks (the small ones take a moment)."""
    count, size = weights_size(model)
    level = logging.INFO if size >= LARGE_BYTES else logging.DEBUG
    log.log(level, "registering the %s: %.1fM parameters, %.0f MB of weights: writing, uploading, then loading it "
            "back once to check (one image, one step)", name, count / 1e6, size / 2 ** 20)


def log_and_register(model, name: str, registered_name: str, tags: dict, run_id: str, pickle: bool = False,
                     model_id: str | None = None, step: int | None = None) -> str:
    """Log `model` under the active run (into the logged model `model_id` when one was created for it)
    and register it; returns the new version number. `step`: the run's metrics at that step are linked to the
    logged model (a teacher's last update: its final loss)."""
    uri, digest = log_model(model, name, pickle, model_id, step)
    return register_logged(uri, digest, name, registered_name, tags, run_id, pickle)


NO_STEP = -1  # (MLflow's log_model links the run's metrics at its `step`, system metrics included: none at -1)


def link_metrics(model_id: str, run_id: str, step: int) -> None:
    """The run's metrics at `step` linked to the logged model, as MLflow's log_model would, but never
    `system/*`: their steps count samples, not updates, and the model's page would list CPU and network."""
    from mlflow.entities import Metric
    client = MlflowClient()
    linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id)
              for key in client.get_run(run_id).data.metrics if not key.startswith("system/")
              for m in client.get_metric_history(run_id, key) if m.step == step and m.model_id is None]
    if linked:
        client.log_batch(run_id, metrics=linked)


def log_model(model, name: str, pickle: bool = False, model_id: str | None = None,
              step: int | None = None) -> tuple[str, str]:
    """(the logged model's uri, the weights' sha256)."""
    say_logging(model, name)
    with tempfile.TemporaryDirectory() as tmp:
        weights, config, digest = write_files(model, Path(tmp))
        if pickle:
            info = mlflow.pytorch.log_model(model, name=name, serialization_format="pickle", model_id=model_id, step=NO_STEP,
                                            pip_requirements=PIP_REQUIREMENTS, extra_files=[str(weights), str(config)])
        else:
            with warnings.catch_warnings():  # (the signature and the example describe the input, not type hints)
                warnings.filterwarnings("ignore", message=r"(?s).*Add type hints")
                info = mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_CODE), model_id=model_id, step=NO_STEP,
                                               pip_requirements=PIP_REQUIREMENTS, signature=signature(model),
                                               input_example=input_example(model),
                                               artifacts={"weights": str(weights), "config": str(config)})
    mlflow.clear_active_model()  # (log_model makes it the process's active model: later system metrics would link to it)
    if step is not None and mlflow.active_run() is not None:
        link_metrics(info.model_id, mlflow.active_run().info.run_id, step)
    return info.model_uri, digest


def logged_digest(model_id: str) -> str:
    """The sha256 of the weights a logged model holds (read from the store, not recomputed)."""
    from types import SimpleNamespace

    from distill_core.checkpoint import sha256
    with tempfile.TemporaryDirectory() as tmp:
        return sha256(download_weights(f"models:/{model_id}", SimpleNamespace(source=f"models:/{model_id}", version="-"), tmp))


def register_logged(uri: str, digest: str, name: str, registered_name: str, tags: dict, run_id: str,
                    pickle: bool = False) -> str:
    """Register the logged model at `uri` with `tags` (metric values rounded to 4 significant digits)."""
    clean = {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in tags.items() if v is not None}
    clean.update(weights_sha256=digest, format="pickle" if pickle else "weights")
    from ..common.console import prints_to_log
    with prints_to_log("mlflow.register_model"):  # ("Successfully registered model ...", "Created version ...": the log file's)
        version = mlflow.register_model(uri, registered_name, tags=clean)
    client = MlflowClient()
    client.set_tag(run_id, f"registry.{name}", f"{registered_name}/{version.version}")
    describe(client, registered_name, version.version, name, clean)
    return version.version


def version_from_run(registered_name: str, run_id: str):
    """The newest version of `registered_name` that `run_id` registered, or None."""
    try:
        versions = MlflowClient().search_model_versions(f"name = '{registered_name}' and run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    return int(max(versions, key=lambda v: int(v.version)).version) if versions else None  # (as register_model gives it)


def logged_state(run_id: str, model_id: str | None) -> str:
    """What became of a run's logged model: `none` (there is none), `ready` (logged in full), `linked` (a
    killed attempt linked it to the run and stopped: MLflow refuses a second link), `fresh` (untouched)."""
    if not model_id:
        return "none"
    from mlflow.entities import LoggedModelStatus
    client = MlflowClient()
    if client.get_logged_model(model_id).status == LoggedModelStatus.READY:
        return "ready"
    outputs = client.get_run(run_id).outputs
    linked = any(o.model_id == model_id for o in (outputs.model_outputs if outputs else []) or [])
    return "linked" if linked else "fresh"


MODEL_DESCRIPTION = """Distilled diffusion students from distill-sweeps (digits to CIFAR-10; VP/DDIM, EDM or DDPM noise families).

Load and sample (no pickle; the weights' sha256 is checked first):

    import torch; from sweeps import registry
    m = registry.load("models:/{name}/<version>")
    images = m.sample(torch.randn(16, *m.data_shape), steps)   # in [-1, 1]
    # a class-conditional version (tag num_classes): one class index per sample
    images = m.sample(torch.randn(16, *m.data_shape), steps, labels=torch.arange(16) % m.num_classes)

or `mlflow.pyfunc.load_model(uri).predict(noise)` (samples at the version's own step count; params={{"steps": N}};
a class-conditional version takes `{{"noise": ..., "labels": ...}}`). The alias `models:/{name}@champion`
exists once `python -m sweeps.promote` has set it (it ranks comparable versions; none has it before).
A student on diffusers' UNet2DModel (family ddpm) also leaves as a diffusers pipeline: its run's artifact
`diffusers/`, or `python -m sweeps.export models:/{name}/<version> OUT_DIR`.

Version tags: method (tract | btd), family (vp | edm | ddpm), steps (the step count it samples with), schedule,
parameterization, dataset, num_classes (class-conditional versions only), teacher_version (what it was distilled from), gap (RMSE to the teacher's many-step
samples from the same noise), teacher_gap (the teacher's own gap at the same step count), pixel_fd / fid / kid
(where computed), weights_sha256, format. The version's source run has its metrics per phase, grids and
checkpoints; its logged model lists the final evaluation."""

TEACHER_DESCRIPTION = """Diffusion teachers of distill-sweeps: trained here once per distinct teacher config (tag teacher_key),
or a published diffusers model registered once (tags source, revision, source_sha256), reused by every job.

Use one as a job's teacher with `teacher.source=models:/{name}/<version>`, or load and sample it:

    import torch; from sweeps import registry
    m = registry.load("models:/{name}/<version>")
    images = m.sample(torch.randn(16, *m.data_shape), 64)   # in [-1, 1]

Version tags: teacher_key, role, family (vp | edm | ddpm), preset, parameterization, dataset, num_classes
(class-conditional teachers only: a job with this teacher is class-conditional), weights_sha256,
format (and for diffusers teachers: source, revision, source_sha256). The version's source run holds its
training curve or, for a diffusers teacher, its U-Net and scheduler configs."""


def describe(client, registered_name: str, version: str, role: str, tags: dict) -> None:
    """What a registered model is and how to use it (once), and a one-line version description."""
    try:
        if not client.get_registered_model(registered_name).description:
            text = TEACHER_DESCRIPTION if role == "teacher" else MODEL_DESCRIPTION
            client.update_registered_model(registered_name, description=text.format(name=registered_name))
        what = (f"{tags.get('method', role)} {tags.get('family', '')} student, {tags.get('steps')} step(s), "
                f"schedule {tags.get('schedule')}, from {tags.get('teacher_version')}: gap {tags.get('gap')} "
                f"(teacher at the same steps {tags.get('teacher_gap')})" if role == "student" else
                f"{tags.get('family', '')} teacher ({tags.get('preset')}, {tags.get('parameterization')}) on "
                f"{tags.get('dataset')}, key {tags.get('teacher_key')}" + (f", from {tags['source']}" if "source" in tags else ""))
        client.update_model_version(registered_name, version, description=what)
    except mlflow.exceptions.MlflowException as e:  # a description is a courtesy: never fail a job over it
        log.warning("could not describe %s/%s: %s", registered_name, version, e)


def version_of(uri: str):
    """models:/NAME@ALIAS or models:/NAME/VERSION -> the ModelVersion (MlflowException if none)."""
    client, body = MlflowClient(), uri[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, number = body.rsplit("/", 1)
    return client.get_model_version(name, number)


def model_location(version) -> str:
    """Where a version's logged-model files are (file://, mlflow-artifacts:/, s3://, ...)."""
    source = version.source
    if source.startswith("models:/m-"):  # MLflow 3: the version points at a logged model
        return MlflowClient().get_logged_model(source[len("models:/"):]).artifact_location
    return source


def is_pickle_only(version) -> bool:
    """Registered before the weights format: loading it means unpickling."""
    return "weights_sha256" not in version.tags


def load(uri: str, device: str = "cpu", allow_pickle: bool = False):
    """A registered teacher or student, ready to `sample(noise, steps)`; from its weights file,
    checked against the sha256 recorded at registration. One RegistryError line otherwise."""
    from distill_core.diffusion import DiffusionModel
    version = version_of(uri)
    if is_pickle_only(version):
        if not allow_pickle:
            raise RegistryError(f"{uri} (version {version.version}) is stored only as a pickle, and loading it "
                                f"runs code from the store; set registry.pickle=true if you trust every writer of it")
        return mlflow.pytorch.load_model(f"models:/{version.name}/{version.version}", map_location=device)
    with tempfile.TemporaryDirectory() as tmp:
        path = download_weights(uri, version, tmp)
        try:
            state = load_checked(path, map_location=device, expected_sha256=version.tags["weights_sha256"])
        except CheckpointError as e:
            raise RegistryError(f"{uri} (version {version.version}): {e}") from None
    return DiffusionModel.from_state(state).to(device)


def verify(version) -> None:
    """RegistryError (one line naming the version) unless its weights match their recorded sha256."""
    from distill_core.checkpoint import sha256
    uri = f"models:/{version.name}/{version.version}"
    if is_pickle_only(version):
        raise RegistryError(f"{uri}: stored only as a pickle, with no recorded sha256 to check")
    with tempfile.TemporaryDirectory() as tmp:
        if sha256(download_weights(uri, version, tmp)) != version.tags["weights_sha256"]:
            raise RegistryError(f"{uri}: its weights do not match their recorded sha256 (tampered or truncated)")


def download_weights(uri: str, version, folder) -> str:
    """The version's weights file, downloaded into `folder`."""
    location = model_location(version)
    for sub in ("artifacts", "extra_files"):  # pyfunc artifacts, or the pickle flavour's extra files
        try:
            return mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{sub}/{WEIGHTS}", dst_path=folder)
        except Exception:  # noqa: BLE001 (not in this layout)
            continue
    raise RegistryError(f"{uri} (version {version.version}): no {WEIGHTS} in the model's artifacts")


def abandon_model(model_id) -> None:
    """A student that will not be registered (pruned): its pending logged model is marked FAILED."""
    if not model_id:
        return
    try:
        from mlflow.entities import LoggedModelStatus
        MlflowClient().finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    except Exception:  # noqa: BLE001 (a courtesy)
        pass


def load_edm(path, device="cpu"):
    """An NVlabs EDM network file (`edm-cifar10-32x32-uncond-vp.pkl`, ...) as a `DiffusionModel` on the edm
    family, read as data: no code from the file runs (`distill_core.edm_pickle`). `path` is local; for a URL
    let a job fetch it once (`teacher.source=edm:https://...`) or download it yourself.

        m = registry.load_edm("edm-cifar10-32x32-uncond-vp.pkl")
        images = m.sample(torch.randn(16, *m.data_shape), 18, clip=False)   # EDM's Heun, 18 steps
    """
    from distill_core.edm_pickle import load_model
    return load_model(path).to(device)
