"""The noise-family interface (DESIGN 2, 3.8): closed forms per family, EDM's grid and
preconditioning, persistence of a model's family, and bad family settings."""
import pickle

import pytest
import torch

from distill_core import families
from distill_core.diffusion import DiffusionModel
from distill_core.families import EDM, VP
from distill_core.samplers import run
from distill_core.schedules import expand

FAMILY_CASES = {**{f"vp-{p}": VP(parameterization=p) for p in ("eps", "x", "both", "v")}, "edm": EDM()}


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("name", FAMILY_CASES)
def test_parameterisation_and_preconditioning_round_trip(name):
    """The exactly right network output, read back through the family, is the data."""
    family = FAMILY_CASES[name]
    x, eps = torch.randn(16, 3, 4, 4).clamp(-1, 1), torch.randn(16, 3, 4, 4)
    t = family.time(torch.randint(1, 41, (16,)), 40)
    out = family.output_target(x, eps, t)
    assert out.shape[1] == 3 * family.output_heads
    z = family.noise(x, t, eps)
    seen = {}

    def net(z_in, cond):
        seen["z_in"], seen["cond"] = z_in, cond
        return out

    assert torch.allclose(family.denoise(net, z, t), x, atol=1e-9)
    if name == "edm":  # EDM's c_in makes the network's input unit-scale; its noise input is -8 c_noise = -2 ln sigma
        assert torch.allclose(seen["z_in"], z / expand((t ** 2 + 0.25).sqrt(), z))
        assert torch.allclose(seen["cond"], -2 * torch.log(t))


@pytest.mark.usefixtures("float64")
def test_edm_weighting_is_unit_weight_on_the_preconditioned_output():
    """lambda(sigma) ||D - x||^2 = ||F - F_target||^2: EDM's (and ml-tract's TRACT-VE) loss."""
    family = EDM()
    x, eps, wrong = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    t = torch.exp(-1.2 + 1.2 * torch.randn(8))
    z = family.noise(x, t, eps)
    x_hat = family.denoise(lambda z_in, cond: wrong, z, t)
    f_space = (wrong - family.output_target(x, eps, t)).pow(2).flatten(1).mean(1).mean()
    assert family.loss("edm", t, x_hat, x).item() == pytest.approx(f_space.item(), rel=1e-9)


@pytest.mark.usefixtures("float64")
def test_edm_grid_is_ml_tracts_and_students_walk_its_sub_grid():
    family = EDM()
    grid = family.time(torch.arange(41), 40)
    # apple/ml-tract's tc_distill_edm.py: [0] + linspace(sigma_min^(1/rho), sigma_max^(1/rho), 40)^rho
    reference = torch.cat([torch.zeros(1, dtype=torch.float64),
                           torch.linspace(0.002 ** (1 / 7), 80.0 ** (1 / 7), 40, dtype=torch.float64) ** 7])
    assert torch.allclose(grid, reference, rtol=1e-12)
    assert grid[0] == 0 and grid[1].item() == pytest.approx(0.002) and grid[-1].item() == pytest.approx(80.0)
    assert torch.equal(family.sampling_times(1), torch.tensor([80.0, 0.0]))
    # a teacher samples on a fresh N-step grid; a student distilled on the 40-step grid on its sub-grid
    student = family.for_student(40)
    assert student.sampler == "ddim" and student.grid_base == 40
    assert torch.equal(student.sampling_times(8), grid[::5].flip(0))
    assert not torch.equal(family.sampling_times(8), student.sampling_times(8))
    assert torch.equal(student.sampling_times(3), family.sampling_times(3))  # 3 does not divide 40: a fresh grid
    # distilled again (e.g. a registered student as teacher of [8, 1]), it keeps the 40-step grid
    again = student.for_student(8)
    assert again.grid_base == 40 and torch.equal(again.time(torch.arange(9), 8), grid[::5])
    # VP grids are sub-grids of each other already
    assert torch.equal(VP().for_student(64).sampling_times(8), VP().sampling_times(64)[::8])


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("sampler", ["heun", "euler", "ddim"])
def test_edm_steps_with_the_exact_denoiser_stay_on_the_trajectory_of_a_single_point(sampler):
    family = EDM(sampler=sampler)
    point = torch.randn(1, 2, 3, 3)
    x0 = point.expand(6, -1, -1, -1)
    sigma, nxt = torch.full((6,), 3.0), torch.tensor([1.2, 0.5, 0.01, 2.9, 0.002, 0.0])
    x = x0 + expand(sigma, x0) * torch.randn(6, 2, 3, 3)
    exact = x0 + expand(nxt / sigma, x0) * (x - x0)  # the probability-flow ODE of a one-point dataset
    assert torch.allclose(family.step(lambda z, s: x0, x, sigma, nxt), exact, atol=1e-12)
    # a whole sampler, from N(0, I) noise scaled by sigma_max inside, ends on the point
    noise = torch.randn(6, 2, 3, 3)
    for steps in (1, 2, 7):
        out = run(lambda z, t, s: family.step(lambda zz, tt: x0, z, t, s), family.prior(noise),
                  family.sampling_times(steps))
        assert torch.allclose(out, x0, atol=1e-10)


def test_an_edm_model_samples_like_a_vp_one_and_persists_its_family(tmp_path):
    model = DiffusionModel("unet_tiny", (1, 8, 8), {"family": "edm", "sigma_max": 40.0}, info={"role": "teacher"})
    inputs = []
    hook = model.net.register_forward_hook(lambda m, args, out: inputs.append(args))
    noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = model.sample(noise, 3)
    assert out.shape == noise.shape and len(inputs) == 5  # Heun: 2 evaluations per step, 1 for the last
    z_in, cond = inputs[0]
    assert torch.allclose(z_in, noise * 40.0 / (40.0 ** 2 + 0.25) ** 0.5)  # sigma_max inside, then c_in
    assert torch.allclose(cond, torch.full((16,), -2 * torch.log(torch.tensor(40.0))))
    hook.remove()
    model.save(tmp_path / "m.pt")
    loaded = DiffusionModel.load(tmp_path / "m.pt")
    assert loaded.family.config() == model.family.config() and loaded.family.sigma_max == 40.0
    assert torch.equal(loaded.sample(noise, 3), out)
    copy = pickle.loads(pickle.dumps(model))  # MLflow's pickle format
    assert torch.equal(copy.sample(noise, 3), out)


def test_models_saved_before_families_load_as_vp(tmp_path):
    """Checkpoints and registered (pickled) models from before noise families: VP, same samples."""
    model = DiffusionModel("mlp", (2,), {"family": "vp", "parameterization": "x"})
    noise = torch.randn(8, 2)
    state = model.to_state()
    family = state["config"].pop("family")
    state["config"].update(parameterization="x", logsnr_min=family["logsnr_min"], logsnr_max=family["logsnr_max"])
    old = DiffusionModel.from_state(state)
    assert old.family.config() == model.family.config() and torch.equal(old.sample(noise, 4), model.sample(noise, 4))
    legacy = pickle.loads(pickle.dumps(model))
    del legacy.__dict__["family"]
    legacy.config.update(parameterization="x")
    revived = pickle.loads(pickle.dumps(legacy))
    assert revived.family.parameterization == "x" and torch.equal(revived.sample(noise, 4), model.sample(noise, 4))


@pytest.mark.parametrize("config,message", [
    ({"family": "ve"}, "diffusion.family must be one of vp, edm, ddpm; got 've'"),
    ({"family": "edm", "sigma_min": 0.0}, "0 < sigma_min < sigma_max"),
    ({"family": "edm", "sigma_min": 90.0}, "0 < sigma_min < sigma_max"),
    ({"family": "edm", "rho": -1.0}, "diffusion.rho must be > 0"),
    ({"family": "edm", "sigma_data": 0}, "diffusion.sigma_data must be > 0"),
    ({"family": "edm", "sampler": "dpm"}, "diffusion.teacher_sampler must be one of heun, euler, ddim"),
    ({"family": "edm", "parameterization": "v"}, "distill.parameterization must be edm with diffusion=edm"),
    ({"family": "vp", "sampler": "heun"}, "diffusion.teacher_sampler must be ddim with diffusion=vp"),
    ({"family": "vp", "parameterization": "edm"}, "distill.parameterization must be one of eps, x, both, v"),
    ({"family": "edm", "p_std": float("nan")}, "diffusion.p_std must be a finite number"),
    ({"family": "edm", "sigma_maximum": 3}, "unexpected keyword argument 'sigma_maximum'"),
])
def test_bad_family_settings_name_the_key(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        families.build(config)
