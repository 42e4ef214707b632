"""The Outbox on its own (no tracking server): calls delivered in order, consecutive metrics batched, a
refused connection retried until the store is back, and past the limit a spill that a resumed job
replays. Ordering and replay go to a real SQLite store; the refusals come from a stand-in client that
refuses while it is told to be down, as a server outage does (the end-to-end outage test stops a real
`mlflow server`)."""
import os
import threading
import time

import mlflow
import processes
import pytest
from mlflow.tracking import MlflowClient

from sweeps.tracking.outbox import Outbox, TrackingOutage, replay


class Store:
    """Delivers to a real MLflow client and refuses connections (ConnectionRefusedError) while `down`."""

    def __init__(self, client):
        self.client, self.down, self.calls, self.refused = client, threading.Event(), [], 0

    def _send(self, what, fn, *args, **kwargs):
        if self.down.is_set():
            self.refused += 1
            raise ConnectionRefusedError(111, "Connection refused")
        self.calls.append(what)
        return fn(*args, **kwargs)

    def log_batch(self, run_id, metrics=(), synchronous=True):
        return self._send(("metrics", len(metrics)), self.client.log_batch, run_id, metrics=metrics, synchronous=True)

    def set_tag(self, run_id, key, value):
        return self._send(("tag", key), self.client.set_tag, run_id, key, value)

    def log_artifact(self, run_id, path, folder):
        return self._send(("artifact", folder), self.client.log_artifact, run_id, path, folder)

    def get_run(self, run_id):
        return self._send(("get_run",), self.client.get_run, run_id)


@pytest.fixture
def run(tmp_path):
    mlflow.set_tracking_uri(processes.sqlite(tmp_path))
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("outbox", (tmp_path / "art").as_uri())).info.run_id
    yield client, run_id
    mlflow.set_tracking_uri(None)


def test_calls_arrive_in_order_and_consecutive_metrics_go_as_one_batch(run, tmp_path):
    client, run_id = run
    store = Store(client)
    store.down.set()  # hold delivery back until everything is queued, so the batching is deterministic
    box = Outbox(run_id, retry_s=0.05, client=store)
    for step in range(1, 4):
        box.metrics({"loss": 1.0 / step, "lr": 0.1}, step)
    box.call(lambda c: c.set_tag(run_id, "steps", "2"))
    (tmp_path / "ckpt.pt").write_bytes(b"first")
    box.artifact(tmp_path / "ckpt.pt", "checkpoints")
    (tmp_path / "new.pt").write_bytes(b"rewritten")
    os.replace(tmp_path / "new.pt", tmp_path / "ckpt.pt")  # rewritten as checkpoints are (atomically): queued as it was
    box.metrics({"loss": 0.1}, 4)
    store.down.clear()
    box.close()
    assert store.calls == [("metrics", 6), ("tag", "steps"), ("artifact", "checkpoints"), ("metrics", 1)]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]
    assert client.get_run(run_id).data.tags["steps"] == "2"
    local = client.download_artifacts(run_id, "checkpoints/ckpt.pt", str(tmp_path / "down"))
    assert open(local, "rb").read() == b"first"


def test_a_refused_connection_is_retried_until_the_store_answers_and_nothing_is_lost(run):
    client, run_id = run
    store = Store(client)
    box = Outbox(run_id, outage_limit_s=60, retry_s=0.05, client=store)
    store.down.set()
    for step in range(1, 51):
        box.metrics({"loss": float(step)}, step)
        assert box.stalled() < 60
    deadline = time.time() + 10
    while store.refused < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert store.refused >= 3 and box.stalled() > 0, "the outbox keeps retrying while the store is away"
    box.raise_if_stalled()  # within the limit: training goes on
    store.down.clear()
    box.close()
    assert box.stalled() == 0 and box.outages and box.outages[-1][1] is not None
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, 51))


def test_past_the_limit_the_job_stops_and_a_resumed_job_replays_what_was_kept(run, tmp_path):
    client, run_id = run
    store = Store(client)
    box = Outbox(run_id, outage_limit_s=0.2, retry_s=0.05, client=store)
    box.metrics({"loss": 1.0}, 1)
    box.drain(timeout=10)
    store.down.set()
    for step in range(2, 6):
        box.metrics({"loss": float(step)}, step)
    time.sleep(0.4)
    with pytest.raises(TrackingOutage, match="has not answered for"):
        box.raise_if_stalled()
    with pytest.raises(TrackingOutage):
        box.close()
    spill = tmp_path / "undelivered_metrics.jsonl"
    assert box.spill(spill) == 4 and len(spill.read_text().splitlines()) == 4
    assert replay(spill, run_id) == 4 and not spill.exists()
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4, 5]
    assert replay(spill, run_id) == 0, "nothing twice"


class SlowStore(Store):
    """A store that answers, slowly (a busy server): each call takes 0.2 s."""

    def _send(self, what, fn, *args, **kwargs):
        time.sleep(0.2)
        return super()._send(what, fn, *args, **kwargs)


def test_what_was_reported_before_a_checkpoint_is_in_the_store_before_it_is_written(run):
    """A `kill -9` right after a checkpoint must lose no metric: the resume from that checkpoint reports only
    the updates after it. So `on_save` (the core's hook before it writes one) waits for the queue."""
    from sweeps.tracking.run_logger import RunLogger
    client, run_id = run
    logger = RunLogger(run_id, outbox=Outbox(run_id, retry_s=0.05, client=SlowStore(client)))
    for step in range(1, 6):  # five separate calls (a tag between metrics: no batching), ~1 s to deliver
        logger.on_metrics({"distill/loss": 1.0 / step}, step)
        logger.out.call(lambda c, s=step: c.set_tag(run_id, "update", str(s)))
    logger.on_save("distill_latest.pt")
    assert [m.step for m in client.get_metric_history(run_id, "distill/loss")] == [1, 2, 3, 4, 5]
    assert client.get_run(run_id).data.tags["update"] == "5"
    logger.close()


def test_a_resumed_job_reports_again_only_what_the_store_does_not_have(run):
    """A kill can land after step 10's metrics reached the store but before its checkpoint was written: the
    resume from the step-5 checkpoint reports steps 10 and 15 again, and the phase's curve again. What the
    run already has is skipped (`logged_steps`), what it lacks arrives: every step once."""
    from sweeps.tracking.run_logger import RunLogger, logged_steps
    client, run_id = run
    first = RunLogger(run_id)
    for step in (5, 10):
        first.on_metrics({"distill/loss": 1.0 / step}, step)
    first.on_phase_metrics(1, 4, 10, {"gap": 0.3, "teacher_gap": 0.4})
    resumed = RunLogger(run_id, logged=logged_steps(run_id))
    for step in (10, 15):
        resumed.on_metrics({"distill/loss": 1.0 / step}, step)
    resumed.on_phase_metrics(1, 4, 10, {"gap": 0.3, "teacher_gap": 0.4})
    resumed.on_phase_metrics(2, 2, 15, {"gap": 0.5, "teacher_gap": 0.6})
    history = {key: [m.step for m in client.get_metric_history(run_id, key)]
               for key in client.get_run(run_id).data.metrics}
    assert history["distill/loss"] == [5, 10, 15] and history["gap/4step"] == [10] and history["gap/2step"] == [15]
    assert all(len(steps) == len(set(steps)) for steps in history.values()), history


class BlackHole:
    """A port that accepts connections and never answers (a hung server, a half-open network path)."""

    def __init__(self):
        import socket
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def close(self):
        self.server.close()


def test_a_store_that_stops_answering_never_holds_the_training_thread_past_the_outbox_bound(run, monkeypatch):
    """A real MLflow client whose store accepts and never answers (MLflow's own HTTP retries and timeouts at
    their defaults, minutes): before a checkpoint the training thread waits at most the outbox's `answer_s`
    from the attempt's start, then goes on; the outbox records the wait and counts the outage from that attempt."""
    from mlflow.tracking import MlflowClient as Client

    from sweeps.tracking.run_logger import RunLogger
    hole = BlackHole()
    try:
        box = Outbox("0" * 32, outage_limit_s=60, retry_s=0.05, answer_s=0.5, client=Client(hole.url))
        logger = RunLogger("0" * 32, outbox=box)
        logger.on_metrics({"distill/loss": 1.0}, 1)
        logger.on_save("distill_latest.pt")
        (why, waited, ended), = box.waits
        assert why == "before checkpoint distill_latest.pt" and ended.startswith("the store does not answer")
        bound = box.answer_s  # a wait ends within `answer_s` of the hung attempt's start (itself before the wait)
        assert waited <= 2 * bound, box.waits
        assert not box.answering() and box.stalled() >= box.answer_s, "the hung attempt is the outage's start"
        logger.on_metrics({"distill/loss": 0.5}, 2)
        logger.on_save("distill_latest.pt")
        assert box.waits[-1][1] <= 2 * bound and box.waits[-1][2].startswith("the store does not answer")
    finally:
        hole.close()


def test_a_store_that_answers_is_waited_for_before_a_checkpoint_and_the_wait_is_recorded(run):
    client, run_id = run
    from sweeps.tracking.run_logger import RunLogger
    logger = RunLogger(run_id, outbox=Outbox(run_id, retry_s=0.05, client=SlowStore(client)))
    logger.on_metrics({"distill/loss": 1.0}, 1)
    logger.on_save("distill_latest.pt")
    assert logger.out.waits[-1][0] == "before checkpoint distill_latest.pt" and logger.out.waits[-1][2] == "delivered"
    assert [m.step for m in client.get_metric_history(run_id, "distill/loss")] == [1]
    logger.close()


class SlowUpload(Store):
    """An artifact upload that takes `upload_s` (a GB-sized checkpoint); every other call answers at once, until
    `down` (the store stops answering in the middle of the upload)."""

    def __init__(self, client, upload_s):
        super().__init__(client)
        self.upload_s = upload_s

    def log_artifact(self, run_id, path, folder):
        time.sleep(self.upload_s)
        return super().log_artifact(run_id, path, folder)


def test_a_large_upload_that_moves_is_not_an_outage_and_one_whose_store_stops_answering_is(run, tmp_path):
    """A large artifact takes longer than `answer_s` to move while the store answers its probes: no outage is
    declared, none is counted, and the upload arrives. If the store stops answering mid-upload, the outage
    counts from its last answer."""
    client, run_id = run
    store = SlowUpload(client, upload_s=3.0)  # (three times the answer time; a probe every 0.5 s: slack for a busy CI)
    box = Outbox(run_id, outage_limit_s=60, retry_s=0.05, answer_s=1.0, client=store)
    (tmp_path / "big.pt").write_bytes(b"x" * 1000)
    box.artifact(tmp_path / "big.pt", "checkpoints")
    seen = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        seen.append(box.stalled())
        time.sleep(0.05)
    assert box.drain(timeout=10)
    assert max(seen) == 0.0 and box.outages == [], "a moving upload whose store answers is not an outage"
    assert ("get_run",) in store.calls, "the store was asked while the upload moved"
    assert ("artifact", "checkpoints") in store.calls
    box.artifact(tmp_path / "big.pt", "checkpoints")
    time.sleep(0.7)
    store.down.set()  # the store goes away during the second upload
    time.sleep(2.0)
    assert box.stalled() >= box.answer_s, "an upload whose store stopped answering counts as an outage"
    store.down.clear()
    box.close()
