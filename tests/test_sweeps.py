"""The product's front door, end to end: real processes (tests/processes.py), a real SQLite MLflow store and a
real SQLite Optuna storage in a temporary folder (issue: sweeps)."""
import json
import signal
import time

import mlflow
import optuna
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient

from sweeps import registry

pytestmark = pytest.mark.slow


run_cli = processes.cli


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store shared by the tests below, so the teacher trained by the first sweep is reused."""
    path = tmp_path_factory.mktemp("store")
    mlflow.set_tracking_uri(f"sqlite:///{path}/mlflow.db")
    return path


@pytest.fixture(scope="module")
def mission(store):
    """The mission's command verbatim, with tiny overrides for speed."""
    proc = run_cli("sweeps.run", ["-m", "distill.mu_s=0.5,0.9,0.99", "+debug=tiny", "eval.fid=true", "eval.kid=true",
                                  f"hydra.sweep.dir={store}/multirun"], store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def runs(store, filter_string=""):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    return mlflow.search_runs(experiment_names=["distill-sweeps"], filter_string=filter_string,
                              output_format="list")


def test_multirun_gives_three_runs_under_one_parent_and_one_teacher(store, mission):
    exp = mlflow.get_experiment_by_name("distill-sweeps").experiment_id
    links = [line for line in mission.stdout.splitlines() if line.startswith("runs: ")]
    (parent_id,) = {r.data.tags["sweep_id"] for r in runs(store) if r.data.tags.get("role") == "student"}
    assert links == [f"runs: http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
                     f"&viewStateShareKey=sweep-{parent_id[:12]} "
                     f"(after: mlflow ui --backend-store-uri sqlite:///{store}/mlflow.db)"], "one link, the sweep's"
    # the link's table (MLflow's shared view, an experiment tag): the sweep's students, swept key, best first
    view = json.loads(MlflowClient().get_experiment(exp).tags[f"mlflow.sharedViewState.sweep-{parent_id[:12]}"])
    assert len(mlflow.search_runs([exp], view["searchFilter"], output_format="list")) == 3
    assert view["selectedColumns"][0] == "params.`distill.mu_s`" and view["orderByKey"] == "metrics.`objective`"
    all_runs = runs(store)
    students = [r for r in all_runs if r.data.tags.get("method") == "tract"]
    assert len(students) == 3
    assert sorted(float(r.data.params["distill.mu_s"]) for r in students) == [0.5, 0.9, 0.99]
    assert sorted(r.info.run_name for r in students) == [f"tract vp 8-2-1 mu_s={v}" for v in ("0.5", "0.9", "0.99")]
    assert all(r.info.status == "FINISHED" for r in students)
    assert all({"gap", "teacher_gap", "fid", "kid", "fid_num_samples"} <= set(r.data.metrics) for r in students)
    protocol = students[0].data.tags  # the FID protocol is on every run that has a FID
    assert protocol["fid.num_samples"] == "16" and protocol["fid.protocol"] == "1 seed set"
    assert len(protocol["fid.reference_sha256"]) == len(protocol["fid.weights_sha256"]) == 16
    assert all(r.data.metrics["fid_num_samples"] == 16 for r in students)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in students}
    assert len(parents) == 1 and None not in parents
    parent = MlflowClient().get_run(parents.pop())
    assert parent.info.status == "FINISHED" and "distill.mu_s=0.5,0.9,0.99" in parent.data.tags["sweep.overrides"]
    assert all(r.data.tags["sweep_id"] == parent.info.run_id for r in students)
    best = min(r.data.metrics["objective"] for r in students)  # the sweep's result at a glance
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**Sweep** of 3 job(s); best: **tract vp 8-2-1 mu_s=") and f"({best:.4g})" in note, note
    assert "workflowType" in note
    lines = mission.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "gap"])
    table = lines[start + 1:start + 4]
    assert [line.split()[0] for line in table] == ["1", "2", "3"] and table[0].split()[1] == f"{best:.4g}", table
    teachers = [r for r in all_runs if r.data.tags.get("role") == "teacher"]
    assert len(teachers) == 1, "exactly one teacher is trained for the sweep"
    for r in students + teachers:  # the training data as each run's input (the UI's Dataset column)
        (used,) = r.inputs.dataset_inputs
        assert used.dataset.name == "digits-train" and len(used.dataset.digest) == 8
        assert {t.key: t.value for t in used.tags} == {"mlflow.data.context": "training", "split": "train"}
    assert len({r.inputs.dataset_inputs[0].dataset.digest for r in students + teachers}) == 1
    assert sorted(r.data.tags.get("role") for r in all_runs) == ["student"] * 3 + ["sweep", "teacher"]
    assert all(v != "" for r in all_runs for v in r.data.tags.values()), "no empty tags"
    client = MlflowClient()
    for r in students:  # MLflow's image view: the teacher's grid (at step 0 under both keys), then each phase's
        images = [a.path for a in client.list_artifacts(r.info.run_id, "images") if a.path.endswith(".png")]
        assert sorted(p.split("/")[1].split("+timestamp")[0] for p in images) == \
            ["samples+step+0", "samples+step+10", "samples+step+20", "teacher_samples+step+0"]
    assert len(client.search_model_versions("name = 'distill-teachers'")) == 1
    # params are the job's settings, under the same names in the teacher's run as in its students'
    (teacher,) = teachers
    assert "mlflow.parentRunId" not in teacher.data.tags, "the teacher's run is top-level"
    assert teacher.data.tags["mlflow.note.content"].startswith("**Teacher** unet_tiny (vp, v) on digits")
    assert [a.path for a in client.list_artifacts(teacher.info.run_id, "samples")] == ["samples/teacher_8steps.png"]
    assert "samples%2Fteacher_8steps.png" in teacher.data.tags["mlflow.note.content"], "its samples, on its page"
    assert any(a.path.startswith("images/samples+step+0") for a in client.list_artifacts(teacher.info.run_id, "images"))
    assert all(r.data.tags["teacher_run_id"] == teacher.info.run_id for r in students)
    for r in students:
        assert not [k for k in r.data.params if k.split(".")[0] in ("tracking", "registry", "scale", "cache_dir")]
        assert "None" not in r.data.params.values()
        assert {k: r.data.params[k] for k in teacher.data.params} == teacher.data.params
    assert {"model.preset", "teacher.updates", "data.name", "seed"} <= set(teacher.data.params)
    for r in students:  # the run's description: the headline result, links to its version and its teacher
        note = r.data.tags["mlflow.note.content"]
        assert f"the 1-step student's gap is **{r.data.metrics['gap']:.4g}**" in note
        assert f"(#/experiments/{exp}/runs/{teacher.info.run_id}?workflowType=machine_learning)" in note
        assert "\n    2  " in note and "\n    1  " in note, note
    model = client.get_registered_model("distill-students")  # what it is, how to load it, what tags mean
    assert "registry.load(\"models:/distill-students/<version>\")" in model.description and "sweeps.promote" in model.description
    assert "teacher.source=models:/distill-teachers/<version>" in client.get_registered_model("distill-teachers").description
    for v in client.search_model_versions("name = 'distill-students'"):
        # the final evaluation is linked to the logged model (its page's metrics); its input example is stored
        model_id = v.model_id or v.source[len("models:/"):]
        logged = client.get_logged_model(model_id)
        linked = {m.key: m.value for m in logged.metrics}
        run = client.get_run(v.run_id)
        assert {"gap", "gap/1step", "fid/1step", "kid/1step", "gap_ratio/1step", "teacher_gap/1step"} <= set(linked)
        # (MLflow also links system metrics sampled while the model was active; their latest value moves on)
        assert all(value == run.data.metrics[k] for k, value in linked.items() if not k.startswith("system/"))
        assert not [k for k in linked if "2step" in k or k.startswith("distill/")], sorted(linked)
        assert str(logged.status).endswith("READY") and "serving_input_example.json" in \
            {a.path for a in client.list_logged_model_artifacts(model_id)}
        assert v.description.startswith("tract vp student, 1 step(s), schedule [8, 2, 1], from distill-teachers/1")
        assert len(v.tags["gap"].replace(".", "").lstrip("0")) <= 4, v.tags["gap"]  # 4 significant digits
    versions = client.search_model_versions("name = 'distill-students'")
    assert len(versions) == 3
    assert {v.run_id for v in versions} == {r.info.run_id for r in students}
    for v in versions:
        assert {"method", "steps", "gap", "fid", "kid", "teacher_version"} <= set(v.tags)
        assert v.tags["teacher_version"] == "distill-teachers/1"
    # phase checkpoints and sample grids are artifacts of each run, with the checkpoint's sha256
    files = {a.path for a in client.list_artifacts(students[0].info.run_id, "checkpoints")}
    assert {"checkpoints/phase1_2steps.pt", "checkpoints/phase2_1steps.pt"} <= files
    assert len(students[0].data.tags["sha256.phase2"]) == 64  # short keys: sha256.phase1, sha256.phase2
    samples = {a.path for a in client.list_artifacts(students[0].info.run_id, "samples")}
    assert samples == {f"samples/{name}.png" for name in ("samples_teacher_8steps", "samples_teacher_2steps",
                       "samples_teacher_1steps", "samples_phase1_2steps", "samples_phase2_1steps", "overview")}
    # each phase's values under its step-count keys at the cumulative update count (the losses' x-axis); the
    # plain keys once, the final phase's, rounded for the runs table
    run = students[0]
    assert max(m.step for m in client.get_metric_history(run.info.run_id, "distill/loss")) <= 20
    by_steps = {}
    for key, step, steps in (("gap/2step", 10, 2), ("gap/1step", 20, 1)):
        (only,) = client.get_metric_history(run.info.run_id, key)
        assert only.step == step
        by_steps[step] = only.value
        teacher = run.data.metrics[f"teacher_gap/{steps}step"]
        assert run.data.metrics[f"gap_ratio/{steps}step"] == pytest.approx(only.value / teacher, rel=1e-12)
    for key in ("gap", "teacher_gap", "gap_ratio", "fid", "kid", "pixel_fd"):
        (only,) = client.get_metric_history(run.info.run_id, key)
        assert only.step == 20 and only.value == pytest.approx(run.data.metrics[f"{key}/1step"], rel=1e-3)
        assert only.value == float(f"{only.value:.4g}"), "4 significant digits"
    assert {"fid/1step", "kid/1step", "pixel_fd/2step"} <= set(run.data.metrics)
    assert "phase_steps" not in run.data.metrics and run.data.tags["steps"] == "1"
    (objective,) = client.get_metric_history(run.info.run_id, "objective")
    assert (objective.step, objective.value) == (20, by_steps[20]) and run.data.params["objective"] == "gap"


def test_promote_moves_the_alias_to_the_best_version_and_the_champion_samples(store, mission):
    proc = run_cli("sweeps.promote", ["--model", "distill-students", "--metric", "gap"], store)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient()
    versions = client.search_model_versions("name = 'distill-students'")
    best = client.get_model_version_by_alias("distill-students", "champion")
    assert float(best.tags["gap"]) == min(float(v.tags["gap"]) for v in versions)  # (ties: the newest)
    assert f"-> version {best.version}" in proc.stdout and "none ->" in proc.stdout
    model = registry.load("models:/distill-students@champion")
    noise = torch.randn(4, *model.data_shape, generator=torch.Generator().manual_seed(0))
    out = model.sample(noise, 1)
    assert out.shape == noise.shape and torch.equal(out, model.sample(noise, 1))
    # the registered teacher loads and samples exactly like a student
    teacher = registry.load("models:/distill-teachers/1")
    assert teacher.sample(noise, 1).shape == noise.shape
    refused = run_cli("sweeps.promote", ["--model", "distill-students", "--metric", "precision"], store)
    assert refused.returncode == 2 and "--metric precision: none of the 3 versions" in refused.stderr
    teacher_version = best.tags["teacher_version"]
    assert f"ranked 3 version(s) by gap with steps=1, teacher_version={teacher_version}, dataset=digits\n" in proc.stdout
    assert f"champion: http://127.0.0.1:5000/#/models/distill-students/versions/{best.version} (after: mlflow ui" \
        in proc.stdout


def test_jumps_replays_each_phase_checkpoint_on_the_teachers_path(store, mission, capsys):
    """`python -m sweeps.jumps RUN_ID`: the last phase's one jump from the prior is the run's 1-step gap, and
    the teacher's own 1-step DDIM jump is its teacher_gap (same noise, same weights as the run evaluated)."""
    from sweeps import jumps
    student = next(r for r in runs(store) if r.data.tags.get("method") == "tract")
    uri = f"sqlite:///{store}/mlflow.db"
    assert jumps.main([student.info.run_id, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "## phase 1: 8 -> 2 steps" in out and "| 8 -> 4 |" in out and "| 4 -> 0 |" in out
    last = out.split("## phase 2: 2 -> 1 steps")[1]
    row = next(line for line in last.splitlines() if line.startswith("| 8 -> 0 |")).split("|")
    assert float(row[2]) == pytest.approx(student.data.metrics["gap/1step"], abs=6e-5)
    assert float(row[3]) == pytest.approx(student.data.metrics["teacher_gap/1step"], abs=6e-5)
    assert "| 1 | 1 |" in last  # offsets inside the group: one of the 2-step teacher's steps from the start
    assert jumps.main(["no-such-run", "--tracking-uri", uri]) == 2
    assert jumps.main([student.info.run_id, "--phase", "3", "--tracking-uri", uri]) == 2
    assert "--phase must be in 1..2" in capsys.readouterr().err


def test_the_champion_samples_through_pyfunc_and_a_real_serving_process(store, mission):
    """`mlflow.pyfunc.load_model(uri).predict(noise)` and `mlflow models serve` (a real process on 127.0.0.1)
    return the student's samples at its own step count, equal to `registry.load(uri).sample(noise, steps)`."""
    import numpy as np
    from services import served_predictions
    client = MlflowClient()
    try:
        champion = client.get_model_version_by_alias("distill-students", "champion")
    except mlflow.exceptions.MlflowException:  # (this test alone: the promote test did not run)
        champion = client.search_model_versions("name = 'distill-students'")[0]
        client.set_registered_model_alias("distill-students", "champion", champion.version)
    uri = "models:/distill-students@champion"
    model = registry.load(uri)
    steps = int(champion.tags["steps"])
    noise = torch.randn(3, *model.data_shape, generator=torch.Generator().manual_seed(5))
    expected = model.sample(noise, steps).numpy()
    assert np.allclose(mlflow.pyfunc.load_model(uri).predict(noise.numpy()), expected, atol=1e-5)
    answer = served_predictions(uri, store, noise.numpy().tolist())
    assert np.allclose(np.asarray(answer, dtype=np.float32), expected, atol=1e-5)


def test_promote_ranks_only_comparable_students(store, mission):
    """A 4-step student with a far better gap and FID is not compared with the 1-step champion unless asked."""
    client = MlflowClient()
    one = client.search_model_versions("name = 'distill-students'")[0]
    four = client.create_model_version("distill-students", one.source, run_id=one.run_id,
                                       tags={**one.tags, "steps": "4", "gap": "0.001", "fid": "0.001"})
    try:
        proc = run_cli("sweeps.promote", ["--model", "distill-students"], store)  # default metric: fid
        assert proc.returncode == 0, proc.stderr
        champion = client.get_model_version_by_alias("distill-students", "champion")
        assert champion.tags["steps"] == "1" and "by fid with steps=1" in proc.stdout
        assert "; 1 not comparable left out" in proc.stdout
        proc = run_cli("sweeps.promote", ["--model", "distill-students", "--steps", "4", "--alias", "four"], store)
        assert proc.returncode == 0 and client.get_model_version_by_alias("distill-students", "four").version == \
            four.version
        refused = run_cli("sweeps.promote", ["--model", "distill-students", "--steps", "2"], store)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert refused.returncode == 2 and len(errors) == 1 and "no version of distill-students with steps=2" in errors[0]
    finally:
        client.delete_model_version("distill-students", four.version)


def test_two_sweepers_on_one_study_prune_the_bad_trials_and_link_every_run_to_its_trial(store, mission):
    """The same sweep command started twice on one SQLite study with n_trials=6 and the median pruner
    (2 startup trials). The study is seeded with six trials, two of them in the ruinous region
    (lr 0.05: phase one lands far behind); equal parameters repeat, so only the explicit trial number
    can link each run to its trial."""
    storage = f"sqlite:///{store}/pruning.db"
    good, bad = 1e-3, 0.05
    study = optuna.create_study(study_name="prune", storage=storage)
    for lr in (good, good, bad, good, bad, good):
        study.enqueue_trial({"distill.lr": lr})
    command = ["-m", "hydra/sweeper=optuna", "hydra/sweeper/pruner=median",
               "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.n_trials=6", "hydra.sweeper.params=null",
               f"distill.lr=choice({good},{bad})", "+debug=tiny", f"hydra.sweeper.storage={storage}",
               "hydra.sweeper.study_name=prune", f"hydra.sweep.dir={store}/prune"]
    procs = [processes.start("sweeps.run", command, store, processes.environment(processes.sqlite(store)))
             for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="prune", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(6)), "exactly n_trials trials, no number twice"
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and {t.params["distill.lr"] for t in pruned} == {bad}, [(t.number, t.state.name) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials if t not in pruned)
    by_trial = {}
    for r in runs(store, "tags.`optuna.study` = 'prune'"):
        assert r.data.tags["optuna.trial"] not in by_trial, "one run per trial"
        by_trial[r.data.tags["optuna.trial"]] = r
    assert sorted(by_trial) == [str(n) for n in range(6)]
    client = MlflowClient()
    registered = {v.run_id for v in client.search_model_versions("name = 'distill-students'")}
    assert len([r for r in runs(store) if r.data.tags.get("role") == "teacher"]) == 1, "the mission's teacher, reused"
    for t in trials:
        run = by_trial[str(t.number)]
        assert float(run.data.params["distill.lr"]) == pytest.approx(t.params["distill.lr"])
        gaps = {m.step: m.value for key in ("gap/2step", "gap/1step")
                for m in client.get_metric_history(run.info.run_id, key)}
        # the intermediate values are the phases' gaps, at the same step = cumulative updates (10 per phase)
        assert t.intermediate_values == pytest.approx(gaps, rel=1e-12)
        if t in pruned:
            assert run.info.status == "KILLED" and run.data.tags["pruned_at_phase"] == "1"
            assert sorted(gaps) == [10] and run.info.run_id not in registered
            (model,) = [m for m in client.search_logged_models([run.info.experiment_id])
                        if m.source_run_id == run.info.run_id]
            assert str(model.status).endswith("FAILED"), "the pruned student's pending model is marked FAILED"
        else:
            assert run.info.status == "FINISHED" and sorted(gaps) == [10, 20]
            assert t.value == pytest.approx(run.data.metrics["objective"], rel=1e-12) == gaps[20]
    summary = run_cli("sweeps.report", ["--study", "prune", "--storage", storage], store)
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert f"| {pruned[0].number} | pruned after update 10 | 0.05 |" in summary.stdout
    ran = 10 * len(pruned) + 20 * (6 - len(pruned))
    assert f"distillation updates run: {ran} of 120 without pruning" in summary.stdout


def test_a_sweep_stopped_by_sigterm_finishes_its_trials_when_started_again(store, mission):
    """n_trials=2, SIGTERM while trial 1 trains (seen from its checkpoint, not by sleeping): its run ends
    KILLED and the trial stays RUNNING, owned by a process that is gone. The same command takes it over:
    trial 1's job resumes its own run, and the study ends with 2 complete trials, none RUNNING."""
    storage = f"sqlite:///{store}/resume.db"
    study = optuna.create_study(study_name="resume", storage=storage)
    for updates in (20, 150):  # a short trial 0; trial 1 long enough to be caught training
        study.enqueue_trial({"distill.updates_per_phase": updates})
    command = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.params=null",
               "distill.updates_per_phase=choice(20,150)", "+debug=tiny", f"hydra.sweeper.storage={storage}",
               "hydra.sweeper.study_name=resume", f"hydra.sweep.dir={store}/resume", "distill.checkpoint_every=20"]
    proc = processes.start("sweeps.run", command, store, processes.environment(processes.sqlite(store)))
    deadline = time.time() + 600

    def trial_one_trains():
        try:
            trials = optuna.load_study(study_name="resume", storage=storage).get_trials()
        except KeyError:  # (not created yet)
            return False
        if len(trials) < 2:
            return False
        (run,) = runs(store, "tags.`optuna.study` = 'resume' and tags.`optuna.trial` = '1'") or [None]
        return run is not None and "distill/loss" in run.data.metrics

    while not trial_one_trains():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    (killed,) = runs(store, "tags.`optuna.study` = 'resume' and tags.`optuna.trial` = '1'")
    assert killed.info.status == "KILLED"
    states = [t.state for t in optuna.load_study(study_name="resume", storage=storage).get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    again = run_cli("sweeps.run", command, store)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming run {killed.info.run_id}" in again.stdout + again.stderr
    trials = optuna.load_study(study_name="resume", storage=storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, "n_trials, none RUNNING"
    students = runs(store, "tags.`optuna.study` = 'resume'")
    assert sorted(r.data.tags["optuna.trial"] for r in students) == ["0", "1"], "one run per trial"
    assert all(r.info.status == "FINISHED" for r in students)
    resumed = MlflowClient().get_run(killed.info.run_id)
    assert resumed.info.status == "FINISHED", "trial 1 finished in its own run"
    parent = mlflow.search_runs(experiment_names=["distill-sweeps"], filter_string="tags.role = 'sweep'",
                                order_by=["attributes.start_time DESC"], output_format="list")[0]
    assert resumed.data.tags["mlflow.parentRunId"] == resumed.data.tags["sweep_id"] == parent.info.run_id, \
        "it belongs to the sweep that finished it (its table and ranking)"


def test_an_edm_job_end_to_end_and_teachers_of_one_family_refused_by_the_other(store, mission):
    """`diffusion=edm`: an EDM teacher trained and registered beside the VP one (the family is part of
    its key), a TRACT-VE student registered with its family, both sample with `sample(noise, steps)`;
    a registered teacher of the other family is refused before any run exists."""
    proc = run_cli("sweeps.run", ["diffusion=edm", "+debug=tiny", "hydra.run.dir=outputs/edm"], store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient()
    student_run = next(r for r in runs(store, "tags.family = 'edm'") if r.data.tags.get("method") == "tract")
    assert student_run.info.status == "FINISHED" and student_run.data.params["diffusion.family"] == "edm"
    assert student_run.data.params["diffusion.teacher_sampler"] == "heun"
    assert student_run.data.params["distill.weighting"] == "edm" and {"gap", "teacher_gap"} <= set(student_run.data.metrics)
    teachers = {v.tags["family"]: v for v in client.search_model_versions("name = 'distill-teachers'")}
    assert set(teachers) == {"vp", "edm"}  # a new teacher: the VP one was not reused
    assert [r.data.tags.get("role") for r in runs(store, "tags.family = 'edm'")].count("teacher") == 1
    student = next(v for v in client.search_model_versions("name = 'distill-students'") if v.run_id == student_run.info.run_id)
    assert student.tags["family"] == "edm" and student.tags["teacher_version"] == f"distill-teachers/{teachers['edm'].version}"
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = registry.load(f"models:/distill-students/{student.version}")
    assert model.family.name == "edm" and model.family.sampler == "ddim" and model.family.grid_base == 8
    assert model.sample(noise, 1).shape == noise.shape
    teacher = registry.load(f"models:/distill-teachers/{teachers['edm'].version}")
    assert teacher.family.sampler == "heun" and teacher.sample(noise, 2).abs().max() <= 1
    before = len(runs(store))
    for family, other in (("edm", "vp"), ("vp", "edm")):
        refused = run_cli("sweeps.run", [f"diffusion={family}", "+debug=tiny",
                                         f"teacher.source=models:/distill-teachers/{teachers[other].version}"], store)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-2000:]
        assert f"is a {other} teacher; it cannot teach with diffusion={family}" in errors[0]
    assert len(runs(store)) == before


from conftest import REPO  # noqa: E402

BAD_INPUTS = [
    ("distill.mu_s=1.5", "distill.mu_s must be in [0, 1); got 1.5"),
    ("distill.schedule=[256,30,1]", "30 does not divide 256"),
    ("distill.parameterization=z", "distill.parameterization must be one of eps, x, both, v"),
    ("teacher.source=models:/nope@champion", "teacher.source: no registered model at 'models:/nope@champion'"),
    ("distill.batch_size=-4", "distill.batch_size must be a positive integer; got -4"),
    ("distill.schedule=[16,16,1]", "distill.schedule must be strictly decreasing"),
    ("distill.mu_i=1.0", "distill.mu_i must be in [0, 1); got 1.0"),
    ("distill.weighting=snr2", "distill.weighting must be one of snr, truncated_snr, snr_plus_one, constant"),
    ("data.name=imagenet", "data.name must be one of digits"),
    ("objective=fid", "objective=fid needs eval.fid=true"),
    ("teacher.updates=0", "teacher.updates must be a positive integer; got 0"),
    ("eval.pixel_fd_samples=1", "eval.pixel_fd_samples must be 0 (off) or an integer >= 2; got 1"),
    ("eval.ancestral_gammas=[0.5,2]", "eval.ancestral_gammas must be a non-empty list of numbers in [0, 1]"),
    ("compile=maybe", "compile must be one of False, True; got 'maybe'"),
    ("tracking.uri=http://127.0.0.1:9", "tracking.uri=http://127.0.0.1:9: the tracking store does not answer"),
    ("tracking.uri=postgresql://u:pw@127.0.0.1:9/db",  # (one attempt with a timeout: seconds, not a minute)
     "tracking.uri=postgresql://u:***@127.0.0.1:9/db: the tracking store does not answer (ConnectionError: no "
     "database answers at postgresql://u:***@127.0.0.1:9/db"),
    ("diffusion.family=ve", "diffusion.family must be one of vp, edm, ddpm; got 've'"),
    ("diffusion=edm diffusion.sigma_min=100", "diffusion.sigma_min and sigma_max must satisfy 0 < sigma_min < sigma_max"),
    ("diffusion=edm diffusion.sigma_min=0", "0 < sigma_min < sigma_max; got sigma_min=0"),
    ("diffusion=edm diffusion.rho=0", "diffusion.rho must be > 0; got 0"),
    ("diffusion=edm diffusion.teacher_sampler=dpm", "diffusion.teacher_sampler must be one of heun, euler, ddim; got 'dpm'"),
    ("diffusion.teacher_sampler=heun", "diffusion.teacher_sampler must be ddim with diffusion=vp; got 'heun'"),
    ("diffusion=edm distill.parameterization=v", "distill.parameterization must be edm with diffusion=edm"),
    ("devices=0", "devices must be a positive integer; got 0"),
    ("devices=1.5", "devices must be a positive integer; got 1.5"),
    ("devices=3", "distill.batch_size=16 does not split over devices x nodes = 3 x 1 = 3 ranks"),
    ("devices=2 teacher.batch_size=33", "teacher.batch_size=33 does not split over devices x nodes = 2 x 1 = 2 ranks"),
    ("nodes=2", "nodes=2 needs a cluster launcher that starts one task per rank on each node"),
    ("precision=fp16", "precision must be one of bf16, fp32; got 'fp16'"),
    ("distill.loss_reduction=max", "distill.loss_reduction must be one of mean, sum; got 'max'"),
    ("distill.lr_schedule=cosine", "distill.lr_schedule must be one of linear, constant; got 'cosine'"),
    ("distill.ema_reset=step", "distill.ema_reset must be one of none, phase; got 'step'"),
    ("distill.target_precision=float16", "distill.target_precision must be one of float32, float64; got 'float16'"),
    ("+diffusion.t0=zero", "diffusion.t0 must be one of exact, clipped; got 'zero'"),
    ("eval.fid_seeds=0", "eval.fid_seeds must be a positive integer; got 0"),
    ("eval.fid_extrapolate=maybe", "eval.fid_extrapolate must be one of False, True; got 'maybe'"),
    ("eval.fid=true eval.inception_weights=/no/such/file", "eval.inception_weights: /no/such/file not found"),
    (f"eval.kid=true eval.inception_weights={REPO}/pyproject.toml", "pyproject.toml is not a torch weights file"),
    ("eval.fid=true eval.kid=true eval.fid_ref=/refs/x.npz", "eval.kid needs reference images; eval.fid_ref=/refs/x.npz"),
    ("eval.fid=true eval.fid_ref=/no/such/refs.npz", "eval.fid_ref=/no/such/refs.npz: no such file (an npz of mu and sigma"),
    (f"eval.fid=true eval.fid_ref={REPO}/pyproject.toml", "pyproject.toml: not an npz of mu and sigma"),
    ("data.name=imagenet64", "data.name=imagenet64 needs data.root=/path/to/imagenet-64x64.zip"),
    ("+optuna.trial=3", "optuna.trial=3 is set by the Optuna sweeper"),
    ("distill=cd distill.cd_distance=lpips", "distill.cd_distance must be one of l2, l1, pseudo_huber; got 'lpips'"),
    ("distill=cd distill.mu_s=1.0", "distill.mu_s must be in [0, 1); got 1.0"),
    ("distill=cd distill.schedule=[1]", "distill.schedule must list at least two positive integer step counts"),
    ("distill=cd distill.cd_times={2:[3,2]}", "distill.cd_times: 2 steps take 1 grid indices"),
    ("distill.nonfinite_grads=skip", "distill.nonfinite_grads must be one of stop, zero; got 'skip'"),
    ("distill.clip_teacher=maybe", "distill.clip_teacher must be true, false or null; got 'maybe'"),
    ("eval.reference_steps=0", "eval.reference_steps must be a positive integer or null"),
    ("tracking.outage_limit_s=0", "tracking.outage_limit_s must be a number of seconds > 0; got 0"),
    ("model.width=0", "model.width must be a positive integer or null (the preset's); got 0"),
    ("tracking.system_metrics=maybe", "tracking.system_metrics must be one of False, True; got 'maybe'"),
    ("model.num_classes=auto data.name=toy2d", "model.num_classes=auto: data.name=toy2d has no class labels"),
    ("model.num_classes=3", "model.num_classes=3 is smaller than data.name=digits's 10 classes (labels 0..9)"),
    ("model.num_classes=-2", "model.num_classes must be null (unconditional), a positive integer or auto"),
    ("model.num_classes=2.5", "model.num_classes must be null (unconditional), a positive integer or auto"),
    ("model=mlp data.name=toy2d model.num_classes=10", "model.num_classes=10: data.name=toy2d has no class labels"),
]


def compose(overrides, tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from conftest import REPO
    with initialize_config_dir(str(REPO / "conf")):
        cfg = hydra_compose("config", overrides=[*overrides, f"hydra.run.dir={tmp_path}/out"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("override,message", BAD_INPUTS)
def test_bad_input_fails_before_any_work_with_one_line(tmp_path, monkeypatch, capsys, override, message):
    """Table-driven, in-process (the subprocess test below checks the real exit code)."""
    from sweeps.job import run_job
    monkeypatch.chdir(tmp_path)
    cfg = compose([*override.split(), "+debug=tiny", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
                  if not override.startswith("tracking.uri") else [override, "+debug=tiny"], tmp_path)
    with pytest.raises(SystemExit) as e:
        run_job(cfg)
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    if (tmp_path / "mlflow.db").exists():
        assert runs(tmp_path) == []


@pytest.mark.parametrize("override,message", [
    BAD_INPUTS[0], BAD_INPUTS[3],
    ("diffusion=ve", "diffusion must be one of ddpm, edm, vp; got 've'"),  # a config group option: before Hydra's error
    ("model.num_class=10", "model.num_class is not a config key; the nearest: model.num_classes"),  # a typo'd key
    ("distill.mu=0.5", "distill.mu is not a config key; the nearest: distill.mu_s, distill.mu_i"),
    ("-m diffusion=vp,ve", "diffusion must be one of ddpm, edm, vp; got 've'"),
    ("-m hydra/sweeper=optuna hydra.sweeper.n_jobs=2", "hydra.sweeper.n_jobs=2 needs a launcher that runs jobs"),
    ("-m hydra/sweeper=optuna hydra/sweeper/pruner=median hydra.sweeper.pruner.name=best",
     "hydra.sweeper.pruner.name must be one of none, median"),
])
def test_bad_input_exits_2_with_one_line_and_creates_no_run(tmp_path, override, message):
    proc = run_cli("sweeps.run", [*override.split(), "+debug=tiny"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    if (tmp_path / "mlflow.db").exists():
        assert runs(tmp_path) == []
