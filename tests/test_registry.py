"""Registered models without pickle (issue: the store is a trust boundary): a real SQLite store,
real model versions, files tampered with in the artifact store."""
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import processes
import pytest
import torch

from distill_core.diffusion import DiffusionModel
from sweeps import registry
from sweeps.tracking import store as tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.setup(processes.sqlite(tmp_path), "registry-tests")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def model_files(version) -> Path:
    return Path(unquote(urlparse(registry.model_location(registry.version_of(f"models:/{version}"))).path))


def register(model, pickle=False) -> str:
    with mlflow.start_run() as run:
        number = registry.log_and_register(model, "student", "students", {"method": "tract"}, run.info.run_id,
                                           pickle=pickle)
    return f"students/{number}"


@pytest.fixture
def model():
    return DiffusionModel("unet_tiny", (1, 8, 8), {"family": "edm"}, info={"role": "student", "steps": 2})


def test_a_model_registers_as_weights_and_loads_without_pickle(store, model):
    version = register(model)
    files = model_files(version)
    assert (files / "artifacts" / "weights.pt").is_file() and (files / "artifacts" / "config.json").is_file()
    assert not list(files.rglob("*.pth")) and not list(files.rglob("*.pkl"))  # no pickle in the store at all
    tags = registry.version_of(f"models:/{version}").tags
    assert tags["format"] == "weights" and len(tags["weights_sha256"]) == 64
    noise = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    loaded = registry.load(f"models:/{version}")
    assert loaded.family.config() == model.family.config() and torch.equal(loaded.sample(noise, 2), model.sample(noise, 2))
    # MLflow's own loader: the project's pyfunc, sampling at the model's own step count (or `steps`)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{version}")
    assert torch.allclose(torch.as_tensor(pyfunc.predict(noise.numpy())), model.sample(noise, 2))
    assert torch.allclose(torch.as_tensor(pyfunc.predict(noise.numpy(), params={"steps": 1})), model.sample(noise, 1))


def test_a_replaced_pickle_is_never_unpickled_by_the_project(store, model, tmp_path):
    version = register(model, pickle=True)  # registry.pickle=true: the pickle flavour beside the weights
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return exec, (f"import pathlib; pathlib.Path({str(marker)!r}).touch()",)

    torch.save(Payload(), model_files(version) / "data" / "model.pth")
    noise = torch.randn(3, 1, 8, 8)
    for allow_pickle in (False, True):  # the weights are preferred even where pickles are allowed
        assert torch.equal(registry.load(f"models:/{version}", allow_pickle=allow_pickle).sample(noise, 2),
                           model.sample(noise, 2))
    assert not marker.exists()
    with pytest.raises(Exception):
        mlflow.pytorch.load_model(f"models:/{version}")  # the opt-in path does unpickle: the payload ran
    assert marker.exists()


def test_a_weights_file_that_does_not_match_its_recorded_sha256_is_refused(store, model):
    version = register(model)
    weights = model_files(version) / "artifacts" / "weights.pt"
    other = DiffusionModel("unet_tiny", (1, 8, 8), {"family": "edm"}, info={"role": "student", "steps": 2})
    torch.nn.init.normal_(next(other.parameters()))
    other.save(weights)  # a valid checkpoint, but not the registered one
    with pytest.raises(registry.RegistryError, match="does not match its recorded sha256") as e:
        registry.load(f"models:/{version}")
    assert "\n" not in str(e.value)


def test_versions_registered_as_pickles_only_load_only_when_allowed(store, model):
    with mlflow.start_run():  # the format of versions registered before this one
        info = mlflow.pytorch.log_model(model, name="student", serialization_format="pickle",
                                        pip_requirements=registry.PIP_REQUIREMENTS)
    number = mlflow.register_model(info.model_uri, "students").version
    with pytest.raises(registry.RegistryError, match="stored only as a pickle.*registry.pickle=true"):
        registry.load(f"models:/students/{number}")
    noise = torch.randn(2, 1, 8, 8)
    assert torch.equal(registry.load(f"models:/students/{number}", allow_pickle=True).sample(noise, 2),
                       model.sample(noise, 2))
