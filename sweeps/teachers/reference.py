"""A teacher's stable reference: the version of a registered model it is (every source registers its
teacher, so a sweep's jobs reuse it). Recorded on the student's run and version as the tag
`teacher_version` = `NAME/VERSION`, the form stored runs, versions and job folders already carry;
everything downstream (resume, tags, the run description, `jumps`, `promote`'s comparable class)
reads it through this class rather than parsing the text."""
from dataclasses import dataclass

TAG = "teacher_version"  # the tag (and job-record key) that carries it


class TeacherError(RuntimeError):
    """A teacher that cannot be had or used: one line naming `teacher.source` and what to do."""


@dataclass(frozen=True)
class TeacherRef:
    name: str
    version: str

    def __post_init__(self):
        object.__setattr__(self, "version", str(self.version))  # (MLflow hands versions out as int or str)

    @classmethod
    def from_tag(cls, text: str) -> "TeacherRef":
        name, sep, version = str(text).rpartition("/")
        if not sep or not name or not version.isdigit():
            raise TeacherError(f"{TAG}={text!r} is not a registered teacher (NAME/VERSION)")
        return cls(name, version)

    @classmethod
    def of(cls, model_version) -> "TeacherRef":
        """From an MLflow ModelVersion."""
        return cls(model_version.name, str(model_version.version))

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def page(self) -> str:
        """Its page in the MLflow UI, relative to the UI's root."""
        return f"#/models/{self.name}/versions/{self.version}"

    def model_version(self):
        from ..tracking.registry import version_of
        return version_of(self.uri)

    def run_id(self) -> str:
        """The run that registered it (a trained teacher's own run)."""
        return self.model_version().run_id or ""

    def load(self, device: str = "cpu", allow_pickle: bool = False):
        """The teacher, from its weights checked against their recorded sha256 (`registry.load`)."""
        from ..tracking.registry import load
        return load(self.uri, device, allow_pickle=allow_pickle)
