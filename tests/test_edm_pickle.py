"""NVlabs' EDM pickles read as data (issue 35, part): every test file there reads, its poisoned twin reads
without its embedded code running, and any global the reader does not answer is refused by name."""
import os
import pickle
from pathlib import Path

import pytest
import torch

from distill_core import edm_pickle

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "edm"
pytestmark = pytest.mark.skipif(not ASSETS.is_dir(), reason=f"the EDM test files are not here ({ASSETS})")
FILES = {"edm_vp_ddpmpp_uncond.pkl": ("EDMPrecond", "SongUNet", 0), "edm_ve_ncsnpp_uncond.pkl": ("EDMPrecond", "SongUNet", 0),
         "vp_ddpmpp_uncond.pkl": ("VPPrecond", "SongUNet", 0), "edm_adm_cond.pkl": ("EDMPrecond", "DhariwalUNet", 10),
         "edm_cifar10_ddpmpp_structure.pkl": ("EDMPrecond", "SongUNet", 0),
         "edm_imagenet64_adm_structure.pkl": ("EDMPrecond", "DhariwalUNet", 1000)}


@pytest.mark.parametrize("name", FILES)
def test_every_published_layout_reads_as_records_and_tensors(name):
    precond, network, label_dim = FILES[name]
    f = edm_pickle.network(ASSETS / name)
    assert (f.precond, f.network, f.network_kwargs["label_dim"]) == (precond, network, label_dim)
    assert f.precond_kwargs["label_dim"] == label_dim and "sigma_min" in f.precond_kwargs
    assert f.state and all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in f.state.values())
    assert all(not k.startswith("model.") for k in f.state)


def test_the_poisoned_file_reads_like_its_twin_and_its_code_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("EDM_POISON_MARKER", str(marker))
    poisoned, twin = edm_pickle.network(ASSETS / "edm_poisoned.pkl"), edm_pickle.network(ASSETS / "edm_vp_ddpmpp_uncond.pkl")
    assert poisoned.state.keys() == twin.state.keys()
    assert all(torch.equal(poisoned.state[k], twin.state[k]) for k in twin.state)
    assert not marker.exists() and not Path("/tmp/edm_poison_ran").exists()


class Payload:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("call,named", [(os.system, "system"), (eval, "builtins.eval"),
                                        (Path.touch, "pathlib")])
def test_any_other_global_is_refused_by_name_before_it_runs(tmp_path, call, named):
    marker = tmp_path / "ran"
    arg = f"touch {marker}" if call is os.system else (f"open({str(marker)!r}, 'w')" if call is eval else marker)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": Payload(call, arg)}))
    with pytest.raises(edm_pickle.RefusedGlobal, match=named):
        edm_pickle.read(path)
    assert not marker.exists()


def test_missing_truncated_and_foreign_files_are_one_line(tmp_path):
    with pytest.raises(edm_pickle.NotEDM, match="no such file"):
        edm_pickle.read(tmp_path / "absent.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes((ASSETS / "edm_adm_cond.pkl").read_bytes()[:50000])
    with pytest.raises(edm_pickle.NotEDM, match="not a readable NVlabs pickle"):
        edm_pickle.read(truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, foreign)  # torch.save's zip format: not NVlabs' pickle
    with pytest.raises(edm_pickle.NotEDM):
        edm_pickle.network(foreign)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"ema": [1, 2]}))
    with pytest.raises(edm_pickle.NotEDM, match="no NVlabs network under 'ema'"):
        edm_pickle.network(plain)
