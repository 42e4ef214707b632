"""Team set-up: a real PostgreSQL (the test run's: tests/services.py) and a real `mlflow server` on 127.0.0.1,
parallel launchers, and the docker files (issue: scale out). PostgreSQL tests skip, saying why, where Debian's
server is not installed (`scripts/setup.sh` installs it where apt works)."""
import contextlib
from pathlib import Path

import mlflow
import optuna
import processes
import pytest
import yaml
from mlflow.tracking import MlflowClient
from services import start_mlflow_server, stop

from sweeps import registry

from conftest import REPO

pytestmark = pytest.mark.slow
@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), postgres.database("mlflow"))
    yield url
    stop(proc)


def run(args, cwd, uri, timeout=900):
    return processes.cli("sweeps.run", args, cwd, uri=uri, timeout=timeout)


def test_parallel_optuna_sweep_against_a_server_on_postgresql(postgres, mlflow_server, tmp_path):
    storage = postgres.database("team")
    proc = run(["-m", "hydra/sweeper=optuna", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=team",
                f"hydra.sweeper.storage={storage}", "+debug=tiny", f"hydra.sweep.dir={tmp_path}/sweep"],
               tmp_path, mlflow_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="team", storage=storage).get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
    students = [r for r in runs if r.data.tags.get("method")]
    assert sorted(r.data.tags["optuna.trial"] for r in students) == ["0", "1"], "every trial's run exactly once"
    assert len([r for r in runs if r.data.tags.get("role") == "teacher"]) == 1
    versions = MlflowClient().search_model_versions("name = 'distill-students'")
    assert len(versions) == 2
    # a registered model's artifacts come back over HTTP (served artifacts, mlflow-artifacts:/ URIs)
    out = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/distill-students/{versions[0].version}",
                                              dst_path=str(tmp_path / "download"))
    assert (Path(out) / "MLmodel").is_file()
    model = registry.load(f"models:/distill-students/{versions[0].version}")
    import torch
    assert model.sample(torch.randn(2, *model.data_shape), 1).shape == (2, *model.data_shape)


def test_no_password_reaches_the_store_or_the_logs(postgres, tmp_path):
    """A job with a SQLite tracking store and an OPTUNA_STORAGE that carries a password (the server
    trusts 127.0.0.1 and ignores it): the password is nowhere in params, tags, artifacts or logs."""
    secret = "S3cret-pw"
    storage = postgres.database("redacted").replace("postgres@", f"postgres:{secret}@", 1)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = processes.cli("sweeps.run", ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1",
                                        "hydra.sweeper.study_name=redacted", "+debug=tiny",
                                        f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path, OPTUNA_STORAGE=storage)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert optuna.load_study(study_name="redacted", storage=storage).get_trials()[0].state.name == "COMPLETE"
    assert secret not in proc.stdout + proc.stderr
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert {r.data.tags.get("role", "student") for r in runs} >= {"teacher", "student"}
    student = next(r for r in runs if r.data.tags.get("method"))
    assert student.data.tags["optuna.storage"] == storage.replace(secret, "***")  # which database: still said
    for r in runs:
        assert secret not in repr(r.data.params) + repr(r.data.tags), r.info.run_name
        local = mlflow.artifacts.download_artifacts(run_id=r.info.run_id, dst_path=str(tmp_path / r.info.run_id))
        for f in Path(local).rglob("*"):
            assert not f.is_file() or secret.encode() not in f.read_bytes(), f
    logs = list((tmp_path / "sweep").rglob("*.log"))
    assert logs and all(secret not in f.read_text() for f in logs)


def test_credentials_in_the_tracking_uri_are_redacted_in_params():
    from hydra import compose, initialize_config_dir

    from sweeps.tracking.params import flatten
    with initialize_config_dir(str(REPO / "conf")):
        cfg = compose("config", overrides=["tracking.uri=http://alice:pa55@mlflow.example:5000"])
    assert flatten(cfg)["tracking.uri"] == "http://alice:***@mlflow.example:5000"


def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20", "distill.mu_s=0.5,0.9",
                "+debug=tiny", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path, uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    students = [r for r in mlflow.search_runs(experiment_names=["distill-sweeps"], output_format="list")
                if r.data.tags.get("method")]
    assert sorted(float(r.data.params["distill.mu_s"]) for r in students) == [0.5, 0.9]
    assert all(r.info.status == "FINISHED" for r in students)


def test_compose_file_follows_the_compose_specification():
    jsonschema = pytest.importorskip("jsonschema")
    schema = yaml.safe_load((REPO / "tests" / "data" / "compose-spec.json").read_text())
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    jsonschema.validate(compose, schema)
    assert {"postgres", "mlflow", "trainer", "optuna-dashboard"} <= set(compose["services"])
    gpu = compose["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "MLFLOW_TRACKING_URI" in compose["services"]["trainer"]["environment"]


def test_dockerfile_installs_the_same_pinned_set_as_the_readme():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    setup = (REPO / "scripts" / "setup.sh").read_text()
    install = '-m pip install -q -c constraints.txt -e ".[test,postgres,docs]"'
    assert install in dockerfile and install in setup
    assert "COPY pyproject.toml constraints.txt" in dockerfile


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_study_lock_admits_one_holder_at_a_time(kind, request, tmp_path):
    """Several sweepers ask trials under `study_lock`: a second holder (its own connection or file
    handle, as another process has) waits until the first lets go; another study is not blocked."""
    import threading
    import time

    from sweeps.common.locks import exclusive as study_lock
    storage = f"sqlite:///{tmp_path}/optuna.db" if kind == "sqlite" else request.getfixturevalue("postgres").database("lock")
    events = []
    with study_lock(storage, "s"):
        second = threading.Thread(target=lambda: [events.append("waiting"), study_lock(storage, "s").__enter__(),
                                                  events.append("second holds")])
        second.start()
        with study_lock(storage, "another study") if kind == "postgresql" else contextlib.nullcontext():
            events.append("another study free")
        deadline = time.time() + 2
        while time.time() < deadline and "second holds" not in events:
            time.sleep(0.05)
        events.append("first lets go")
    second.join(timeout=30)
    assert events == ["waiting", "another study free", "first lets go", "second holds"] or \
        events == ["another study free", "waiting", "first lets go", "second holds"]
