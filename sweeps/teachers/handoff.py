"""A trained teacher's hand-off to the store, when the store does not answer at the teacher's end.

Normally the teacher is registered the moment its training ends (`trained.TrainedTeacher`). Where the store
does not answer promptly then (a tracking outage), training does not wait for it: the job distils from the
teacher in memory at once, and a `Handoff` thread does what the store was owed, in order, as soon as it
answers: the teacher's remaining metrics (its outbox), then its registration, grid and description in its
own run. The job collects the result (`result()`) where it needs the teacher's version, after its
distillation, and only then releases the teacher's lock (a concurrent job with the same teacher waits for
the registration, as it would have).

A job killed before the hand-off finished resumes without a recorded teacher: it finds the teacher's run
interrupted and continues it from the teacher's last checkpoint (its final one), which registers it.
"""
import logging
import threading

log = logging.getLogger(__name__)


class Handoff:
    def __init__(self, work, lock):
        """`work()` returns the teacher's `TeacherRef`; `lock` (an ExitStack) is closed once it has."""
        self._work, self._lock = work, lock
        self._ref, self._error = None, None
        self._thread = threading.Thread(target=self._run, name="teacher-handoff", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._ref = self._work()
        except BaseException as e:  # noqa: BLE001 (handed to the job's thread by `result`)
            self._error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self):
        """The teacher's `TeacherRef`, once registered (waits for the store); its error otherwise. The lock is
        released either way."""
        if not self.done():
            log.info("waiting for the teacher's registration (the tracking store was away at its end)")
        self._thread.join()
        self._lock.close()
        if self._error is not None:
            raise self._error
        return self._ref
