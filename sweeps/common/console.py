"""What a job prints: its own story (our lines, the summary, the link) on the console, every library's
chatter only in the job's log file (`<hydra output dir>/run.log`, conf/hydra/job_logging/quiet.yaml): MLflow's
INFO lines, the registry's "Created version" prints, artifact progress bars, and libraries' warnings too
(MLflow's `UserWarning`s, urllib3's "Retrying ..." lines while a tracking server is away: the job's own
"the store does not answer" line says what a user needs). Another library's error still reaches the console.
`quiet_libraries()` puts the filter on the console handler, routes MLflow's own handler into the root logger's
and Python's `warnings` into logging."""
import contextlib
import io
import logging
import os

OURS = ("sweeps", "distill_core", "__main__")


class ConsoleFilter(logging.Filter):
    """Our records, and anyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.split(".")[0] in OURS


def quiet_libraries() -> None:
    """MLflow logs through its own console handler; send its records to the root logger's handlers instead
    (the console filter drops its INFO lines, the log file keeps them), and turn off its download bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.captureWarnings(True)  # (`warnings.warn` -> the `py.warnings` logger: the log file's)
    import mlflow  # noqa: F401 (it installs its handler on import: it must be there to be taken away)
    mlflow_logger = logging.getLogger("mlflow")
    for handler in list(mlflow_logger.handlers):
        mlflow_logger.removeHandler(handler)
    mlflow_logger.propagate = True
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())


@contextlib.contextmanager
def prints_to_log(name: str):
    """What a library prints to stderr inside the block (MLflow's "Created version '1' ..."), as INFO records."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if line.strip():
            logging.getLogger(name).info("%s", line)
