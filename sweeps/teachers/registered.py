"""A registered teacher: `teacher.source=models:/NAME@ALIAS` or `models:/NAME/VERSION`.

Checked before any run exists, once for every path that loads a registered teacher: the version
exists, it is not a pickle the user did not allow, its noise family is the job's, and its weights match
their recorded sha256 (they are downloaded and loaded then, and handed to the job as they are).
"""
from typing import Optional

from .base import Acquired
from .reference import TeacherError, TeacherRef


def check_registered(version, allow_pickle: bool, family: Optional[str], source: str) -> None:
    """The registered-teacher checks: pickle-only (unless allowed) and the noise family."""
    from ..tracking.registry import is_pickle_only
    if is_pickle_only(version) and not allow_pickle:
        raise TeacherError(f"teacher.source: {source} is stored only as a pickle (registered before the weights "
                           f"format), and loading it runs code from the store; set registry.pickle=true if you trust it")
    found = version.tags.get("family", "vp")  # (versions registered before families existed are VP)
    if family is not None and found != family:
        raise TeacherError(f"teacher.source: {source} is a {found} teacher; it cannot teach with diffusion={family} "
                           f"(use diffusion={found}, or a {family} teacher)")


class RegisteredTeacher:
    def __init__(self, settings):
        self.uri, self.family = settings.teacher_source, settings.family
        self.classes, self.data_name = settings.teacher.num_classes, settings.data.name
        self.allow_pickle, self.device = settings.registry.pickle, settings.device if settings.devices == 1 else "cpu"
        self.acquired = None

    def check(self) -> None:
        import mlflow

        from ..tracking.registry import RegistryError, version_of
        try:
            version = version_of(self.uri)
        except (mlflow.exceptions.MlflowException, ValueError):
            raise TeacherError(f"teacher.source: no registered model at {self.uri!r} "
                               f"(expected models:/NAME@ALIAS or models:/NAME/VERSION of an existing version)") from None
        check_registered(version, self.allow_pickle, self.family, self.uri)
        from ..settings.checks import teacher_classes_problem
        classes = int(version.tags["num_classes"]) if version.tags.get("num_classes") else None
        problem = teacher_classes_problem(self.uri, classes, self.classes, self.data_name)
        if problem:
            raise TeacherError(problem)
        ref = TeacherRef.of(version)
        try:  # a tampered or missing weights file fails now, before any run exists
            self.acquired = Acquired(ref.load(self.device, self.allow_pickle), ref)
        except RegistryError as e:
            raise TeacherError(f"teacher.source: {e}") from None

    def acquire(self, data, ranks, experiment_id: str) -> Acquired:
        if self.acquired is None:
            self.check()
        model, ref = self.acquired.model, self.acquired.ref
        return Acquired(model.to(ranks.host_device), ref)
