"""Tracking off the training thread: calls queued in order, delivered by one background thread.

The training thread only appends to a queue (microseconds). A daemon thread delivers: consecutive
metrics go out as one `log_batch` (up to MLflow's 1,000 per request), anything else (a tag, an
artifact, an image) as its own call, all in the order they were made. A call that fails because the
store does not answer (a tracking server restarting, a network cut) is retried every `retry_s`
until it goes through, so an outage neither stalls training nor loses a metric; files are hard-linked
(else copied) when queued, so a checkpoint rewritten meanwhile is uploaded as it was.

The training thread never waits on a store that does not answer. It waits only where a guarantee needs it
(`settle`: before a checkpoint, everything reported so far is in the store), and only while the store answers
promptly: a delivery attempt in flight for `answer_s` (a few seconds), or one that failed, ends the wait at
once. MLflow's own HTTP retries can keep one attempt going for minutes, so the outbox does not wait to be told
by a failure: an attempt that has not answered within `answer_s` counts as the start of an outage. Every wait
is recorded (`waits`, and a line in the job's log file: how long, why, how it ended).

A large artifact (a published-size checkpoint is over a GB) can take longer than `answer_s` to move even when
the store is fine. While an upload is in flight the outbox asks the store something cheap every `answer_s / 2`
from a second thread (`_Probe`): as long as those questions are answered, the upload is moving, not an outage;
once they stop being answered the outage counts from the last answer.

How long an outage may last is the job's choice (`tracking.outage_limit_s`): past it, `stalled()`
says so and the job stops after its next checkpoint, with one line; what is still queued is written
to a file the resumed job delivers first (`replay`).

MLflow's own `synchronous=False` logging is a similar queue, but it drops a batch after MLflow's HTTP
retries (a few minutes) and covers metrics only; tags, artifacts and images would still block.
"""
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
waits_log = logging.getLogger("tracking.waits")  # (not one of the console's loggers: the job's log file only)

BATCH = 1000  # MLflow's limit of metrics per log_batch
ANSWER_S = 5.0  # a delivery attempt in flight this long means the store does not answer (`Outbox.answer_s`)


class TrackingOutage(RuntimeError):
    """The tracking store has not answered for longer than the job allows."""


class Outbox:
    def __init__(self, run_id: str, outage_limit_s: float = 600.0, retry_s: float = 2.0, tracking_uri=None,
                 client=None, answer_s: float = ANSWER_S):
        """`client`: what delivers (default: an MlflowClient of `tracking_uri`, made in the delivering thread);
        `answer_s`: how long one delivery attempt may take before the store counts as not answering."""
        self.run_id, self.outage_limit_s, self.retry_s = run_id, float(outage_limit_s), float(retry_s)
        self.answer_s = float(answer_s)
        self._attempt_since = None  # monotonic start of the delivery attempt in flight
        self._answered_at = None  # monotonic time the store last answered a probe during an upload in flight
        self.waits = []  # (why, seconds, how it ended): every time the training thread waited on the outbox
        self.tracking_uri, self.client = tracking_uri, client
        self._queue: "queue.Queue" = queue.Queue()
        self._pending = 0  # queued, not yet delivered
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._failing_since = None  # monotonic time of the first failed attempt of the current outage
        self.outages = []  # (start, end) wall times of the outages seen, for the job's log
        self._staging = Path(tempfile.mkdtemp(prefix="distill-outbox-"))
        self._thread = threading.Thread(target=self._deliver, name="tracking-outbox", daemon=True)
        self._thread.start()

    # --- the training thread's side: never blocks ---
    def metrics(self, metrics: dict, step: int, model_id: str | None = None) -> None:
        ts = int(time.time() * 1000)
        self._put(("metrics", [(k, float(v), ts, int(step), model_id) for k, v in metrics.items()]))

    def call(self, fn, *args, **kwargs) -> None:
        """Any other tracking call, `fn(client, *args, **kwargs)`, delivered in order."""
        self._put(("call", (fn, args, kwargs)))

    def artifact(self, path, folder: str) -> None:
        """A file as it is now (hard link or copy), uploaded to the run's `folder`."""
        path = Path(path)
        staged = self._staging / f"{time.monotonic_ns()}" / path.name
        staged.parent.mkdir()
        try:
            os.link(path, staged)
        except OSError:
            shutil.copy2(path, staged)
        self._put(("artifact", (staged, folder)))

    def stalled(self) -> float:
        """Seconds the current outage has lasted (0 when the store answers): since the first failed attempt,
        or since the start of an attempt that has not answered within `answer_s`."""
        now, since, attempt = time.monotonic(), self._failing_since, self._attempt_since
        if since is not None:
            return now - since
        if attempt is not None:
            last = max(attempt, self._answered_at or attempt)  # (an upload whose probes are answered is moving)
            if now - last >= self.answer_s:
                return now - last
        return 0.0

    def answering(self) -> bool:
        """The store takes what is sent promptly: no failed attempt, none in flight for `answer_s` or longer."""
        return self.stalled() == 0.0

    def settle(self, why: str) -> bool:
        """Wait until everything queued is delivered, while the store answers promptly (`answering`); True if
        it was. A wait on a store that has stopped answering ends within `answer_s` of its last attempt's start.
        The wait is recorded (`waits`, the job's log file)."""
        start = time.monotonic()
        with self._idle:
            while self._pending and self.answering():
                attempt = self._attempt_since
                left = self.answer_s - (time.monotonic() - attempt) if attempt is not None else self.answer_s
                self._idle.wait(max(min(left, 0.5), 0.01))
            delivered = not self._pending
        seconds = time.monotonic() - start
        ended = "delivered" if delivered else "the store does not answer: kept in the outbox"
        self.waits.append((why, seconds, ended))
        level = logging.INFO if seconds >= 0.1 or not delivered else logging.DEBUG  # (a checkpoint's usual 0.00x s: quiet)
        waits_log.log(level, "tracking: the training thread waited %.3f s (%s): %s", seconds, why, ended)
        return delivered

    def raise_if_stalled(self) -> None:
        """Raise TrackingOutage when the store has not answered for longer than allowed."""
        lasted = self.stalled()
        if lasted > self.outage_limit_s:
            raise TrackingOutage(f"the tracking store has not answered for {lasted:.0f} s "
                                 f"(tracking.outage_limit_s={self.outage_limit_s:g})")

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is delivered; False if `timeout` (default: the outage limit
        from now, or what is left of it) passes first."""
        deadline = time.monotonic() + (timeout if timeout is not None else
                                       max(self.outage_limit_s - self.stalled(), 0.0) + self.retry_s)
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        """Deliver everything queued; TrackingOutage if the store stays away past the limit."""
        if not self.drain():
            self.raise_if_stalled()
            raise TrackingOutage("the tracking store did not take the last metrics in time")
        shutil.rmtree(self._staging, ignore_errors=True)

    def spill(self, path) -> int:
        """Write what is still queued (metrics only: the rest is redone by a resumed job) to `path`
        as JSON lines, for `replay`; returns how many metric values."""
        items = []
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "metrics":
                items.extend(payload)
        items = list(self._in_flight_metrics) + items
        if items:
            tmp = Path(path).with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(m) + "\n" for m in items))
            os.replace(tmp, path)
        return len(items)

    # --- the delivering thread ---
    _in_flight_metrics = ()

    def _put(self, item) -> None:
        with self._lock:
            self._pending += 1
        self._queue.put(item)

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            if not self._pending:
                self._idle.notify_all()

    def _deliver(self) -> None:
        from mlflow.tracking import MlflowClient
        client = self.client or MlflowClient(self.tracking_uri)
        while True:
            kind, payload = self._queue.get()
            taken = 1
            if kind == "metrics":  # take the metrics queued right behind it too: one request
                batch = list(payload)
                while len(batch) < BATCH:
                    try:
                        nxt = self._queue.queue[0]
                    except IndexError:
                        break
                    if nxt[0] != "metrics" or len(batch) + len(nxt[1]) > BATCH:
                        break
                    batch.extend(self._queue.get_nowait()[1])
                    taken += 1
                self._in_flight_metrics = tuple(batch)
                self._until_delivered(lambda: log_batch(client, self.run_id, batch))
                self._in_flight_metrics = ()
            elif kind == "artifact":
                staged, folder = payload
                with _Probe(self, client):
                    self._until_delivered(lambda: client.log_artifact(self.run_id, str(staged), folder))
                shutil.rmtree(staged.parent, ignore_errors=True)
            else:
                fn, args, kwargs = payload
                self._until_delivered(lambda: fn(client, *args, **kwargs))
            self._done(taken)

    def _until_delivered(self, send) -> None:
        while True:
            started = self._attempt_since = time.monotonic()
            try:
                send()
            except Exception as e:  # noqa: BLE001 (the store's errors come in many types)
                self._attempt_since = None
                if not unreachable(e):
                    log.warning("tracking: a call failed and was dropped: %s", str(e)[:300])
                    self._recovered()
                    return
                self._outage_began(started, type(e).__name__)
                time.sleep(self.retry_s)
                continue
            self._attempt_since = None
            late = time.monotonic() - max(started, self._answered_at or started) >= self.answer_s
            if late and self._failing_since is None:
                self._outage_began(started, f"no answer within {self.answer_s:g} s")  # (it answered in the end)
            self._recovered()
            return

    def _outage_began(self, attempt_start: float, why: str) -> None:
        """The store stopped answering: at this attempt's start if it hung past `answer_s`, else now."""
        if self._failing_since is not None:
            return
        now = time.monotonic()
        self._failing_since = attempt_start if now - attempt_start >= self.answer_s else now
        self.outages.append([time.time() - (now - self._failing_since), None])
        log.warning("tracking: the store does not answer (%s); training goes on, metrics are kept "
                    "and sent when it is back (limit %g s)", why, self.outage_limit_s)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            lasted = time.monotonic() - self._failing_since
            self.outages[-1][1] = time.time()
            log.warning("tracking: the store answers again after %.0f s; delivering what was kept", lasted)
            self._failing_since = None


class _Probe:
    """While an upload is in flight: a cheap question to the store every `answer_s / 2` from a thread of its own;
    each answer sets the outbox's `_answered_at` (the upload is moving, the store answers)."""

    def __init__(self, outbox: Outbox, client):
        self.outbox, self.client, self.done = outbox, client, threading.Event()
        self.thread = threading.Thread(target=self._ask, name="tracking-probe", daemon=True)

    def __enter__(self):
        self.outbox._answered_at = None
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.outbox._answered_at = None

    def _ask(self) -> None:
        while not self.done.wait(self.outbox.answer_s / 2):
            try:
                self.client.get_run(self.outbox.run_id)
            except Exception:  # noqa: BLE001 (not answering: the outage counts from the last answer)
                continue
            if not self.done.is_set():
                self.outbox._answered_at = time.monotonic()


def log_batch(client, run_id: str, items) -> None:
    from mlflow.entities import Metric
    client.log_batch(run_id, metrics=[Metric(k, v, ts, step, model_id=model_id) for k, v, ts, step, model_id in items],
                     synchronous=True)


def unreachable(e: Exception) -> bool:
    """The store did not answer (connection refused or reset, timeout, 5xx after MLflow's retries),
    as opposed to refusing the call (a 4xx: bad input, permission), which retrying cannot fix."""
    import requests
    if isinstance(e, (ConnectionError, TimeoutError, OSError, requests.exceptions.RequestException)):
        return True
    code = getattr(e, "error_code", "") or ""
    if code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "SERVICE_UNDER_MAINTENANCE"):
        return True
    text = str(e)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "Connection aborted",
                                   "Read timed out", "database is locked", "503", "502", "504"))


def replay(path, run_id: str) -> int:
    """Deliver the metrics a job spilled when it stopped on an outage (`Outbox.spill`); returns how many."""
    path = Path(path)
    if not path.is_file():
        return 0
    from mlflow.tracking import MlflowClient
    items = [tuple(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    client = MlflowClient()
    for i in range(0, len(items), BATCH):
        log_batch(client, run_id, items[i:i + BATCH])
    path.unlink()
    return len(items)
