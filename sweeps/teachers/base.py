"""What a teacher source is to the job: checked before any work, then acquired as a model plus a reference.

A source is built from the job's settings (`sweeps.teachers.source_for`). `check()` runs before the
student's run exists and raises `TeacherError` (one line) for anything that can be known then: a
missing version, a pickle the user did not allow, the wrong noise family, tampered weights.
`acquire(data, ranks, experiment_id)` returns the teacher and its `TeacherRef` (what the student's run
and version record). A new source is one new module with such a class, plus its line in `FORMS`.
"""
from typing import NamedTuple, Protocol

from distill_core.diffusion import DiffusionModel

from .reference import TeacherRef


class Acquired(NamedTuple):
    model: DiffusionModel
    ref: TeacherRef  # (None while `pending`)
    pending: object = None  # a `handoff.Handoff` whose `result()` is the ref: registration waits for the store


class TeacherSource(Protocol):
    def check(self) -> None:
        """Everything knowable before any run exists; TeacherError (one line) otherwise."""

    def acquire(self, data, ranks, experiment_id: str) -> Acquired:
        """The teacher on `ranks.host_device`, and its reference."""


def reuse_or_register(settings, key: str, source: str, ranks, load, register) -> Acquired:
    """The teacher a brought-in source (`source`, keyed by `key`) already registered, or `load()` registered
    now with `register(model)` (returns its version), under one lock per key: one registration per teacher."""
    import logging

    from ..common.locks import exclusive
    from .trained import find_registered
    name = settings.registry.teacher_name
    with exclusive(settings.cache_dir / "locks" / f"teacher-{key}.lock"):
        found = find_registered(name, key)
        if found is not None:
            logging.getLogger(__name__).info("reusing teacher %s version %s (%s)", name, found.version, source)
            ref = TeacherRef.of(found)
            return Acquired(ref.load(ranks.host_device, settings.registry.pickle), ref)
        model = load()
        return Acquired(model.to(ranks.host_device), TeacherRef(name, register(model)))
