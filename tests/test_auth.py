"""A team tracking server with MLflow's basic-auth app (issue: the store is a trust boundary):
a real `mlflow server --app-name basic-auth` on 127.0.0.1 with an editor and a read-only user."""
import os
import secrets

import mlflow
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient
from services import start_mlflow_server, stop

from sweeps import registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("flask_wtf", reason="mlflow[auth] (Flask-WTF) not installed: bash scripts/setup.sh installs it")
    root = tmp_path_factory.mktemp("auth-server")
    passwords = {user: secrets.token_urlsafe(12) for user in ("admin", "editor", "reader")}
    ini = root / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"  # private until granted
                   f"database_uri = sqlite:///{root}/auth.db\nadmin_username = admin\n"
                   f"admin_password = {passwords['admin']}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   # (as docker/compose.yaml: a credential checked once a minute, not scrypt on every request)
                   "auth_cache_ttl_seconds = 60\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    proc, url = start_mlflow_server(root, f"sqlite:///{root}/mlflow.db", "--app-name", "basic-auth", env=env)
    from mlflow.server.auth.client import AuthServiceClient
    with credentials("admin", passwords["admin"]):
        admin = AuthServiceClient(url)
        for user in ("editor", "reader"):
            admin.create_user(user, passwords[user])
    yield url, passwords
    stop(proc)


class credentials:
    """MLFLOW_TRACKING_USERNAME / _PASSWORD for this process, restored afterwards."""

    def __init__(self, user, password):
        self.values = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def cli(module, args, url, tmp_path, user=None, password=None):
    return processes.cli(module, args, tmp_path, uri=url, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)


def one_error(proc) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def all_runs(url, password):
    with credentials("editor", password):
        mlflow.set_tracking_uri(url)
        return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_authenticated_editor_sweeps_reader_only_reads_strangers_are_turned_away(server, tmp_path):
    url, pw = server
    line = one_error(cli("sweeps.run", ["+debug=tiny"], url, tmp_path))
    assert "401" in line and "MLFLOW_TRACKING_USERNAME" in line
    line = one_error(cli("sweeps.run", ["+debug=tiny"], url, tmp_path, "editor", "wrong-password"))
    assert "401" in line

    sweep = cli("sweeps.run", ["-m", "distill.mu_s=0.5,0.9", "+debug=tiny", f"hydra.sweep.dir={tmp_path}/sweep"],
                url, tmp_path, "editor", pw["editor"])
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    promoted = cli("sweeps.promote", ["--model", "distill-students", "--metric", "gap"], url, tmp_path,
                   "editor", pw["editor"])
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    runs_before = len(all_runs(url, pw["editor"]))
    assert runs_before >= 4  # the sweep's parent, the teacher and two students

    # the README's grants: the reader may read the editor's experiment and model, and edit another one
    from mlflow.server import get_app_client
    with credentials("admin", pw["admin"]):
        mlflow.set_tracking_uri(url)
        auth = get_app_client("basic-auth", tracking_uri=url)
        read_only = mlflow.get_experiment_by_name("distill-sweeps").experiment_id
        editable = mlflow.create_experiment("reader-sweeps")
        auth.grant_user_permission("reader", "experiment", read_only, "READ")
        auth.grant_user_permission("reader", "experiment", editable, "EDIT")
        auth.grant_user_permission("reader", "registered_model", "distill-students", "READ")
        auth.grant_user_permission("reader", "registered_model", "distill-teachers", "READ")
    with credentials("reader", pw["reader"]):  # reads: the champion loads and samples
        mlflow.set_tracking_uri(url)
        model = registry.load("models:/distill-students@champion")
        noise = torch.randn(2, *model.data_shape)
        assert model.sample(noise, 1).shape == noise.shape
        assert len(MlflowClient().search_model_versions("name = 'distill-students'")) == 2
    # ... but neither trains nor registers nor moves an alias: one line each, nothing written
    line = one_error(cli("sweeps.run", ["+debug=tiny"], url, tmp_path, "reader", pw["reader"]))
    assert "403" in line and "reader" in line
    line = one_error(cli("sweeps.promote", ["--model", "distill-students", "--metric", "gap", "--alias", "mine"],
                         url, tmp_path, "reader", pw["reader"]))
    assert "403" in line
    assert len(all_runs(url, pw["editor"])) == runs_before
    # where the reader may edit, its job runs end to end (its own registered student, from the teacher it may read)
    own = cli("sweeps.run", ["+debug=tiny", "experiment_name=reader-sweeps", "registry.name=reader-students",
                             "teacher.source=models:/distill-teachers/1"], url, tmp_path, "reader", pw["reader"])
    assert own.returncode == 0, own.stderr[-3000:]
    with credentials("reader", pw["reader"]):
        mlflow.set_tracking_uri(url)
        (version,) = MlflowClient().search_model_versions("name = 'reader-students'")
        assert version.tags["teacher_version"] == "distill-teachers/1"
