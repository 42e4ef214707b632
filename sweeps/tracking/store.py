"""The tracking store: where it is, whether it answers, who the user is, and the links into its UI.

A SQLite store keeps its artifacts beside the database (./mlruns next to mlflow.db), so `mlflow ui
--backend-store-uri sqlite:///mlflow.db` run from that folder shows them; a server is probed first so
that a job fails in seconds, with one line, when it does not answer or refuses the credentials.
"""
import os
import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ..common.redaction import redact
from . import view

PARENT_ENV = "DISTILL_SWEEPS_PARENT_RUN_ID"
SWEEP_ENV = "DISTILL_SWEEPS_SWEEP_ID"


def setup(uri: str, experiment_name: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id.

    For a SQLite store the artifacts go next to the database (./mlruns beside mlflow.db), so
    `mlflow ui --backend-store-uri sqlite:///mlflow.db` run from that folder shows them.
    """
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    elif "://" in uri and not uri.startswith(("sqlite:", "file:")):
        check_database(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment_name)  # creates the store's schema on first use
    if uri.startswith("sqlite:///"):
        enable_wal(uri[len("sqlite:///"):])
    exp_id = exp.experiment_id if exp is not None else create_experiment(client, uri, experiment_name)
    publish_view(client, exp_id)
    return exp_id


def create_experiment(client, uri: str, experiment_name: str) -> str:
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).resolve()
        location = (db.parent / "mlruns").as_uri()
    try:
        return client.create_experiment(experiment_name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another job
        return client.get_experiment_by_name(experiment_name).experiment_id


def publish_view(client, experiment_id: str) -> None:
    """The runs table the printed link opens (`tracking.view`); a reader may not tag the experiment."""
    try:
        view.publish(client, experiment_id, view.EXPERIMENT_VIEW, view.state())
    except mlflow.exceptions.MlflowException as e:
        if not denied(e):
            raise


def ui_link(uri: str, experiment_id: str = "", page: str = "", share_key: str = view.EXPERIMENT_VIEW) -> str:
    """Where to look: the experiment's runs table with the result's columns (`tracking.view`; MLflow 3's
    UI otherwise opens on its GenAI view), or another `page` of the UI; for a database store, with the
    command that serves it."""
    page = page or f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={share_key}"
    if uri.startswith(("http://", "https://")):
        return f"{redact(uri).rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} (after: mlflow ui --backend-store-uri {redact(uri)})"


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


def check_database(uri: str, timeout: int = 5) -> None:
    """One connection attempt with a timeout (PostgreSQL, MySQL, ...): MLflow's store retries a closed port
    for about a minute before its error."""
    import sqlalchemy
    args = {"connect_timeout": timeout} if uri.startswith(("postgresql", "mysql")) else {}
    engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ConnectionError(f"no database answers at {redact(uri)} ({reason})") from None
    finally:
        engine.dispose()


def enable_wal(db_path: str) -> None:
    """Write-ahead logging lets parallel jobs read while one writes (the setting persists in the
    file); MLflow itself sets a 20 s busy timeout on every SQLite session."""
    import sqlite3
    with sqlite3.connect(db_path, timeout=30) as con:
        con.execute("PRAGMA journal_mode=WAL")


def system_metrics_every(seconds: float) -> None:
    """CPU, memory, disk and network (psutil), and GPU (pynvml) figures every `seconds` as `system/*`."""
    mlflow.set_system_metrics_sampling_interval(float(seconds))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flush() -> None:
    """Deliver MLflow's own asynchronous logging, if this process tracks anything (a rank that reported nothing
    must not create the default store in its working folder)."""
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
    if not is_tracking_uri_set():
        return
    try:
        mlflow.flush_async_logging()
    except Exception:  # nothing pending / older clients
        pass


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_ENV) or None


def set_aside_active_run():
    """This thread's active run taken off its run stack without a word to the store: `mlflow.end_run` less its
    `set_terminated`, for a store that does not answer. Returns (the run's id, its system-metrics monitor or
    None); the run is ended later, where waiting on the store is allowed (MLflow's run stack is per thread:
    `mlflow.start_run(run_id=...)` in another thread takes it up there). MLflow has no public call for this."""
    from mlflow.tracking import fluent
    run = fluent._active_run_stack.get().pop()
    fluent.MLFLOW_RUN_ID.unset()  # (as end_run)
    return run.info.run_id, fluent.run_id_to_system_metrics_monitor.pop(run.info.run_id, None)
