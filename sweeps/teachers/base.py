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
    ref: TeacherRef


class TeacherSource(Protocol):
    def check(self) -> None:
        """Everything knowable before any run exists; TeacherError (one line) otherwise."""

    def acquire(self, data, ranks, experiment_id: str) -> Acquired:
        """The teacher on `ranks.host_device`, and its reference."""
