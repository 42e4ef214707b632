"""Teacher sources: where a job's teacher comes from (trained and reused by key, registered, a diffusers
folder or hub id, or an NVlabs EDM file), behind one interface."""
from .base import Acquired, TeacherSource
from .reference import TAG, TeacherError, TeacherRef

# The form of `teacher.source` -> its source (module.Class, imported when used). A new source: its module
# and one line here.
FORMS = (("train", "trained.TrainedTeacher", "train"),
         ("models:/", "registered.RegisteredTeacher", "models:/NAME@ALIAS (or models:/NAME/VERSION)"),
         ("diffusers:", "diffusers_source.DiffusersTeacher", "diffusers:PATH"),
         ("hf:", "diffusers_source.DiffusersTeacher", "hf:REPO[@REVISION]"),
         ("edm:", "edm_source.EDMTeacher", "edm:PATH.pkl or edm:https://URL (an NVlabs EDM network, with diffusion=edm)"))


def source_for(settings) -> TeacherSource:
    """The source that `settings.teacher_source` names, by its form; TeacherError (one line) for any other."""
    import importlib
    text = settings.teacher_source
    for prefix, where, _ in FORMS:
        if text == prefix or (prefix[-1] in "/:" and text.startswith(prefix)):
            module, cls = where.split(".")
            return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(settings)
    raise TeacherError(f"teacher.source must be {' or '.join(usage for _, _, usage in FORMS)}; got {text!r}")


__all__ = ["Acquired", "TAG", "TeacherError", "TeacherRef", "TeacherSource", "FORMS", "source_for"]
