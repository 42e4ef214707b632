"""Stage 3, the teacher: from the job's teacher source, or, for a resumed job, the one it started with.

Its reference is recorded on the student's run (tags `teacher_version`, `teacher_run_id`) and in the
job's record. A teacher samples with this job's sampler (`diffusion.teacher_sampler`, `diffusion.t0`):
a reused teacher keeps its training, not its sampling choice; a distilled student that teaches keeps
its own jump. A teacher trained while the store did not answer is registered once it does
(`teachers.handoff`): its reference is recorded after the distillation (`handed_over`).
"""
import logging

from ..teachers import TAG, Acquired, TeacherRef

log = logging.getLogger(__name__)


def acquire_teacher(s, run, inputs, ranks) -> Acquired:
    recorded = run.record.get(TAG)
    if recorded:  # a resumed job keeps the teacher it started with
        ref = TeacherRef.from_tag(recorded)
        teacher = Acquired(ref.load(ranks.host_device, s.registry.pickle), ref)
    else:
        teacher = inputs.teacher_source.acquire(inputs.data, ranks, run.experiment_id)
        if teacher.pending is None:
            record_teacher(run, teacher.ref)
        else:  # (what a job that runs out of memory now blames: the distillation's batch, not the teacher's)
            run.record.update(teacher_trained=True)
    model = teacher.model
    if model.info.get("role") != "student":
        family = s.teacher.family
        model.family = model.family.replace(sampler=family["sampler"], **({"t0": family["t0"]} if "t0" in family else {}))
    return teacher


def record_teacher(run, ref: TeacherRef) -> None:
    import mlflow
    run.record.update(**{TAG: ref.tag})
    mlflow.set_tags({TAG: ref.tag, "teacher_run_id": ref.run_id()})


def handed_over(run, teacher: Acquired) -> TeacherRef:
    """The teacher's reference, recorded: at once, or once a pending registration is done (waits for the store)."""
    if teacher.pending is None:
        return teacher.ref
    ref = teacher.pending.result()
    record_teacher(run, ref)
    return ref
