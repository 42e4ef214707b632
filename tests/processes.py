"""The product's commands (`python -m sweeps.run ...`, `sweeps.promote`, ...) as real processes that start in
milliseconds instead of ~8 s.

A fresh Python importing torch, MLflow, Hydra and the application costs ~8 s on CI's cores, and the suite
starts some hundred commands. The standard library's fork server (`multiprocessing`'s `forkserver` start
method) imports them once per test session, in a process of its own that never runs a tensor operation or
opens a store (so nothing it holds is unsafe to fork); each command is then a fresh child forked from it,
with its own pid, environment, working folder, signal handlers, stdout/stderr and exit code, finished as the
interpreter finishes (`threading` shutdown, `atexit` handlers, flushed streams). Tests use it exactly where
they used `subprocess`: signals, `kill -9`, two owners, exit codes and DDP ranks all meet a real process.

`run(...)` is `subprocess.run(..., capture_output=True, text=True)`; `start(...)` gives a `Popen`-like
`Command` (`pid`, `poll`, `wait`, `communicate`, `send_signal`, `kill`, `terminate`, `returncode`).
Anything that is not one of the product's modules (an `mlflow server`, a plain diffusers script) stays a
plain `subprocess`.
"""
import atexit
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

# What a command imports before its first line of work (measured with `python -X importtime -m sweeps.run`).
PRELOAD = ["torch", "torchvision", "mlflow", "mlflow.tracking", "mlflow.pyfunc", "mlflow.models",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
           "hydra", "optuna", "sklearn.datasets", "PIL.Image", "matplotlib.pyplot", "sqlalchemy", "psutil",
           "sweeps.run", "sweeps.job.run", "sweeps.job.distil", "sweeps.job.teacher", "sweeps.job.register",
           "sweeps.job.student_run", "sweeps.job.finish", "sweeps.job.endings", "sweeps.job.inputs",
           "sweeps.multirun.sweeper", "sweeps.multirun.parent_run", "sweeps.tracking.registry", "sweeps.promote",
           "sweeps.report", "sweeps.jumps", "sweeps.ranks.launch", "sweeps.ranks.tasks", "distill_core.distill",
           "distill_core.teacher", "distill_core.fid"]

_CONTEXT = None


def context():
    """The session's fork server (started on first use, with this process's environment)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
        warm()
    return _CONTEXT


def _command(module: str, args: list, cwd: str, env: dict, out: str, err: str) -> None:
    """The child: `python -m module args` in `cwd` with exactly `env`, ending as the interpreter ends."""
    import runpy
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout, sys.stderr = open(1, "w", closefd=False, buffering=1), open(2, "w", closefd=False, buffering=1)
    sys.stdin = open(0, closefd=False)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = [module, *args]
    warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning)
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 (as the interpreter: the traceback, exit code 1)
        traceback.print_exc()
        code = 1
    finally:
        code = _finish(code)
    os._exit(code)


def _finish(code: int) -> int:
    """What the interpreter does after the main module: wait for non-daemon threads, run atexit, flush."""
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else code
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    return code


class Command:
    """`subprocess.Popen`'s interface over a forked command (text output, read when it has ended)."""

    def __init__(self, module, args, cwd, env):
        self.folder = Path(tempfile.mkdtemp(prefix="command-"))
        self.args = [sys.executable, "-m", module, *args]
        self.process = context().Process(target=_command, args=(module, list(args), str(cwd), dict(env),
                                                                str(self.folder / "out"), str(self.folder / "err")))
        self.process.start()
        self.pid = self.process.pid
        self.returncode = None

    def poll(self):
        if self.returncode is None and self.process.exitcode is not None:
            self.returncode = self.process.exitcode
        return self.returncode

    def wait(self, timeout=None):
        self.process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def output(self) -> tuple[str, str]:
        return tuple((self.folder / name).read_text(errors="replace") if (self.folder / name).exists() else ""
                     for name in ("out", "err"))

    def communicate(self, timeout=None):
        self.wait(timeout)
        return self.output()

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def environment(uri=None, **extra) -> dict:
    """This process's environment for a command: no progress bars, the tracking store `uri`, no sweep of ours."""
    env = {**os.environ, "TQDM_DISABLE": "1", **({"MLFLOW_TRACKING_URI": uri} if uri else {}), **extra}
    env.pop("DISTILL_SWEEPS_PARENT_RUN_ID", None)
    env.pop("DISTILL_SWEEPS_SWEEP_ID", None)
    return {k: v for k, v in env.items() if v is not None}


def start(module: str, args, cwd, env=None) -> Command:
    return Command(module, args, cwd, env if env is not None else environment())


def run(module: str, args, cwd, env=None, timeout: float = 900) -> subprocess.CompletedProcess:
    command = start(module, args, cwd, env)
    try:
        out, err = command.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        command.kill()
        command.wait(30)
        raise
    return subprocess.CompletedProcess(command.args, command.returncode, out, err)




def warm() -> None:
    """Start the fork server now (its imports take ~8 s), without waiting for it. Its stdout and stderr (which
    what it forks inherits, unless a command redirects its own: data-parallel ranks started in this process do
    not) go to a log file, not into the test run's output."""
    from multiprocessing import forkserver
    log = os.open(Path(tempfile.gettempdir()) / f"distill-forkserver-{os.getpid()}.log",
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        forkserver.ensure_running()
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log)


def sqlite(folder) -> str:
    """The SQLite store of `folder` (`folder/mlflow.db`), as a copy of an empty store when there is none yet:
    MLflow's schema migrations cost ~1.6 s per new store, so they run once per test run (`empty_store`)."""
    db = Path(folder) / "mlflow.db"
    if not db.exists():
        shutil.copyfile(empty_store(), db)
    return f"sqlite:///{db}"


_EMPTY = None


def empty_store() -> Path:
    """An SQLite store with MLflow's schema and nothing in it, made once per test process (in a process of its own:
    no engine of this one holds it)."""
    global _EMPTY
    if _EMPTY is None:
        path = Path(tempfile.mkdtemp(prefix="empty-store-")) / "mlflow.db"
        call(_create_schema, str(path))
        _EMPTY = path
    return _EMPTY


def _create_schema(path: str) -> None:
    import logging

    from mlflow.tracking import MlflowClient
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # (its "Creating initial MLflow database tables")
    MlflowClient(f"sqlite:///{path}").search_experiments()


def cli(module: str, args, cwd, uri=None, timeout: float = 900, **extra_env) -> subprocess.CompletedProcess:
    """`python -m module args` in `cwd` against `uri` (default: the SQLite store in `cwd`), as a real process."""
    return run(module, args, cwd, environment(uri or sqlite(cwd), **extra_env), timeout)


def call(function, *args, timeout: float = 300) -> None:
    """`function(*args)` (importable by name) in a fresh forked process; raises if it fails there."""
    process = context().Process(target=function, args=args)
    process.start()
    process.join(timeout)
    if process.exitcode != 0:
        process.kill()
        raise RuntimeError(f"{function.__name__}{args} failed in its process (exit code {process.exitcode})")
