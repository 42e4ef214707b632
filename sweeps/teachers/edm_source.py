"""An NVlabs EDM network file as the teacher: `teacher.source=edm:PATH` (a local `.pkl`) or
`teacher.source=edm:https://...` (downloaded once into the cache, with a progress bar).

The file is read as data (`distill_core.edm_pickle`: no code from it runs), its network rebuilt as our own
SongUNet / DhariwalUNet with its recorded arguments, on the `edm` family (EDMPrecond; `diffusion=edm`).
Everything about the file is checked before any run exists. The first job registers it once in
`registry.teacher_name`, keyed by the file's sha256, as a weights-only version with its config as JSON and
tags (source, sha256, network, preconditioning, its constructor arguments); later jobs reuse that version.
"""
import hashlib
import json
import logging
import os
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from distill_core.checkpoint import sha256

from .base import Acquired, reuse_or_register
from .reference import TeacherError

log = logging.getLogger(__name__)


def download(url: str, cache_dir: Path, pin: str | None = None) -> Path:
    """`url`'s file in `cache_dir/edm/<hash of the url>/<its safe basename>` (fetched once, written atomically, with
    a progress bar, at most `edm_pickle.MAX_FILE_BYTES`); its sha256 checked against `pin` (teacher.sha256) after
    the download and on every reuse of the cached copy. Plain http: only with a pin or from this machine.
    TeacherError (one line, saying what to do) otherwise; a failed download leaves no `.part` behind."""
    from urllib.parse import urlsplit

    from distill_core.edm_pickle import MAX_FILE_BYTES
    where = urlsplit(url)
    if where.scheme == "http" and pin is None and where.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise TeacherError(f"teacher.source=edm:{url}: plain http: is refused (the bytes could be changed on the way); "
                           f"use https:, or pin the file with teacher.sha256=<its sha256>")
    name = safe_name(where.path)
    target = Path(cache_dir).expanduser() / "edm" / hashlib.sha256(url.encode()).hexdigest()[:12] / name
    if not target.is_file():
        fetch(url, target, MAX_FILE_BYTES)
    check_pin(f"teacher.source=edm:{url}", target, pin)
    return target


def safe_name(path: str) -> str:
    """The last part of a URL's path as a plain file name (never `..`, a separator or empty)."""
    name = "".join(c for c in path.rstrip("/").rsplit("/", 1)[-1] if c.isalnum() or c in "._-")[:100].lstrip(".")
    return name or "network.pkl"


def fetch(url: str, target: Path, limit: int) -> None:
    from tqdm.auto import tqdm
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=f"downloading {target.name}") as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
                if out.tell() > limit:
                    raise TeacherError(f"teacher.source=edm:{url}: more than {limit / 2 ** 20:.0f} MB, more than an EDM "
                                       f"network file holds; refused")
        os.replace(partial, target)
    except OSError as e:
        raise TeacherError(f"teacher.source=edm:{url}: cannot be downloaded ({type(e).__name__}: {str(e)[:80]}); "
                           f"download it where the internet is reachable and pass teacher.source=edm:/path/to/"
                           f"{target.name}") from None
    finally:
        partial.unlink(missing_ok=True)


def check_pin(what: str, path: Path, pin: str | None) -> None:
    if pin is not None and sha256(path) != pin.lower():
        raise TeacherError(f"{what}: its sha256 is {sha256(path)}, not the teacher.sha256 pinned ({pin}); "
                           f"the file changed, or the pin is another file's")


def check_fits(source: str, shape: tuple, data_name: str) -> None:
    from distill_core.data import SHAPES
    if SHAPES.get(data_name) != shape:
        fits = [n for n, s in SHAPES.items() if s == shape]
        hint = f"use data.name={' or '.join(fits)}" if fits else "no bundled dataset has that shape"
        raise TeacherError(f"data.name={data_name} ({'x'.join(map(str, SHAPES.get(data_name, ())))}) does not fit "
                           f"teacher.source={source}, which makes {'x'.join(map(str, shape))} images: {hint}")


class EDMTeacher:
    def __init__(self, settings):
        self.s, self.source = settings, settings.teacher_source
        self.location = self.source[len("edm:"):]

    def check(self) -> None:
        from distill_core import edm_pickle

        from ..settings.checks import teacher_classes_problem
        s = self.s
        remote = self.location.startswith(("http://", "https://"))
        pin = s.teacher_sha256
        self.path = download(self.location, s.cache_dir, pin) if remote else Path(self.location).expanduser()
        if not remote:
            if not self.path.is_file():
                raise TeacherError(f"teacher.source={self.source}: no such file")
            check_pin(f"teacher.source={self.source}", self.path, pin)
        try:
            self.file = edm_pickle.network(self.path)
            self.shape, self.family, self.overrides = edm_pickle.model_config(self.file)
        except ValueError as e:
            raise TeacherError(f"teacher.source={self.source}: {e}") from None
        if self.family["sigma_data"] != s.teacher.family.get("sigma_data", 0.5):
            raise TeacherError(f"teacher.source={self.source} has sigma_data={self.family['sigma_data']}: set "
                               f"diffusion.sigma_data={self.family['sigma_data']}")
        check_fits(self.source, self.shape, s.data.name)
        problem = teacher_classes_problem(self.source, self.file.network_kwargs.get("label_dim") or None,
                                          s.teacher.num_classes, s.data.name)
        if problem:
            raise TeacherError(problem)
        self.sha256 = sha256(self.path)
        self.key = f"edm-{self.sha256[:16]}"
        self.model = self.build()  # (tensors that do not fit the recorded arguments: refused before any run)

    def acquire(self, data, ranks, experiment_id: str) -> Acquired:
        return reuse_or_register(self.s, self.key, self.source, ranks, self.load,
                                 lambda model: self.register(model, experiment_id))

    def load(self):
        return self.model

    def build(self):
        """Our model with the file's weights, on the job's edm family (its sampler settings)."""
        from distill_core.edm_pickle import build_model
        try:
            return build_model(self.file, self.s.teacher.family, where=self.source,
                               info={"role": "teacher", "source": self.source, "source_sha256": self.sha256,
                                     "teacher_key": self.key})
        except ValueError as e:
            raise TeacherError(str(e)) from None

    def register(self, model, experiment_id: str) -> str:
        """One teacher run (role=teacher) holding the file's description and the registered version."""
        from ..tracking import registry
        f = self.file
        tags = {"role": "teacher", "teacher_key": self.key, "family": "edm", "source": self.source,
                "network": f.network, "preconditioning": f.precond,
                **({"num_classes": model.num_classes} if model.num_classes else {})}
        run = MlflowClient().create_run(experiment_id, run_name=f"teacher {Path(self.location).name}", tags=tags)
        with mlflow.start_run(run_id=run.info.run_id, nested=mlflow.active_run() is not None):
            mlflow.log_params({"teacher.source": self.source, "teacher.weights_sha256": self.sha256, "model.preset": "edm",
                               **{f"network.{k}": json.dumps(v) if isinstance(v, (list, dict)) else v
                                  for k, v in f.network_kwargs.items()}})
            mlflow.log_dict({"preconditioning": f.precond, "preconditioning_values": f.precond_kwargs,
                             "network": f.network, "network_kwargs": f.network_kwargs}, "teacher/edm_config.json")
            version = registry.log_and_register(model, "teacher", self.s.registry.teacher_name, {
                **tags, "source_sha256": self.sha256, "preset": "edm", "parameterization": "edm",
                "dataset": self.s.data.name,
                "network_kwargs": json.dumps(f.network_kwargs, sort_keys=True)[:5000]},
                run.info.run_id, pickle=self.s.registry.pickle)
        log.info("registered teacher %s version %s from %s", self.s.registry.teacher_name, version, self.source)
        return str(version)
