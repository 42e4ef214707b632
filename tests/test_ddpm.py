"""The discrete-time DDPM family against diffusers itself: its noise table for every beta schedule, its
"trailing" N-step grids, a teacher's N-step DDIM samples against DDIMPipeline's for the same noise, the
closed-form targets; the diffusers U-Net as one of our networks; the export's round trip through a stock
`DiffusionPipeline.from_pretrained` (all offline, on tiny models)."""
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
diffusers = pytest.importorskip("diffusers")

from distill_core import families  # noqa: E402
from distill_core.diffusion import DiffusionModel  # noqa: E402
from distill_core.export import export_problem, save_pipeline  # noqa: E402

SCHEDULES = [dict(beta_schedule="linear"), dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
             dict(beta_schedule="squaredcos_cap_v2"), dict(beta_schedule="linear", rescale_betas_zero_snr=True),
             dict(trained_betas=torch.linspace(2e-4, 0.03, 1000).tolist()), dict(num_train_timesteps=250)]


def tiny(parameterization="eps", seed=0, num_classes=None, **family):
    """A ddpm_tiny model with non-trivial outputs (its zero-initialised output layers perturbed)."""
    torch.manual_seed(seed)
    model = DiffusionModel("ddpm_tiny", (1, 8, 8), {"family": "ddpm", "parameterization": parameterization, **family},
                           network_overrides={"num_classes": num_classes} if num_classes else None)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def as_images(x: torch.Tensor) -> np.ndarray:
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("spec", SCHEDULES, ids=lambda s: s.get("beta_schedule", "trained") + ("_zsnr" if s.get("rescale_betas_zero_snr") else "") + str(s.get("num_train_timesteps", "")))
def test_the_noise_table_is_diffusers_own(spec):
    ours = families.build({"family": "ddpm", **spec})
    theirs = diffusers.DDIMScheduler(**spec)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    t = torch.arange(0, ours.num_train_timesteps + 1, dtype=torch.float32)
    alpha, sigma = ours.alpha_sigma(t)
    assert alpha[0] == 1 and sigma[0] == 0, "t = 0 is the clean end, outside the table"
    assert torch.equal(alpha[1:] ** 2, theirs.alphas_cumprod.sqrt() ** 2)
    assert torch.allclose(alpha ** 2 + sigma ** 2, torch.ones_like(alpha), atol=1e-6)


@pytest.mark.parametrize("k", [1000, 250])
def test_the_n_step_grid_is_diffusers_trailing_grid_and_grids_nest(k):
    family = families.build({"family": "ddpm", "num_train_timesteps": k})
    for n in (1, 2, 3, 4, 10, 16, 50, 64, 256 if k == 1000 else 125, k):
        scheduler = diffusers.DDIMScheduler(num_train_timesteps=k, timestep_spacing="trailing")
        scheduler.set_timesteps(n)
        times = family.sampling_times(n)
        assert torch.equal((times[:-1] - 1).long(), scheduler.timesteps) and times[-1] == 0, n
        assert torch.equal(times, times.round()), "the teacher is called at integer timesteps only"
    fine, coarse = family.sampling_times(256 if k == 1000 else 250), family.sampling_times(16 if k == 1000 else 10)
    assert set(coarse.tolist()) <= set(fine.tolist()), "a coarser grid lies inside a finer one"
    index = torch.arange(0, 5)
    assert torch.equal(family.time(index * 4, 16), family.time(index, 4)), "sub-grid indices: the methods' draw"


@pytest.mark.parametrize("parameterization", ["eps", "v", "x"])
def test_a_teachers_ddim_samples_are_ddim_pipelines_for_the_same_noise(parameterization):
    model = tiny(parameterization)
    prediction = {"eps": "epsilon", "v": "v_prediction", "x": "sample"}[parameterization]
    ddpm = diffusers.DDPMScheduler(prediction_type=prediction)  # what a published DDPM folder holds
    scheduler = diffusers.DDIMScheduler.from_config(ddpm.config, timestep_spacing="trailing", set_alpha_to_one=True)
    pipe = diffusers.DDIMPipeline(unet=model.net.unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    for n in (1, 2, 5, 20):
        noise = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(n))
        theirs = pipe(batch_size=4, generator=torch.Generator().manual_seed(n), num_inference_steps=n,
                      output_type="np").images
        diff = np.abs(as_images(model.sample(noise, n)) - theirs).max()
        assert diff <= 1e-5, (n, diff)  # the same operations in the same order


def test_closed_form_targets_and_the_jump_on_the_discrete_path():
    family = families.build({"family": "ddpm", "parameterization": "v"})
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(6, 1, 4, 4, generator=g).clamp(-1, 1), torch.randn(6, 1, 4, 4, generator=g)
    t, s = torch.tensor([1000., 999, 500, 40, 1, 2]), torch.tensor([0., 500, 40, 1, 0, 1])
    for kind in ("eps", "v", "x"):
        f = family.replace(parameterization=kind)
        z = f.noise(x, t, eps)
        exact = f.output_target(x, eps, t)
        assert torch.allclose(f.denoise(lambda zz, c: exact, z, t), x, atol=2e-3 if kind == "eps" else 1e-5), kind
    z_t = family.noise(x, t, eps)
    z_s = family.jump(x, z_t, t, s)
    assert torch.allclose(z_s, family.noise(x, s, eps), atol=1e-5), "DDIM with the true x_hat stays on the path"
    assert torch.allclose(family.invert(z_t, t, z_s, s), x, atol=1e-3), "the inversion is the jump's inverse"
    seen = []
    family.denoise(lambda zz, c: seen.append(c) or zz, z_t, t)
    assert torch.equal(seen[0], t - 1), "the network gets diffusers' timestep (the table index)"


def test_bad_family_values_are_one_line_naming_the_key():
    for spec, words in [({"beta_schedule": "sigmoid"}, "beta_schedule must be one of linear"),
                        ({"parameterization": "both"}, "distill.parameterization must be one of eps, v, x"),
                        ({"trained_betas": [0.1, 0.2]}, "trained_betas must hold num_train_timesteps=1000")]:
        with pytest.raises(ValueError, match=words):
            families.build({"family": "ddpm", **spec})


def test_the_diffusers_network_saves_and_loads_as_plain_state():
    model = tiny("v")
    again = DiffusionModel.from_state(model.to_state()).eval()
    z, t = torch.randn(3, 1, 8, 8), torch.tensor([1000., 10, 1])
    assert torch.equal(model.x_hat(z, t), again.x_hat(z, t))
    assert type(again.net.unet).__name__ == "UNet2DModel" and again.family.config() == model.family.config()


@pytest.mark.parametrize("parameterization,steps", [("v", 1), ("x", 4), ("eps", 2)])
def test_the_export_is_the_students_own_sampler_in_stock_diffusers(tmp_path, parameterization, steps):
    student = tiny(parameterization, seed=steps)
    student.info.update(steps=steps, role="student")
    save_pipeline(student, tmp_path / "out")
    pipe = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "out", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    images = pipe(batch_size=5, generator=torch.Generator().manual_seed(3), num_inference_steps=steps,
                  output_type="np").images
    assert images.shape == (5, 8, 8, 1)
    assert np.abs(images - as_images(student.sample(noise, steps))).max() <= 1e-5
    assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "num_inference_steps=" + str(steps) in (tmp_path / "out" / "README.md").read_text()


def test_a_class_conditional_export_samples_with_class_labels_as_the_student_does(tmp_path):
    student = tiny("v", seed=5, num_classes=10)
    student.info.update(steps=2, role="student")
    save_pipeline(student, tmp_path / "out")
    pipe = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "out", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "ConsistencyModelPipeline" and type(pipe.scheduler).__name__ == "DDIMScheduler"
    labels = torch.tensor([0, 3, 9, 3, 7])
    noise = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    images = pipe(batch_size=5, class_labels=labels, generator=torch.Generator().manual_seed(3),
                  num_inference_steps=2, output_type="np").images
    assert np.abs(images - as_images(student.sample(noise, 2, labels=labels))).max() <= 1e-5
    other = as_images(student.sample(noise, 2, labels=(labels + 1) % 10))
    assert np.abs(images - other).max() > 1e-3  # the labels reach the network
    assert "class_labels=" in (tmp_path / "out" / "README.md").read_text()


def test_what_does_not_export_says_why_in_one_line():
    vp = DiffusionModel("unet_tiny", (1, 8, 8))
    assert "ddpm_tiny, ddpm_small, ddpm_cifar10" in export_problem(vp)
    off_grid = tiny("v")
    off_grid.info["steps"] = 16
    assert "steps by 1000 // 16" in export_problem(off_grid)
    with pytest.raises(ValueError, match="does not export"):
        save_pipeline(vp, "/nonexistent")
