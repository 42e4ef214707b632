"""Real servers the tests share: one PostgreSQL per test run (each test its own databases), `mlflow server`
processes on 127.0.0.1. PostgreSQL skips, saying why, where Debian's server is not installed
(`scripts/setup.sh` installs it where apt works)."""
import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres:
    """A PostgreSQL server of this test run; `database(name)` creates a fresh database and gives its URL."""

    def __init__(self, bin_dir: Path, root: Path, port: int):
        self.bin_dir, self.root, self.port = bin_dir, root, port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
        self._numbers = itertools.count()

    @classmethod
    def start(cls):
        bin_dir = Path(PG_BIN[-1])
        root = Path(tempfile.mkdtemp(prefix="distill-pg-"))  # pytest's tmp folders are root-only (0700)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        server = cls(bin_dir, root, free_port())
        subprocess.run(as_postgres([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                                    "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
        subprocess.run(as_postgres([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w",
                                    "-o", f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1", "start"]),
                       check=True, capture_output=True)
        return server

    def database(self, name: str) -> str:
        """A new, empty database (its name made unique in this run): its SQLAlchemy URL."""
        unique = f"{name}_{next(self._numbers)}"
        subprocess.run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        unique], check=True, capture_output=True)
        return f"{self.url}/{unique}"

    def stop(self):
        subprocess.run(as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_server():
    """The session's PostgreSQL (a generator for a session-scoped fixture)."""
    if not PG_BIN:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql; scripts/setup.sh does it)")
    server = Postgres.start()
    try:
        yield server
    finally:
        server.stop()


def start_mlflow_server(root: Path, backend: str, *extra, env=None, port=None):
    """A real `mlflow server` on 127.0.0.1 serving artifacts from `root`; (process, url) once it answers."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", *extra, "--backend-store-uri", backend,
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            env=server_env(env), stdout=open(root / "server.log", "a"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])


def server_env(env=None) -> dict:
    """MLflow 3's server also starts a GenAI job runner (seven huey consumer processes, each importing MLflow);
    nothing here uses it (as docker/compose.yaml)."""
    return {**(env if env is not None else os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def served_predictions(uri: str, store: Path, inputs, timeout: float = 180):
    """The `predictions` that `mlflow models serve -m uri` (a real process on 127.0.0.1, the store's SQLite
    registry) answers to `{"inputs": inputs}`."""
    import json
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
    log = open(store / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=store, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + timeout, json.dumps({"inputs": inputs}).encode()
        while time.time() < deadline and server.poll() is None:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                                 headers={"Content-Type": "application/json"})
                return json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
            except OSError:
                time.sleep(1)
        raise AssertionError((store / "serve.log").read_text()[-3000:])
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


class Switch:
    """A TCP relay on 127.0.0.1 in front of a server's port, switched by the test: `pass` relays; `hang` is a port
    that takes connections and requests and never answers (every connection, the pooled ones included, goes
    silent). Back to `pass`, the silent connections are closed (their clients see a reset and reconnect). A
    server stopped behind it looks like one that resets every connection."""

    def __init__(self, upstream_port: int):
        self.upstream, self.mode = int(upstream_port), "pass"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = []
        import threading
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str) -> None:
        assert mode in ("pass", "hang")
        with self._lock:
            self.mode, silent = mode, list(self.connections) if mode == "pass" else []
            if mode == "pass":
                self.connections = []
        for conn in silent:
            _close(conn)

    def _accept(self) -> None:
        import threading
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import threading
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            if self.mode == "pass":
                _close(conn)  # (the server is down: the client's request fails at once)
                return
            upstream = None
        threading.Thread(target=self._relay, args=(upstream, conn), daemon=True).start() if upstream else None
        self._relay(conn, upstream)

    def _relay(self, source, target) -> None:
        """Bytes from `source` to `target` while passing; while hanging, read and dropped (nothing answers)."""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.mode == "pass" and target is not None:
                    target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            if sock is not None and self.mode == "pass":
                _close(sock)

    def close(self) -> None:
        _close(self.listener)
        self.set("pass")


def _close(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
