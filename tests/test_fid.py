"""FID/KID through torch-fidelity with the offline Inception weights (issue: evaluation)."""

import pytest
import torch

from distill_core import data as D
from distill_core import fid


@pytest.fixture(scope="module")
def weights():
    try:
        return fid.resolve_weights("offline")
    except fid.WeightsError as e:
        pytest.skip(f"offline FID weights unavailable here: {e}")


@pytest.fixture(scope="module")
def digits():
    return D.load("digits", "train"), D.load("digits", "test")


def evaluator(real, tmp_path, n, weights, **kw):
    return fid.Evaluator(real.uint8_images(), "digits-test", num_samples=n, weights=weights,
                         cache_root=str(tmp_path / "fidcache"), **kw)


def test_fid_small_for_a_disjoint_split_large_for_noise_and_kid_of_a_set_with_itself_is_zero(digits, weights, tmp_path):
    train, test = digits
    ev = evaluator(train, tmp_path, 32, weights)
    same = ev.metrics_of(fid.RealImages(test.uint8_images()[:32]))
    noise = ev.metrics_of(fid.RealImages(torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)))
    assert same["fid"] < 0.5 * noise["fid"], (same, noise)
    assert same["kid"] < 0.25 * noise["kid"]
    assert same["fid_num_samples"] == 32
    itself = ev.metrics_of(ev.real)
    # KID is unbiased, so a set against itself scatters around 0 (subsets are drawn independently)
    assert abs(itself["kid"]) < 0.05 * noise["kid"] and itself["fid"] < 1e-2 * noise["fid"]


def test_reference_statistics_are_cached_per_sample_count(digits, weights, tmp_path):
    train, test = digits
    probe = fid.RealImages(test.uint8_images()[:16])
    ev = evaluator(train, tmp_path, 16, weights, kid=False)
    first = ev.metrics_of(probe)
    cached = sorted((tmp_path / "fidcache").glob("*"))
    assert any(ev.cache_name in p.name for p in cached)
    mtimes = {p: p.stat().st_mtime_ns for p in cached}

    class Unreadable(fid.RealImages):  # a second evaluator must not even read its reference images
        def __getitem__(self, i):
            raise AssertionError("the reference images were read again instead of their cached statistics")

    again = evaluator(train, tmp_path, 16, weights, kid=False)
    again.real = Unreadable(again.real.images)
    second = again.metrics_of(probe)
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-6)
    assert {p: p.stat().st_mtime_ns for p in cached} == mtimes, "the cached statistics were not recomputed"
    other = evaluator(train, tmp_path, 24, weights, kid=False)
    assert other.cache_name != ev.cache_name
    other.metrics_of(probe)
    assert len(list((tmp_path / "fidcache").glob("*"))) > len(cached)


def test_a_model_is_evaluated_as_a_generator_without_image_files(digits, weights, tmp_path):
    from distill_core.diffusion import DiffusionModel
    train, _ = digits
    model = DiffusionModel("unet_tiny", (1, 8, 8))
    out = evaluator(train, tmp_path, 16, weights)(model, 2)
    assert {"fid", "kid", "kid_std", "fid_num_samples"} <= set(out) and out["fid"] > 0
    assert not list(tmp_path.glob("**/*.png"))


def test_weights_hash_check_refuses_a_wrong_file(tmp_path):
    wrong = tmp_path / "weights.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, wrong)
    with pytest.raises(fid.WeightsError, match="is not a known FID Inception file"):
        fid.resolve_weights(str(wrong))
    wrong.write_bytes(b"not a checkpoint")
    with pytest.raises(fid.WeightsError, match="eval.inception_weights"):
        fid.check_weights(wrong)
    with pytest.raises(fid.WeightsError, match="python -m distill_core.fid build"):
        fid.check_weights(tmp_path / "missing.pth")


def test_the_conversion_maps_every_tensor_onto_torch_fidelitys_extractor(weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(extractor.state_dict()) - {k for k in extractor.state_dict() if "num_batches" in k}
    assert fid.tensor_sha256(state) == fid.CONVERTED_TENSOR_SHA256


def test_extrapolation_is_mltracts_formula_and_recovers_a_one_over_n_law():
    # FID(m) = a + c / m exactly: from k and k/2 samples the formula lands on FID(n)
    a, c, k, n = 3.0, 4000.0, 1000, 50_000
    assert fid.extrapolate_fid(a + c / k, a + c / (k // 2), k, n) == pytest.approx(a + c / n)


def test_seed_sets_extrapolation_and_protocol_tags(digits, weights, tmp_path):
    from distill_core.checkpoint import sha256
    from distill_core.diffusion import DiffusionModel
    train, _ = digits
    model = DiffusionModel("unet_tiny", (1, 8, 8))
    two = evaluator(train, tmp_path, 16, weights, kid=False, seeds=2, extrapolate=True)
    out = two(model, 1)
    assert out["fid_seeds"] == 2 and out["fid"] == out["fid_min"] < out["fid_mean"]
    # one seed set through our path (a kept Inception network), then through torch-fidelity's own
    # `calculate_metrics` with the same arguments: the same samples, the same FID and KID
    import torch_fidelity
    one = evaluator(train, tmp_path, 16, weights)
    plain = one(model, 1)
    theirs = torch_fidelity.calculate_metrics(input1=fid.sampler_generator(model, 1), input1_model_num_samples=16,
                                              **one.fidelity_kwargs())
    assert plain["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert plain["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5, abs=1e-9)
    assert plain["fid"] in (pytest.approx(out["fid_min"], rel=1e-4),  # (the first of the two seed sets)
                            pytest.approx(2 * out["fid_mean"] - out["fid_min"], rel=1e-4))
    # extrapolation is linear in (FID, half-subset FID), so the sets' mean extrapolates their means
    assert out["fid_50k_extrapolated_mean"] == pytest.approx(
        fid.extrapolate_fid(out["fid_mean"], out["fid_half_median_mean"], 16))
    tags = two.protocol()
    assert tags["fid.num_samples"] == "16" and tags["fid.protocol"].startswith("min and mean over 2 seed sets")
    assert "extrapolated to 50000" in tags["fid.protocol"] and tags["fid.weights_sha256"] == sha256(weights)[:16]
    assert tags["fid.reference_sha256"] == evaluator(train, tmp_path, 16, weights).protocol()["fid.reference_sha256"]
    assert tags["fid.reference_sha256"] != evaluator(train, tmp_path, 32, weights).protocol()["fid.reference_sha256"]


def test_the_frechet_distance_of_a_few_features_is_torch_fidelitys():
    """`fid.frechet_distance` takes the trace of the square root from a k x k matrix when k <= d: the same FID as
    torch-fidelity's d x d computation (d = 64 here), on either side of k = d."""
    from torch_fidelity import metric_fid
    g = torch.Generator().manual_seed(0)
    real = metric_fid.fid_features_to_statistics(torch.randn(300, 64, generator=g))
    for k in (2, 16, 64, 65, 200):
        features = torch.randn(k, 64, generator=g) * 1.3 + 0.2
        theirs = metric_fid.fid_statistics_to_metric(real, metric_fid.fid_features_to_statistics(features), False)
        assert fid.frechet_distance(real, features) == pytest.approx(theirs[metric_fid.KEY_METRIC_FID], rel=1e-6), k


def test_fid_against_precomputed_statistics_equals_fid_against_their_images(digits, weights, tmp_path):
    """`eval.fid_ref`: an npz of mu and sigma in EDM's fid-refs format (its `fid.py ref` formula: the features'
    mean and unbiased covariance, float64) gives the FID the images themselves give; bad files are one line."""
    import numpy as np
    from torch_fidelity import utils
    train, test = digits
    by_images = evaluator(train, tmp_path, 16, weights, kid=False)
    kwargs = by_images.fidelity_kwargs()  # (the cached features: the images' own FID below reads them again)
    features = utils.extract_featuresdict_from_input_id_cached(2, by_images.feature_extractor(), **kwargs)["2048"]
    x = features.double()
    mu = x.sum(0) / len(x)  # EDM's calculate_inception_stats, on one process
    sigma = (x.T @ x - torch.outer(mu, mu) * len(x)) / (len(x) - 1)
    ref = tmp_path / "digits-8x8.npz"
    np.savez(ref, mu=mu.numpy(), sigma=sigma.numpy())
    by_stats = fid.Evaluator.from_config(train, fid=True, kid=False, num_samples=16, weights=weights, fid_ref=str(ref))
    assert by_stats.real is None
    by_stats._extractor = by_images.feature_extractor()  # (the same network: built once)
    probe = fid.RealImages(test.uint8_images()[:16])
    assert by_stats.metrics_of(probe)["fid"] == pytest.approx(by_images.metrics_of(probe)["fid"], rel=1e-6)
    tags = by_stats.protocol()
    assert tags["fid.reference"].startswith("digits-8x8.npz: precomputed statistics")
    from distill_core.checkpoint import sha256
    assert tags["fid.reference_sha256"] == sha256(ref)[:16]
    np.savez(tmp_path / "small.npz", mu=mu.numpy()[:64], sigma=sigma.numpy()[:64, :64])
    np.savez(tmp_path / "objects.npz", mu=np.array([object()], dtype=object), sigma=sigma.numpy())
    for name, expected in [("missing.npz", "no such file"), ("small.npz", "must be (2048,) and (2048, 2048)"),
                           ("objects.npz", "not an npz of mu and sigma")]:
        with pytest.raises(fid.StatsError, match=f"eval.fid_ref=.*{name}.*{expected.replace('(', '.').replace(')', '.')}"):
            fid.load_reference(tmp_path / name)
    with pytest.raises(ValueError, match="eval.kid needs reference images"):
        fid.Evaluator.from_config(train, fid=True, kid=True, num_samples=16, weights=weights, fid_ref=str(ref))
