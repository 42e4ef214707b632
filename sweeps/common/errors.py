"""The bad-input rule, written once: one line naming the key and what is allowed, exit code 2.

Every entry point uses it: the job (inside Hydra), the sweep's parent-run callback and sweeper, and
the command-line tools. A tool's `main(argv) -> int` wrapped in `command` returns 2 instead of leaving
the process, so it can be called from Python (and tests) like any function. `disk_full` tells a full disk
among the many errors it surfaces as (the job's endings and the teacher's training both ask).
"""
import errno
import functools
import sys
from typing import NoReturn


def fail(message: str) -> NoReturn:
    """Bad input: one `error:` line on stderr (secrets redacted), exit code 2; call it before any work."""
    from .redaction import redact
    print(f"error: {redact(str(message))}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def command(main):
    """A tool's `main(argv) -> int` whose `fail(...)` (and argparse's usage errors) return 2."""
    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except SystemExit as e:
            if e.code == 2:
                return 2
            raise
    return wrapped


def disk_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from or while handling, is a full disk (or a full SQLite file)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or "database or disk is full" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
