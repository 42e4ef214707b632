"""The job's stages and the teacher-source interface, called in this process (no subprocess): typed settings
from the Hydra config, each stage's effect on the run and the job's record, run-time failures ended in one
place, teacher sources looked up by the form of `teacher.source`, the registered-teacher checks."""
import dataclasses
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient

from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig
from distill_core.loop import DivergenceError
from sweeps import registry
from sweeps.job.distil import distil, student_model
from sweeps.job.endings import endings
from sweeps.job.finish import finish
from sweeps.job.inputs import check_inputs
from sweeps.job.register import register
from sweeps.job.student_run import student_run
from sweeps.job.teacher import acquire_teacher
from sweeps.ranks.launch import Ranks, WorkerError
from sweeps.settings.hydra import from_hydra, job_key, with_classes, without_hydra
from sweeps.settings.types import DataSettings
from sweeps.teachers import TeacherError, TeacherRef, source_for
from sweeps.teachers.registered import RegisteredTeacher
from sweeps.teachers.trained import TrainedTeacher
from test_sweeps import compose

TINY = ["+debug=tiny", "model.width=8", "tracking.system_metrics=false", "teacher.updates=20"]


def settings(tmp_path, *overrides):
    return from_hydra(compose([*TINY, f"tracking.uri={processes.sqlite(tmp_path)}", *overrides], tmp_path))


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_settings_are_typed_once_and_carry_what_the_job_derives_from_hydra(here):
    cfg = compose([*TINY, f"tracking.uri={processes.sqlite(here)}", "distill.mu_s=0.9"], here)
    s = from_hydra(cfg)
    assert isinstance(s.distill, DistillConfig) and s.distill.mu_s == 0.9 and s.distill.schedule == [8, 2, 1]
    assert s.teacher.updates == 20 and s.teacher.width == 8 and s.family == "vp" and s.device == "cpu"
    assert s.data == DataSettings("digits", "train", None) and s.tracking.uri == f"sqlite:///{here}/mlflow.db"
    assert s.eval.gap_samples == 8 and s.registry.name == "distill-students" and s.teacher_source == "train"
    assert s.key == job_key(with_classes(without_hydra(cfg), None)) and s.job_dir == Path(".distill-sweeps") / "jobs" / s.key
    assert s.params["distill.mu_s"] == 0.9 and not [k for k in s.params if k.startswith(("tracking.", "registry."))]
    assert s.label == "tract vp 8-2-1 width=8 system_metrics=false updates=20 mu_s=0.9" or "mu_s=0.9" in s.label
    assert s.what == "tract vp, schedule 8-2-1" and "mu_s: 0.9" in s.resolved_yaml


def test_the_stages_in_this_process_from_the_inputs_to_the_finish(here):
    s, ranks = settings(here), Ranks(1, "cpu")
    inputs = check_inputs(s)
    assert isinstance(inputs.teacher_source, TrainedTeacher) and inputs.data.name == "digits"
    with student_run(s, inputs) as run:
        assert run.record.get("status") == "RUNNING" and not run.resumed
        student_model(s, run)
        teacher = acquire_teacher(s, run, inputs, ranks)
        assert teacher.ref == TeacherRef("distill-teachers", "1")
        assert run.record.get("teacher_version") == "distill-teachers/1"
        result = distil(s, run, teacher.model, inputs.data, ranks)
        assert [p.steps for p in result.phases] == [2, 1] and result.stopped_after is None
        version = register(s, run, result, teacher.ref)
        assert register(s, run, result, teacher.ref) == version, "registered once per job"
        value = finish(s, run, result, version, teacher.ref)
    assert value == result.phases[-1].metrics["gap"]
    done = MlflowClient().get_run(run.id)
    assert done.info.status == "FINISHED" and run.record.get("status") == "FINISHED"
    assert done.data.tags["teacher_version"] == "distill-teachers/1"
    assert done.data.tags["teacher_run_id"] == teacher.ref.run_id() != ""
    note = done.data.tags["mlflow.note.content"]
    assert "teacher [distill-teachers/1](#/models/distill-teachers/versions/1?workflowType=machine_learning)" in note
    assert f"[distill-students/{version}](#/models/distill-students/versions/{version}?workflowType=" in note
    assert "\n```\nsteps       gap  teacher gap  gap ratio" in note and "\n    2  " in note, note
    again = check_inputs(s).teacher_source.acquire(inputs.data, ranks, run.experiment_id)
    assert again.ref == teacher.ref, "the trained teacher is found by its key"


@pytest.mark.parametrize("error,resumable", [(DivergenceError("non-finite loss at update 3"), False),
                                             (WorkerError("devices=2: rank 1 failed: exited with code -9"), True)])
def test_run_time_failures_end_the_run_in_one_place(here, error, resumable):
    s = settings(here)
    inputs = check_inputs(s)
    with pytest.raises(type(error)):
        with student_run(s, inputs) as run:
            with endings(s, run):
                raise error
    ended = MlflowClient().get_run(run.id)
    assert ended.info.status == "FAILED" and ended.data.tags["failure"] == str(error)
    assert run.record.get("status") == ("RUNNING" if resumable else "FAILED")
    assert (run.record.resumable_run() == run.id) is resumable


def registered_teacher(here, family="vp") -> TeacherRef:
    from sweeps.tracking import store
    store.setup(processes.sqlite(here), "teachers")
    model = DiffusionModel("unet_tiny", (1, 8, 8), {"family": family} if family == "edm" else None,
                           network_overrides={"width": 8}, info={"role": "teacher"})
    with mlflow.start_run() as run:
        number = registry.log_and_register(model, "teacher", "teachers", {"family": family}, run.info.run_id)
    return TeacherRef("teachers", number)


def test_teacher_sources_by_the_form_of_teacher_source(here):
    s = settings(here)
    assert isinstance(source_for(s), TrainedTeacher)
    assert isinstance(source_for(dataclasses.replace(s, teacher_source="models:/teachers@champion")), RegisteredTeacher)
    with pytest.raises(TeacherError, match=r"teacher.source must be train or models:/NAME@ALIAS .*; got 'hub'"):
        source_for(dataclasses.replace(s, teacher_source="hub"))
    ref = TeacherRef.from_tag("distill-teachers/3")
    assert (ref.tag, ref.uri, ref.page) == ("distill-teachers/3", "models:/distill-teachers/3",
                                            "#/models/distill-teachers/versions/3")
    with pytest.raises(TeacherError, match="is not a registered teacher"):
        TeacherRef.from_tag("distill-teachers")


def test_the_registered_teacher_checks_before_any_run(here):
    ref = registered_teacher(here)
    s = settings(here, f"teacher.source={ref.uri}")
    source = source_for(s)
    source.check()
    acquired = source.acquire(None, Ranks(1, "cpu"), "0")
    assert acquired.ref == ref
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(acquired.model.sample(noise, 2), ref.load().sample(noise, 2))
    with pytest.raises(TeacherError, match="is a vp teacher; it cannot teach with diffusion=edm"):
        source_for(settings(here, "diffusion=edm", f"teacher.source={ref.uri}")).check()
    with pytest.raises(TeacherError, match="no registered model at 'models:/teachers/9'"):
        source_for(settings(here, "teacher.source=models:/teachers/9")).check()
    location = registry.model_location(ref.model_version())
    (Path(unquote(urlparse(location).path)) / "artifacts" / "weights.pt").write_bytes(b"tampered")
    with pytest.raises(TeacherError, match="does not match its recorded sha256"):
        source_for(s).check()


def test_registration_resumes_from_whatever_a_killed_attempt_left(here):
    """Kill points of the registration stage, reproduced in the store: a logged model linked to the run and
    then abandoned (a kill at "Validating input example"), a version the job's record never heard of (a kill
    right after "Created version"), a model logged in full but not registered. Each resume registers once."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    client, ranks = MlflowClient(), Ranks(1, "cpu")

    def distilled(seed):
        s = settings(here, f"seed={seed}")
        inputs = check_inputs(s)
        run_cm = student_run(s, inputs)
        run = run_cm.__enter__()
        student_model(s, run)
        teacher = acquire_teacher(s, run, inputs, ranks)
        return s, run, run_cm, teacher, distil(s, run, teacher.model, inputs.data, ranks)

    s, run, run_cm, teacher, result = distilled(0)
    model_id = run.record.get("model_id")
    client.log_outputs(run.id, [LoggedModelOutput(model_id, 0)])  # linked, then killed
    assert registry.logged_state(run.id, model_id) == "linked"
    version = register(s, run, result, teacher.ref)
    assert client.get_logged_model(model_id).status == LoggedModelStatus.FAILED, "the half-logged model is marked"
    run.record.update(registered_version=None)  # killed before the record was written
    assert register(s, run, result, teacher.ref) == version
    assert [int(v.version) for v in client.search_model_versions(f"run_id = '{run.id}'")] == [version]
    run_cm.__exit__(None, None, None)

    s, run, run_cm, teacher, result = distilled(1)
    model_id = run.record.get("model_id")
    with mlflow.start_run(run_id=run.id, nested=mlflow.active_run() is not None):
        registry.log_model(result.model, "student", model_id=model_id)  # logged in full, then killed
    assert registry.logged_state(run.id, model_id) == "ready"
    version = register(s, run, result, teacher.ref)
    (found,) = client.search_model_versions(f"run_id = '{run.id}'")
    assert int(found.version) == version and found.source == f"models:/{model_id}"
    registry.verify(found)  # the recorded sha256 is the logged weights'
    run_cm.__exit__(None, None, None)
