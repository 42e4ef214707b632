"""Stage 1, the inputs: everything that can be wrong before any run exists, each as one line and exit 2."""
from typing import NamedTuple

from ..common.errors import fail


class Inputs(NamedTuple):
    data: object  # distill_core.data.TensorData
    teacher_source: object  # teachers.TeacherSource, checked
    experiment_id: str


def check_inputs(s) -> Inputs:
    """The data, the FID weights, the tracking store and the user's rights on it, then the teacher source
    (a registered teacher is found, checked and loaded now). Nothing is started before this returns."""
    from distill_core import data as core_data

    from .. import teachers
    try:
        data = s.data.load(s.seed)
    except core_data.DataError as e:
        fail(str(e))
    if s.eval.fid or s.eval.kid:  # a missing or foreign weights file fails now, not after the teacher
        from distill_core import fid as core_fid
        try:
            core_fid.resolve_weights(s.eval.inception_weights)
            if s.eval.fid_ref:
                core_fid.load_reference(s.eval.fid_ref)
        except (core_fid.WeightsError, core_fid.StatsError) as e:
            fail(str(e))
    experiment_id = open_store(s.tracking)
    try:
        source = teachers.source_for(s)
        source.check()
    except teachers.TeacherError as e:
        fail(str(e))
    return Inputs(data, source, experiment_id)


def open_store(tracking) -> str:
    """The tracking store answers and the experiment exists (it is created): its id; else one line."""
    from ..tracking import store
    try:
        return store.setup(tracking.uri, tracking.experiment)
    except store.AuthError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 (a store that does not answer fails in many types)
        if store.denied(e):
            fail(f"tracking.uri={tracking.uri}: user {store.user()} may not use experiment {tracking.experiment} "
                 f"({e.error_code}); ask its owner for access")
        reason = " ".join(str(e).split())
        if "readonly database" in reason or read_only(str(tracking.uri)):
            fail(f"tracking.uri={tracking.uri}: the store is read-only (the file, its folder or its filesystem); "
                 f"point tracking.uri at a store this user can write")
        reason = reason if len(reason) <= 200 else reason[:200].rsplit(" ", 1)[0] + " ..."  # (whole words)
        fail(f"tracking.uri={tracking.uri}: the tracking store does not answer ({type(e).__name__}: {reason})")


def read_only(uri: str) -> bool:
    """A SQLite store this process cannot write: the file, its folder (SQLite's journal files) or a read-only mount."""
    import os
    if not uri.startswith("sqlite:///"):
        return False
    db = os.path.abspath(uri[len("sqlite:///"):])
    folder = os.path.dirname(db)
    if not os.path.isdir(folder):
        return False
    return (bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
            or (os.path.exists(db) and not os.access(db, os.W_OK)))
