"""One lock helper for files and databases: held by one process at a time, released by the OS when its
holder dies.

A path is locked with `filelock` (an flock on Linux: a killed holder frees it; on a shared filesystem
it holds across machines only where the filesystem supports flock, e.g. NFSv4 with locking on, Lustre
with `flock` mounted). A database URL is locked where its users meet: beside a SQLite file, through a
PostgreSQL advisory lock or MySQL's GET_LOCK on the database itself (several machines).
"""
import contextlib
import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class Held(RuntimeError):
    """`exclusive(path, wait=False)`: another live process holds the lock."""


@contextlib.contextmanager
def exclusive(target, name: str = "", wait: bool = True):
    """Hold `target` (a file path, or a database URL with a lock `name`) for the `with` block; a path with
    `wait=False` raises `Held` at once when another process holds it."""
    text = str(target)
    if "://" not in text:
        with _file(Path(text), wait):
            yield
        return
    from sqlalchemy.engine import make_url
    url = make_url(text)
    backend = url.get_backend_name()
    if backend == "sqlite":
        with _file(Path(f"{Path(url.database or 'optuna.db').resolve()}.lock")):
            yield
    elif backend in ("postgresql", "mysql", "mariadb"):
        with _advisory(url, backend, name):
            yield
    else:
        log.warning("no lock for %s databases: its users are not serialised", backend)
        yield


@contextlib.contextmanager
def _file(path: Path, wait: bool = True):
    from filelock import FileLock, Timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise Held(str(path)) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _advisory(url, backend: str, name: str):
    """A session-level advisory lock on one connection, held while the lock is."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool
    key = int.from_bytes(hashlib.sha256(f"distill-sweeps:{name}".encode()).digest()[:8], "big", signed=True)
    if backend == "postgresql":
        lock, unlock = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"
    else:
        lock, unlock, key = "SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)", f"distill-sweeps:{key}"
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(lock), {"k": key})
            try:
                yield
            finally:
                conn.execute(text(unlock), {"k": key})
    finally:
        engine.dispose()
