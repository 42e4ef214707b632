"""Ctrl-C and SIGTERM: the runs a process has open end KILLED, not FAILED (the job stays resumable)."""
import threading
from contextlib import contextmanager

import mlflow

from .store import flush


@contextmanager
def killed_on_interrupt():
    """Ctrl-C or SIGTERM: the runs this process has open end KILLED, not FAILED (the job stays resumable)."""
    import signal
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except BaseException as e:  # a signal can surface as another error (raised while a library handled it)
        if not isinstance(e, KeyboardInterrupt) and not INTERRUPTED.is_set():
            raise
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
