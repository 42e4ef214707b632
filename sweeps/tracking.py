"""MLflow: the store, the job's run, and the core's Callback implemented with MLflow.

What the core reports goes through an `Outbox` (`sweeps.outbox`): queued by the training thread,
delivered in order by a background thread that outlasts a tracking-server outage. Each phase's
evaluation is logged at the cumulative update count and under step-count keys (`gap/1step`).
Checkpoints are logged with their sha256 as a tag (`sha256.phase1`).
"""
import os
import re
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from distill_core.callbacks import Callback

from .redaction import redact

PARENT_ENV = "DISTILL_SWEEPS_PARENT_RUN_ID"
SWEEP_ENV = "DISTILL_SWEEPS_SWEEP_ID"


def setup(uri: str, experiment_name: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id.

    For a SQLite store the artifacts go next to the database (./mlruns beside mlflow.db), so
    `mlflow ui --backend-store-uri sqlite:///mlflow.db` run from that folder shows them.
    """
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment_name)  # creates the store's schema on first use
    if uri.startswith("sqlite:///"):
        enable_wal(uri[len("sqlite:///"):])
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).resolve()
        location = (db.parent / "mlruns").as_uri()
    try:
        return client.create_experiment(experiment_name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another job
        return client.get_experiment_by_name(experiment_name).experiment_id


def ui_link(uri: str, experiment_id: str = "", page: str = "") -> str:
    """Where to look: the experiment's runs table (MLflow 3's UI otherwise opens on its GenAI view),
    or another `page` of the UI; for a database store, with the command that serves it."""
    view = page or f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{redact(uri).rstrip('/')}/{view}"
    return f"http://127.0.0.1:5000/{view} (after: mlflow ui --backend-store-uri {redact(uri)})"


class AuthError(RuntimeError):
    """The tracking server refused this user (401) or this action (403): one line for the user."""


def user() -> str:
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no MLFLOW_TRACKING_USERNAME)"


def denied(e: Exception) -> bool:
    """An MLflow error that is the server refusing the credentials or the permission."""
    return getattr(e, "error_code", None) in ("PERMISSION_DENIED", "UNAUTHENTICATED")


def credentials_header() -> dict:
    """The Authorization header MLflow's client sends (MLFLOW_TRACKING_USERNAME/_PASSWORD or _TOKEN)."""
    import base64
    name, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if name and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a server does not answer or
    does not accept the credentials (a server running MLflow's basic-auth app answers 401)."""
    import urllib.error
    import urllib.request
    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout) as r:
            if r.status != 200:
                raise ConnectionError(f"no MLflow server answers at {uri}")
    except OSError as e:
        raise ConnectionError(f"no MLflow server answers at {uri} ({e})") from None
    header = credentials_header()
    probe = urllib.request.Request(base + "/api/2.0/mlflow/experiments/search?max_results=1", headers=header)
    try:
        urllib.request.urlopen(probe, timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise AuthError(f"tracking.uri={uri}: the server refused the credentials (401 Unauthorized): "
                            + ("MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD were not accepted" if header
                               else "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")) from None
        if e.code == 403:
            raise AuthError(f"tracking.uri={uri}: user {user()} may not read this server (403 Forbidden)") from None
    except OSError:
        pass  # MLflow's own calls report anything else


def enable_wal(db_path: str) -> None:
    """Write-ahead logging lets parallel jobs read while one writes (the setting persists in the
    file); MLflow itself sets a 20 s busy timeout on every SQLite session."""
    import sqlite3
    with sqlite3.connect(db_path, timeout=30) as con:
        con.execute("PRAGMA journal_mode=WAL")


def flatten(cfg: DictConfig) -> dict:
    """The resolved config as {dotted.key: value}; lists stay lists (logged as their repr)."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return {k: redact(v) for k, v in out.items()}


NOT_PARAMS = ("tracking", "registry", "scale", "optuna", "cache_dir", "experiment_name")  # where, not what
TEACHER_PARAMS = ("data", "model", "teacher", "diffusion", "seed", "compile", "precision", "devices")


def job_params(cfg: DictConfig, groups=None) -> dict:
    """The run's params: the settings of this job under their config keys (the full resolved config is the
    run's `config_resolved.yaml`): not where it logs or caches, not the scale's grids, not unset keys.
    `groups`: only these top-level keys (a teacher's run: the same names as its students')."""
    return {k: v for k, v in flatten(cfg).items()
            if k.split(".")[0] not in NOT_PARAMS and v is not None and (groups is None or k.split(".")[0] in groups)}


def system_metrics_every(seconds: float) -> None:
    """CPU, memory, disk and network (psutil), and GPU (pynvml) figures every `seconds` as `system/*`."""
    mlflow.set_system_metrics_sampling_interval(float(seconds))


@contextmanager
def killed_on_interrupt():
    """Ctrl-C or SIGTERM: the runs this process has open end KILLED, not FAILED (the job stays resumable)."""
    import signal
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        INTERRUPTED.set()
        flush()
        while mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


INTERRUPTED = threading.Event()  # this process was stopped by Ctrl-C or SIGTERM (the sweep's end reads it)


def interrupt(signum, frame):
    """SIGTERM handled like Ctrl-C."""
    INTERRUPTED.set()
    raise KeyboardInterrupt(f"signal {signum}")


def abandon_model(model_id) -> None:
    """A student that will not be registered (pruned): its pending logged model is marked FAILED."""
    if not model_id:
        return
    try:
        from mlflow.entities import LoggedModelStatus
        MlflowClient().finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    except Exception:  # noqa: BLE001 (a courtesy)
        pass


def describe_run(result, cfg, teacher_version: str, version, experiment_id: str, teacher_run: str = "") -> str:
    """The run's description (Markdown, the run page's top): the headline result and a row per phase."""
    def f(v):
        return "-" if v is None else f"{v:.4g}"
    last, dc = result.phases[-1], cfg.distill
    m = last.metrics
    ratio = m["gap"] / m["teacher_gap"] if m.get("teacher_gap") else None
    lines = [f"**{dc.method} {cfg.diffusion.family}, schedule {'-'.join(map(str, dc.schedule))}**: the "
             f"{last.steps}-step student's gap is **{f(m.get('gap'))}**, {f(ratio)} of the teacher's own "
             f"{f(m.get('teacher_gap'))} at {last.steps} step(s)"
             + (f"; FID {f(m['fid'])}" if "fid" in m else "") + ".",
             "",
             f"Registered as [{cfg.registry.name}/{version}](#/models/{cfg.registry.name}/versions/{version}); "
             f"teacher [{teacher_version}](#/models/{teacher_version.replace('/', '/versions/')})"
             + (f" (its [run](#/experiments/{experiment_id}/runs/{teacher_run}))" if teacher_run else "") + ".",
             "", "| steps | gap | teacher gap | gap ratio | pixel FD | FID |", "|---|---|---|---|---|---|"]
    for p in result.phases:
        pm = p.metrics
        r = pm["gap"] / pm["teacher_gap"] if pm.get("teacher_gap") else None
        lines.append(f"| {p.steps} | {f(pm.get('gap'))} | {f(pm.get('teacher_gap'))} | {f(r)} | "
                     f"{f(pm.get('pixel_fd'))} | {f(pm.get('fid'))} |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


DATA_SOURCES = {"digits": "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
                "mnist": "https://yann.lecun.com/exdb/mnist/", "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
                "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html"}


def log_dataset(data, data_cfg: dict) -> None:
    """The training data as the active run's input (the UI's Dataset column): name-split, digest, source.
    A convenience: a failure here is a warning, never a failed job."""
    try:
        source = data_cfg.get("root") or DATA_SOURCES.get(data.name)
        dataset = mlflow.data.from_numpy(data.values.cpu().numpy(), name=f"{data.name}-{data_cfg['split']}",
                                         source=source)
        mlflow.log_input(dataset, context="training", tags={"split": str(data_cfg["split"])})
    except Exception as e:  # noqa: BLE001
        import logging
        logging.getLogger(__name__).warning("could not log the dataset as the run's input: %s", e)


IMAGE_UPSCALE = 2  # the grids' 8x8 digits are drawn 32 px wide; the UI's image cards show them at 64


def phase_metrics(metrics: dict, steps: int) -> dict:
    """A phase's evaluation as logged: each value under its own key (a run's chart over updates) and under
    its step-count key (`gap/1step`: one chart compares like with like across runs), plus the student's
    gap as a fraction of the teacher's at the same step count (`gap_ratio`)."""
    out = {k: float(v) for k, v in metrics.items()}
    if out.get("gap") is not None and out.get("teacher_gap"):
        out["gap_ratio"] = out["gap"] / out["teacher_gap"]
    return {**out, **{f"{k}/{steps}step": v for k, v in out.items()}}


STEP_KEY = re.compile(r"^(.+)/(\d+)step$")


def by_step_count(metrics: dict) -> dict:
    """{steps: {metric: value}} from a run's step-count keys (`gap/16step` -> {16: {"gap": ...}})."""
    out = {}
    for key, value in metrics.items():
        m = STEP_KEY.match(key)
        if m:
            out.setdefault(int(m.group(2)), {})[m.group(1)] = value
    return out


class Direct:
    """The Outbox's interface, delivered at once in the calling thread (`tracking.async_logging=false`)."""

    def __init__(self, run_id: str):
        self.run_id, self.client = run_id, MlflowClient()

    def metrics(self, metrics, step, model_id=None):
        from .outbox import log_batch
        import time
        log_batch(self.client, self.run_id, [(k, float(v), int(time.time() * 1000), int(step), model_id)
                                             for k, v in metrics.items()])

    def call(self, fn, *args, **kwargs):
        fn(self.client, *args, **kwargs)

    def artifact(self, path, folder):
        self.client.log_artifact(self.run_id, str(path), folder)

    def check(self):
        pass

    def close(self):
        pass


class MlflowCallback(Callback):
    """Sends what the core reports to an MLflow run, through an `Outbox` (off the training thread) or
    `Direct`ly. The final phase's metrics are linked to the student's logged model (`model_id`), so the
    model's page shows them."""

    def __init__(self, run_id: str, outbox=None, extra_metrics=None, logged: dict | None = None,
                 model_id: str | None = None, final_steps: int | None = None):
        self.run_id, self.out = run_id, outbox or Direct(run_id)
        self.extra_metrics = extra_metrics  # fn(phase, steps, model) -> dict, e.g. FID/KID
        self.logged = logged or {}  # metric -> last step already in the run (a resumed job skips those)
        self.model_id, self.final_steps = model_id, final_steps

    def on_metrics(self, metrics, step, model_id=None):
        fresh = {k: float(v) for k, v in metrics.items() if step > self.logged.get(k, -1)}
        if fresh:
            self.out.metrics(fresh, int(step), model_id=model_id)

    def on_phase_metrics(self, phase, steps, update, metrics):
        final = self.model_id if steps == self.final_steps else None
        self.on_metrics(phase_metrics(metrics, steps), update, model_id=final)
        self.out.call(lambda client: client.set_tag(self.run_id, "steps", str(steps)))  # the step count reached

    def on_checkpoint(self, path, sha256, name):
        if name.startswith("phase") or name == "teacher":
            self.out.artifact(path, "checkpoints")
            key = "sha256." + (name if name == "teacher" else Path(path).stem.split("_")[0])  # sha256.phase1
            self.out.call(lambda client: client.set_tag(self.run_id, key, sha256))
        self.out.check()  # a tracking outage longer than allowed stops the job here, after its checkpoint

    def on_image(self, path, name, step=None):
        self.out.artifact(path, "samples")
        if step is not None:  # MLflow's image view: key `samples` per phase (step slider), `teacher_samples`
            import numpy as np
            from PIL import Image
            image = np.asarray(Image.open(path).convert("RGB"))
            image = image.repeat(IMAGE_UPSCALE, axis=0).repeat(IMAGE_UPSCALE, axis=1)  # nearest: crisp digits
            key = "teacher_samples" if name.startswith("samples_teacher") else "samples"
            self.out.call(lambda client: client.log_image(self.run_id, image, key=key, step=int(step)))

    def on_phase_end(self, phase, steps, model, metrics):
        return self.extra_metrics(phase, steps, model) if self.extra_metrics else {}

    def close(self) -> None:
        """Everything delivered (waits out an outage up to the limit, else TrackingOutage)."""
        self.out.close()


def logged_steps(run_id: str) -> dict:
    """{metric: highest step already logged} of an existing run."""
    client = MlflowClient()
    return {key: max(m.step for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


def flush() -> None:
    try:
        mlflow.flush_async_logging()
    except Exception:  # nothing pending / older clients
        pass


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_ENV) or None
