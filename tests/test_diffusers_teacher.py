"""Published diffusers teachers (`teacher.source=diffusers:PATH` / `hf:REPO`): every bad input as one line and
exit 2 before any run exists, in this process; then, in real processes on a real SQLite store, a small
diffusers DDPM teacher trained here and saved as `DDPMPipeline.save_pretrained` writes it, distilled end to
end with TRACT and with BTD (registered once, reused), the students exported with `sweeps.export` and sampled
by a plain diffusers script, and an Optuna sweep over mu_s and the student's parameterisation. Offline."""
import json
import os
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("diffusers")

import ddpm_teacher  # noqa: E402
from sweeps.job.inputs import check_inputs  # noqa: E402
from sweeps.teachers.diffusers_source import DiffusersTeacher  # noqa: E402
from test_ddpm import tiny  # noqa: E402
from test_job_stages import here, settings  # noqa: E402,F401


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An untrained ddpm_tiny teacher as a DDPMPipeline folder (what the checks read)."""
    return ddpm_teacher.save_folder(tiny("eps"), tmp_path_factory.mktemp("teacher") / "ddpm")


def edited(folder, tmp_path, name="edited", unet=None, scheduler=None, drop=()):
    """A copy of `folder` with config values replaced and files removed."""
    out = tmp_path / name
    shutil.copytree(folder, out)
    for sub, changes in (("unet/config.json", unet), ("scheduler/scheduler_config.json", scheduler)):
        if changes:
            path = out / sub
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    for sub in drop:
        (out / sub).unlink()
    return out


def refused(here, capsys, *overrides) -> str:
    with pytest.raises(SystemExit) as e:
        check_inputs(settings(here, *overrides))
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "INFO mlflow" not in line]  # (the store's creation)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not mlflow.search_runs(search_all_experiments=True).shape[0], "nothing logged"
    return err[0]


def test_a_diffusers_folder_is_read_as_a_ddpm_teacher_and_its_family_comes_with_it(here, folder):
    s = settings(here, f"teacher.source=diffusers:{folder}", "distill.schedule=[1000,50,1]")
    assert s.family == "ddpm" and s.distill.parameterization == "v" and s.label.startswith("tract ddpm 1000-50-1")
    assert not [k for k in s.params if k.startswith(("diffusion.", "model."))] and s.params["teacher.source"]
    source = check_inputs(s).teacher_source
    assert isinstance(source, DiffusersTeacher) and source.shape == (1, 8, 8) and source.key.startswith("diffusers-")
    assert source.family == {"family": "ddpm", "num_train_timesteps": 1000, "beta_schedule": "linear",
                             "beta_start": 0.0001, "beta_end": 0.02, "rescale_betas_zero_snr": False,
                             "parameterization": "eps"}
    top_level = edited(folder / "unet", here, "flat")  # save_pretrained of the U-Net alone, scheduler beside it
    shutil.copy(folder / "scheduler" / "scheduler_config.json", top_level)
    assert check_inputs(settings(here, f"teacher.source=diffusers:{top_level}")).teacher_source.key == source.key


def hub_cache(folder, cache, repo="acme/ddpm-digits", commit="0123456789abcdef0123456789abcdef01234567"):
    """`folder` as huggingface-hub's cache holds a downloaded repo: a snapshot named by its commit, refs/main."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, storage / "snapshots" / commit)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    return commit


def test_an_hf_id_is_read_from_the_hub_cache_offline_and_its_commit_is_recorded(here, folder, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(here / "hub"))
    commit = hub_cache(folder, here / "hub")
    local = check_inputs(settings(here, f"teacher.source=diffusers:{folder}")).teacher_source
    for source in ("hf:acme/ddpm-digits", f"hf:acme/ddpm-digits@{commit}"):
        hub = check_inputs(settings(here, f"teacher.source={source}")).teacher_source
        assert hub.folder.revision == commit and hub.info()["revision"] == commit, source
        assert hub.key == local.key and hub.sha256 == local.sha256, "the same weights and configs: the same teacher"
    with pytest.raises(SystemExit):
        check_inputs(settings(here, "teacher.source=hf:acme/ddpm-digits@" + "f" * 40))


def test_bad_diffusers_teachers_are_one_line_and_exit_2_before_any_run(here, folder, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(here / "hf"))
    bin_only = edited(folder, here, "bin", drop=["unet/diffusion_pytorch_model.safetensors"])
    torch.save({}, bin_only / "unet" / "diffusion_pytorch_model.bin")
    T = "teacher.source"
    cases = [
        ([f"{T}=diffusers:{here}/nowhere"], T, "no folder at"),
        ([f"{T}=diffusers:{edited(folder, here, 'a', drop=['unet/config.json'])}"], T, "no U-Net config"),
        ([f"{T}=diffusers:{edited(folder, here, 'b', drop=['scheduler/scheduler_config.json'])}"], T,
         "no scheduler config"),
        ([f"{T}=hf:google/ddpm-cifar10-32"], T, "not in the Hugging Face cache"),
        ([f"{T}=diffusers:{edited(folder, here, 'c', scheduler={'prediction_type': 'flow'})}"], T,
         "prediction_type must be one of epsilon, v_prediction, sample"),
        ([f"{T}=diffusers:{edited(folder, here, 'd', scheduler={'beta_schedule': 'sigmoid'})}"], T,
         "beta_schedule must be one of linear, scaled_linear, squaredcos_cap_v2"),
        ([f"{T}=diffusers:{folder}", "data.name=toy2d"], "data.name=toy2d", "use data.name=digits"),
        ([f"{T}=diffusers:{folder}", "distill.schedule=[2000,1]"], "distill.schedule", "start at most at 1000"),
        ([f"{T}=diffusers:{folder}", "distill.schedule=[64,10,1]"], "distill.schedule", "10 does not divide 64"),
        ([f"{T}=diffusers:{edited(folder, here, 'e', unet={'_class_name': 'UNet2DConditionModel'})}"], T,
         "only diffusers' UNet2DModel"),
        ([f"{T}=diffusers:{bin_only}"], T, "only a pickled diffusion_pytorch_model.bin"),
        ([f"{T}=diffusers:{folder}", "distill.parameterization=both"], "distill.parameterization",
         "must be one of eps, v, x"),
        ([f"{T}=gdrive:x"], T, "diffusers:PATH or hf:REPO[@REVISION]"),
    ]
    for overrides, key, words in cases:
        line = refused(here, capsys, *overrides)
        assert key in line and words in line, (overrides, line)
    assert "registry.pickle=true" in refused(here, capsys, f"{T}=diffusers:{bin_only}")
    source = check_inputs(settings(here, f"{T}=diffusers:{bin_only}", "registry.pickle=true")).teacher_source
    assert source.weights.name == "diffusion_pytorch_model.bin", "a pickle the user allows is read (weights_only)"


# --- end to end, in real processes ---

def run_cli(module, args, cwd, timeout=900):
    if module:
        return processes.cli(module, args, cwd, timeout=timeout, HF_HUB_OFFLINE="1")
    # a plain diffusers script, as a user runs it: its own fresh interpreter
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=processes.environment(processes.sqlite(cwd), HF_HUB_OFFLINE="1"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ddpm_tiny v-prediction teacher trained here for a few hundred updates, saved as a diffusers folder."""
    path = tmp_path_factory.mktemp("trained")
    return ddpm_teacher.save_folder(ddpm_teacher.train(400, "v"), path / "ddpm_digits")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    mlflow.set_tracking_uri(f"sqlite:///{path}/mlflow.db")
    yield path
    mlflow.set_tracking_uri(None)


JOB = ["distill.schedule=[16,4,1]", "eval.pixel_fd_samples=0", "tracking.system_metrics=false", "distill.batch_size=64"]
UPDATES = {"tract": "[100,200]", "btd": "100"}  # measured here (batch 64): 1-step gap ratios 0.37 (TRACT), 0.26 (BTD)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tract", "btd"])
def test_a_diffusers_teacher_distils_and_the_student_leaves_as_a_diffusers_pipeline(store, trained, method):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    proc = run_cli("sweeps.run", [f"teacher.source=diffusers:{trained}", f"distill={method}", *JOB,
                                  f"distill.updates_per_phase={UPDATES[method]}"], store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient()
    teachers = client.search_model_versions("name = 'distill-teachers'")
    assert len(teachers) == 1, "registered once, reused by the next job"
    assert teachers[0].tags["source"] == f"diffusers:{trained}" and len(teachers[0].tags["source_sha256"]) == 64
    student = max(client.search_model_versions("name = 'distill-students'"), key=lambda v: int(v.version))
    assert student.tags["method"] == method and student.tags["family"] == "ddpm" and student.tags["steps"] == "1"
    assert student.tags["parameterization"] == "v"
    ratio = float(student.tags["gap"]) / float(student.tags["teacher_gap"])
    assert ratio < 0.42, f"{method}: the 1-step student closes {1 - ratio:.0%} of the teacher's own 1-step gap"
    artifacts = [a.path for a in client.list_artifacts(student.run_id, "diffusers")]
    assert "diffusers/model_index.json" in artifacts and "diffusers/unet" in artifacts

    out = store / f"exported_{method}"
    proc = run_cli("sweeps.export", [f"models:/distill-students/{student.version}", str(out)], store)
    assert proc.returncode == 0 and "num_inference_steps=1" in proc.stdout, proc.stderr[-2000:]
    script = ("import sys, torch, numpy as np\nfrom diffusers import DiffusionPipeline\n"
              "pipe = DiffusionPipeline.from_pretrained(sys.argv[1], local_files_only=True)\n"
              "x = pipe(batch_size=4, generator=torch.Generator().manual_seed(5), num_inference_steps=1, "
              "output_type='np').images\nnp.save(sys.argv[2], x)\n")
    proc = run_cli(None, ["-c", script, str(out), str(out / "x.npy")], store)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from sweeps import registry
    ours = registry.load(f"models:/distill-students/{student.version}").sample(
        torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(5)), 1)
    assert np.abs(np.load(out / "x.npy") - ((ours + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()).max() <= 1e-5


def test_export_refuses_a_model_diffusers_cannot_load_in_one_line(here, capsys):
    from distill_core.diffusion import DiffusionModel
    from sweeps import registry
    from sweeps.tools.export import main
    mlflow.set_tracking_uri(f"sqlite:///{here}/mlflow.db")
    with mlflow.start_run() as run:  # a unet_tiny VP student: not a UNet2DModel
        version = registry.log_and_register(DiffusionModel("unet_tiny", (1, 8, 8)), "student", "vp-students",
                                            {"steps": 1}, run.info.run_id)
    assert main([f"models:/vp-students/{version}", str(here / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "model.preset=ddpm_tiny, ddpm_small, ddpm_cifar10" in err[0], err
    assert not (here / "out").exists()
    assert main(["models:/vp-students/7", str(here / "out")]) == 2
    assert "models:/vp-students/7" in capsys.readouterr().err


@pytest.mark.slow
def test_an_optuna_sweep_over_mu_s_and_the_students_parameterisation_on_a_diffusers_teacher(store, trained):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")  # (an in-process test before may have reset it)
    storage = f"sqlite:///{store}/optuna.db"
    proc = run_cli("sweeps.run", ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.params=null",
                                  "distill.mu_s=choice(0.5,0.9)", "distill.parameterization=choice(v,x)",
                                  f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=ddpm",
                                  f"hydra.sweep.dir={store}/ddpm_sweep", f"teacher.source=diffusers:{trained}",
                                  "distill.schedule=[16,1]", "distill.updates_per_phase=20", "+debug=tiny",
                                  "tracking.system_metrics=false"], store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import optuna
    trials = optuna.load_study(study_name="ddpm", storage=storage).get_trials()
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = MlflowClient().search_runs([r.experiment_id for r in [mlflow.get_experiment_by_name("distill-sweeps")]],
                                      "tags.role = 'student' and tags.`optuna.study` = 'ddpm'")
    assert len(runs) == 2 and {r.data.params["teacher.source"] for r in runs} == {f"diffusers:{trained}"}
    assert all(r.data.params["distill.parameterization"] in ("v", "x") for r in runs)
