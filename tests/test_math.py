"""Closed forms of the diffusion math (DESIGN 3.1-3.4)."""
import math

import pytest
import torch

from distill_core import parameterization as P
from distill_core import weighting as W
from distill_core.ema import EMA
from distill_core.families import VP
from distill_core.samplers import run, run_ancestral
from distill_core.schedules import alpha_sigma, expand, logsnr_cosine



pytestmark = pytest.mark.usefixtures("float64")


def rand_t(n, lo=1e-3, hi=1.0):
    return lo + (hi - lo) * torch.rand(n)


def test_variance_preserving_and_endpoints():
    t = torch.linspace(0, 1, 1001)
    a, s = alpha_sigma(t)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(t), atol=1e-12)
    assert (a[0], s[0]) == (1.0, 0.0)  # t = 0 is the data
    # the cosine schedule: alpha_t ~ cos(pi t / 2) away from the clipped ends
    mid = (t > 0.05) & (t < 0.95)
    assert torch.allclose(a[mid], torch.cos(math.pi * t[mid] / 2), atol=1e-4)


def test_logsnr_monotone_and_clipped():
    t = torch.linspace(0, 1, 4097)
    lam = logsnr_cosine(t)
    assert (lam[1:] < lam[:-1]).all()
    assert lam[0].item() == pytest.approx(20.0, abs=1e-6)
    assert lam[-1].item() == pytest.approx(-20.0, abs=1e-6)
    lam2 = logsnr_cosine(t, -10.0, 5.0)
    assert lam2[0].item() == pytest.approx(5.0, abs=1e-6) and lam2[-1].item() == pytest.approx(-10.0, abs=1e-6)


@pytest.mark.parametrize("kind", P.PARAMETERIZATIONS)
def test_parameterization_round_trip(kind):
    x, eps = torch.randn(16, 3, 4, 4), torch.randn(16, 3, 4, 4)
    t = rand_t(16, 1e-3, 0.999)
    a, s = (expand(v, x) for v in alpha_sigma(t))
    z = a * x + s * eps
    out = P.output_from_target(kind, x, eps, a, s)
    assert out.shape[1] == 3 * P.output_heads(kind)
    x_hat = P.x_from_output(kind, out, z, a, s)
    assert torch.allclose(x_hat, x, atol=1e-8)
    assert torch.allclose(P.eps_from_x(z, x_hat, a, s), eps, atol=1e-6)


def test_weightings_equal_eps_and_v_losses():
    x, eps, x_hat = torch.randn(32, 1, 4, 4), torch.randn(32, 1, 4, 4), torch.randn(32, 1, 4, 4)
    t = rand_t(32, 0.01, 0.99)
    lam = logsnr_cosine(t)
    a, s = (expand(v, x) for v in alpha_sigma(t))
    z = a * x + s * eps
    eps_hat = P.eps_from_x(z, x_hat, a, s)
    vp = VP()
    assert torch.equal(vp.logsnr(t), lam)
    eps_mse = (eps_hat - eps).pow(2).flatten(1).mean(1).mean()
    assert vp.loss("snr", t, x_hat, x).item() == pytest.approx(eps_mse.item(), rel=1e-9)
    v, v_hat = a * eps - s * x, a * eps_hat - s * x_hat
    v_mse = (v_hat - v).pow(2).flatten(1).mean(1).mean()
    assert vp.loss("snr_plus_one", t, x_hat, x).item() == pytest.approx(v_mse.item(), rel=1e-9)
    x_mse = (x_hat - x).pow(2).flatten(1).mean(1)
    trunc = torch.maximum(x_mse, (eps_hat - eps).pow(2).flatten(1).mean(1)).mean()
    assert vp.loss("truncated_snr", t, x_hat, x).item() == pytest.approx(trunc.item(), rel=1e-9)
    assert vp.loss("constant", t, x_hat, x).item() == pytest.approx(x_mse.mean().item(), rel=1e-12)
    # EDM's lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 at the effective noise level sigma / alpha
    sig = (s / a).flatten()
    edm = (sig ** 2 + 0.25) / (sig * 0.5) ** 2
    assert torch.allclose(vp.loss_weight("edm", t), edm, rtol=1e-9)
    with pytest.raises(ValueError, match="weighting must be one of"):
        W.loss_weight("nope", lam)


def test_ddim_step_with_exact_x_hat_follows_the_trajectory_of_a_single_point():
    point, eps = torch.randn(1, 2, 3, 3), torch.randn(8, 2, 3, 3)
    x = point.expand(8, -1, -1, -1)
    t, s = rand_t(8, 0.2, 1.0), rand_t(8, 0.0, 0.2)
    a_t, s_t = (expand(v, x) for v in alpha_sigma(t))
    a_s, s_s = (expand(v, x) for v in alpha_sigma(s))
    z_t = a_t * x + s_t * eps
    # one DDIM step keeps the same noise: it lands on alpha_s x + sigma_s eps, and on x at s = 0
    vp = VP()
    assert torch.allclose(vp.jump(x, z_t, t, s), a_s * x + s_s * eps, atol=1e-10)
    assert torch.allclose(vp.jump(x, z_t, t, torch.zeros(8)), x, atol=1e-12)
    # a whole N-step sampler with the exact denoiser of a one-point dataset returns the point
    for steps in (1, 3, 16):
        out = run(lambda z, tt, ss: vp.step(lambda zz, ttt: x, z, tt, ss), torch.randn(8, 2, 3, 3), vp.sampling_times(steps))
        assert torch.allclose(out, x, atol=1e-10)


def test_ancestral_sampler_with_exact_x_hat_ends_on_the_point():
    point = torch.randn(1, 1, 4, 4).expand(5, -1, -1, -1)
    for gamma in (0.0, 0.3, 1.0):
        out = run_ancestral(VP(), lambda z, t: point, torch.randn(5, 1, 4, 4), VP().sampling_times(8), gamma,
                            torch.Generator().manual_seed(0))
        assert torch.allclose(out, point, atol=1e-10)


def test_ema_bias_correction():
    src = torch.nn.Linear(3, 2)
    ema = EMA(src, 0.9)
    with torch.no_grad():
        src.weight.fill_(1.0)
    ema.update(src)  # first average equals the first weights, whatever mu is
    assert torch.equal(ema.module.weight, src.weight)
    with torch.no_grad():
        src.weight.fill_(3.0)
    ema.update(src)  # c_2 = (1 - mu) / (1 - mu^2) = 1 / 1.9
    assert torch.allclose(ema.module.weight, torch.full_like(src.weight, 1.0 + 2.0 / 1.9))
    plain = EMA(src, 0.0)
    with torch.no_grad():
        src.weight.fill_(-2.0)
    plain.update(src)
    assert torch.equal(plain.module.weight, src.weight)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        EMA(src, 1.0)


def test_pixel_fd_of_a_shifted_copy_is_the_squared_shift():
    """Fréchet distance between x and x + c: equal covariances, so exactly |c|^2."""
    from distill_core.pixel_fd import distance, statistics
    x = torch.randn(400, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    shift = torch.linspace(-0.5, 0.5, 16).reshape(1, 1, 4, 4)
    assert distance(statistics(x), statistics(x)) == pytest.approx(0.0, abs=1e-6)
    assert distance(statistics(x), statistics(x + shift)) == pytest.approx(float(shift.pow(2).sum()), rel=1e-5)
    scaled = distance(statistics(x), statistics(2 * x))  # sigma -> 4 sigma: tr(S) + tr(4S) - 2 tr(2S) = tr(S)
    assert scaled == pytest.approx(float(torch.cov(x.flatten(1).T.double()).trace()) + float(x.mean(0).pow(2).sum()),
                                   rel=1e-5)
