"""Consistency distillation (DESIGN 3.12) against its closed forms: the boundary-conditioned consistency function
on every family, the CD target (one teacher Heun step, then the target network), the distances, the draw, the
multistep sampler (deterministic for the given noise, its times), and the bad keys refused by name."""
import math

import pytest
import torch

from distill_core import data as D
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller, validate
from distill_core.families import DDPM, EDM, VP, Consistency, build
from distill_core.methods.cd import cd_draw, cd_target, distance
from distill_core.samplers import heun_step
from targets import captured_target

FAMILIES = {"edm": EDM(), "vp": VP(), "ddpm": DDPM(num_train_timesteps=100, parameterization="v")}


def net(z, cond):
    """A smooth stand-in for a network's raw output (whatever its family reads it as)."""
    return torch.tanh(0.7 * z + 0.1 * cond.reshape(-1, *([1] * (z.dim() - 1))))


@pytest.mark.parametrize("name", FAMILIES)
def test_the_consistency_function_is_the_identity_at_the_grids_smallest_time(name, float64):
    inner = FAMILIES[name]
    f = Consistency(inner, grid=18)
    t1 = inner.time(torch.ones(4, dtype=torch.long), 18)
    z = torch.randn(4, 1, 4, 4)
    alpha = inner.alpha_sigma(t1)[0].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(f.denoise(net, z, t1), z / alpha)  # f(x, eps) = x, in EDM's variables
    assert f.eps == pytest.approx(float(f.sigma_ve(t1)[0]))
    if name == "edm":
        assert f.eps == pytest.approx(0.002)


def test_on_edm_it_is_the_papers_skip_and_out_scalings_of_the_networks_raw_output(float64):
    f, sd, eps = Consistency(EDM(), grid=18), 0.5, 0.002
    sigma = torch.tensor([0.002, 0.01, 0.5, 3.0, 80.0])
    z = torch.randn(5, 1, 4, 4)

    def expand(v):
        return v.reshape(-1, 1, 1, 1)
    c_in, c_noise = 1 / (sigma ** 2 + sd ** 2).sqrt(), sigma.log() / 4
    raw = net(expand(c_in) * z, -8 * c_noise)  # EDM's network call: F(c_in x, c_noise) (our networks get -8 c_noise)
    c_skip = sd ** 2 / ((sigma - eps) ** 2 + sd ** 2)
    c_out = sd * (sigma - eps) / (sd ** 2 + sigma ** 2).sqrt()
    torch.testing.assert_close(f.denoise(net, z, sigma), expand(c_skip) * z + expand(c_out) * raw)


def test_a_fresh_student_reads_its_teachers_denoiser_far_from_the_boundary(float64):
    inner = EDM()
    f = Consistency(inner, grid=18)
    sigma, z = torch.full((3,), 40.0), torch.randn(3, 1, 4, 4)
    assert (f.denoise(net, z, sigma) - inner.denoise(net, z, sigma)).abs().max() < 1e-4


def test_the_cd_target_is_the_target_networks_output_at_one_teacher_heun_step(float64):
    inner = EDM()
    student = Consistency(inner, grid=18)
    teacher_d = lambda z, t: inner.denoise(net, z, t)  # noqa: E731
    target_d = lambda z, t: student.denoise(lambda a, b: 0.9 * net(a, b), z, t)  # noqa: E731
    index = cd_draw(64, 18, torch.Generator().manual_seed(0))
    t, s = inner.time(index, 18), inner.time(index - 1, 18)
    z = torch.randn(64, 1, 4, 4) + 0.1
    got = cd_target(inner, lambda a, b, c: heun_step(teacher_d, a, b, c),
                    lambda a, b, c: student.ddim_step(target_d, a, b, c), z, index, 18)
    torch.testing.assert_close(got, target_d(heun_step(teacher_d, z, t, s), s))
    assert set(index.tolist()) == set(range(2, 19)), "n + 1 ~ U{2..N}: every neighbour pair of the grid"


def test_distances_are_their_closed_forms(float64):
    a, b = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    d = (a - b).flatten(1)
    torch.testing.assert_close(distance("l2", a, b), d.pow(2).mean(1))
    torch.testing.assert_close(distance("l1", a, b), d.abs().mean(1))
    c = 0.00054 * math.sqrt(16)  # iCT's c for 16 pixels
    torch.testing.assert_close(distance("pseudo_huber", a, b), (d.pow(2).sum(1) + c * c).sqrt() - c)
    torch.testing.assert_close(distance("pseudo_huber", a, b, 0.5), (d.pow(2).sum(1) + 0.25).sqrt() - 0.5)


def student_and_teacher(family=None, grid=8, times=None):
    torch.manual_seed(0)
    teacher = DiffusionModel("unet_tiny", (1, 8, 8), family or {"family": "edm"})
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student = DiffusionModel("unet_tiny", (1, 8, 8), Consistency(teacher.family, grid, times))
    student.load_state_dict(teacher.state_dict())
    return student.eval(), teacher.eval()


def test_multistep_sampling_is_deterministic_for_the_noise_and_walks_the_chosen_times():
    student, _ = student_and_teacher(times={3: [6, 2]})
    noise = torch.randn(6, 1, 8, 8)
    a, b = student.sample(noise, 3), student.sample(noise, 3)
    assert torch.equal(a, b)
    assert not torch.equal(student.sample(noise, 3), student.sample(noise, 1))
    fam = student.family
    assert fam.sampling_times(3).tolist() == pytest.approx(fam.inner.time(torch.tensor([8, 6, 2, 0]), 8).tolist())
    assert fam.sampling_times(2).tolist() == pytest.approx(fam.inner.time(torch.tensor([8, 4, 0]), 8).tolist())
    # one step is f(sigma_max z, sigma_max), clipped
    top = fam.inner.time(torch.full((6,), 8), 8)
    torch.testing.assert_close(student.sample(noise, 1), student.x_hat(80.0 * noise, top).clamp(-1, 1))
    # the re-noise differs from sample to sample and step to step (drawn from each sample's starting noise)
    from distill_core.families.consistency import renoise, seeds
    own = seeds(torch.stack([noise[0], noise[0], noise[1]]))
    z = renoise((1, 8, 8), own, 0, noise)
    assert torch.equal(z[0], z[1]) and not torch.equal(z[0], z[2])
    assert not torch.equal(renoise((1, 8, 8), own, 1, noise)[0], z[0])


def test_a_cd_student_round_trips_its_family_through_its_saved_state():
    student, _ = student_and_teacher(times={2: [3]})
    again = DiffusionModel.from_state(student.to_state())
    assert again.family.config() == student.family.config() and isinstance(again.family, Consistency)
    noise = torch.randn(2, 1, 8, 8)
    assert torch.equal(again.sample(noise, 2), student.sample(noise, 2))
    assert build(student.family.config()).times == {"2": [3]}


def test_the_runners_cd_target_and_loss(tmp_path):
    _, teacher = student_and_teacher()
    cfg = DistillConfig(method="cd", schedule=[8, 1], batch_size=32, checkpoint_every=0, cd_distance="l2")
    d = Distiller(teacher, D.load("digits"), cfg, tmp_path, progress=False)
    assert isinstance(d.student.family, Consistency) and not d.self_teacher.module.training
    assert (d.clip_teacher, d.clip_self_teacher) == (False, False)
    z_t, target, _, draw = captured_target(d, 8, 1)
    fam, index = d.family, draw["t"]
    expected = d.self_teacher.module.x_hat(d.teacher.step(z_t, fam.time(index, 8), fam.time(index - 1, 8)),
                                           fam.time(index - 1, 8))
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("changes,message", [
    ({"schedule": [1]}, "distill.schedule must list at least two"),
    ({"mu_s": 1.0}, r"distill.mu_s must be in \[0, 1\)"),
    ({"cd_distance": "lpips"}, "distill.cd_distance must be one of l2, l1, pseudo_huber"),
    ({"cd_times": {2: [3, 2]}}, "distill.cd_times: 2 steps take 1 grid indices"),
    ({"cd_times": {3: [2, 5]}}, "decreasing"),
    ({"cd_times": {2: [8]}}, r"each in 1\.\.7"),
    ({"cd_huber_c": -1.0}, "distill.cd_huber_c must be a number > 0"),
    ({"eval_steps": [0]}, "distill.eval_steps must be a list of positive integer step counts"),
])
def test_bad_cd_keys_are_one_line_naming_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        validate(DistillConfig(**{"method": "cd", "schedule": [8, 1], **changes}))


def test_the_target_network_is_a_plain_ema_as_openais_update_ema(tmp_path):
    from distill_core.ema import EMA
    source, start = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    plain, corrected = EMA(start, 0.95, bias_correction=False), EMA(start, 0.95)
    plain.update(source)
    corrected.update(source)
    torch.testing.assert_close(plain.module.weight, 0.95 * start.weight + 0.05 * source.weight)  # targ*rate + src*(1-rate)
    torch.testing.assert_close(corrected.module.weight, source.weight)  # TRACT's: the first update copies
    _, teacher = student_and_teacher()
    d = Distiller(teacher, D.load("digits"), DistillConfig(method="cd", schedule=[8, 1], checkpoint_every=0), tmp_path,
                  progress=False)
    assert d.self_teacher.bias_correction is False and d.ema_i.bias_correction is True
