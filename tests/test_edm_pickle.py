"""NVlabs' EDM pickles read as data onto our own EDM networks (issue 35, part): every test file there reads,
its poisoned twin reads without its embedded code running, any global the reader does not answer is refused by
name; the networks rebuilt from each file's arguments give NVlabs' denoiser outputs and EDM's own Heun samples."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from distill_core import edm_pickle
from distill_core.models import count_parameters

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


def reference(name, structure=False):
    """The reference arrays for `name` (NVlabs' net in float32; EDM's edm_sampler in float64)."""
    ref = np.load(ASSETS / ("reference_structure_outputs.npz" if structure else "reference_outputs.npz"))
    get = (lambda k: torch.tensor(ref[f"{name}_{k}"])) if structure else (lambda k: torch.tensor(ref[k]))
    labels = None
    if edm_pickle.network(ASSETS / f"{name}.pkl").network_kwargs["label_dim"]:
        labels = get("labels")
        labels = labels.argmax(1) if labels.ndim == 2 else labels.long()
    return dict(x=get("x"), sigma=get("sigma"), latents=get("latents"), labels=labels, D=torch.tensor(ref[name]),
                heun4=torch.tensor(ref[f"heun4_{name}"]), heun18=torch.tensor(ref[f"heun18_{name}"]))


@pytest.mark.parametrize("name,structure", [("edm_vp_ddpmpp_uncond", False), ("edm_ve_ncsnpp_uncond", False),
                                            ("edm_adm_cond", False), ("edm_cifar10_ddpmpp_structure", True),
                                            ("edm_cifar10_ncsnpp_structure", True), ("edm_imagenet64_adm_structure", True)])
def test_our_networks_with_the_files_weights_are_nvlabs_denoiser_and_edms_heun_sampler(name, structure):
    model = edm_pickle.load_model(ASSETS / f"{name}.pkl")
    r = reference(name, structure)
    with torch.no_grad():
        denoised = model.x_hat(r["x"], r["sigma"], labels=r["labels"])
        torch.testing.assert_close(denoised, r["D"], rtol=1e-5, atol=1e-5 * float(r["D"].abs().max()))
        for steps in (4, 18):  # EDM's edm_sampler: rho 7, sigma 0.002..80, S_churn 0, unclipped
            out = model.sample(r["latents"], steps, clip=False, labels=r["labels"])
            assert float((out - r[f"heun{steps}"]).abs().max()) <= 1e-4 * max(1.0, float(r[f"heun{steps}"].abs().max()))
    assert model.num_classes == (r["labels"] is not None and model.net.inner.label_dim or None)


def test_the_presets_have_the_published_sizes():
    from distill_core.models import build_network
    with torch.device("meta"):  # (shapes only: no 1.2 GB of ADM weights)
        sizes = {name: count_parameters(build_network(name, 3))
                 for name in ("edm_ddpmpp_cifar10", "edm_ncsnpp_cifar10", "edm_adm_imagenet64")}
    assert round(sizes["edm_ddpmpp_cifar10"] / 1e6, 1) == 55.7 and round(sizes["edm_ncsnpp_cifar10"] / 1e6, 1) == 56.4
    assert round(sizes["edm_adm_imagenet64"] / 1e6, 1) == 295.9, sizes


def test_other_preconditionings_unknown_networks_and_misfit_tensors_are_one_line(monkeypatch):
    with pytest.raises(ValueError, match="preconditioning is VPPrecond; supported: EDMPrecond"):
        edm_pickle.load_model(ASSETS / "vp_ddpmpp_uncond.pkl")
    f = edm_pickle.network(ASSETS / "edm_vp_ddpmpp_uncond.pkl")
    with pytest.raises(ValueError, match="network is ToyNet, not known here \\(known: SongUNet, DhariwalUNet\\)"):
        edm_pickle.model_config(edm_pickle.EDMFile(f.precond, f.precond_kwargs, "ToyNet", f.network_kwargs, f.state))
    misfit = edm_pickle.EDMFile(f.precond, f.precond_kwargs, f.network, {**f.network_kwargs, "model_channels": 32},
                                f.state)  # arguments that describe another net than the tensors
    monkeypatch.setattr(edm_pickle, "network", lambda path, key="ema": misfit)
    with pytest.raises(ValueError, match="tensors do not fit the SongUNet its arguments describe .*of another shape"):
        edm_pickle.load_model(ASSETS / "edm_vp_ddpmpp_uncond.pkl")
