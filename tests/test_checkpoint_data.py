"""Checkpoints (atomic, weights_only, clear errors) and the offline datasets."""
import os

import numpy as np
import pytest
import torch

from conftest import SHARED
from distill_core import data as D
from distill_core.checkpoint import CheckpointError, load_checked, save_atomic, sha256
from distill_core.diffusion import DiffusionModel


def test_model_round_trip_and_sampling_is_deterministic(tmp_path):
    model = DiffusionModel("unet_tiny", (1, 8, 8), {"family": "vp", "parameterization": "both"}, info={"method": "tract", "distilled_steps": [16, 1]})
    model.save(tmp_path / "m.pt")
    loaded = DiffusionModel.load(tmp_path / "m.pt")
    noise = torch.randn(4, 1, 8, 8)
    assert torch.equal(model.sample(noise, 2), loaded.sample(noise, 2))
    assert loaded.info["distilled_steps"] == [16, 1] and loaded.parameterization == "both"
    with pytest.raises(ValueError, match=r"noise must have shape \(B, 1, 8, 8\)"):
        model.sample(torch.randn(2, 3, 8, 8), 1)


def test_corrupt_truncated_or_foreign_checkpoints_fail_clearly(tmp_path):
    path = tmp_path / "c.pt"
    (tmp_path / ".c.pt.k1ll3d.tmp").write_bytes(b"")  # what a writer killed mid-write leaves
    (tmp_path / ".other.pt.x.tmp").write_bytes(b"")  # another checkpoint's: not this save's business
    digest = save_atomic({"w": torch.ones(3)}, path)
    assert digest == sha256(path) and [p.name for p in tmp_path.glob(".*tmp")] == [".other.pt.x.tmp"]
    assert torch.equal(load_checked(path, expected_sha256=digest)["w"], torch.ones(3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.pt is corrupt"):
        load_checked(path)
    with pytest.raises(CheckpointError, match="does not match its recorded sha256"):
        load_checked(path, expected_sha256=digest)
    foreign = tmp_path / "evil.pt"
    torch.save({"x": os.getcwd, "y": np.int64}, foreign)  # not loadable with weights_only
    with pytest.raises(CheckpointError, match="evil.pt is corrupt or not a distill-sweeps checkpoint"):
        load_checked(foreign)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checked(tmp_path / "missing.pt")


def test_digits_is_the_real_bundled_set_in_model_space():
    train, test = D.load("digits", "train"), D.load("digits", "test")
    assert len(train) + len(test) == 1797 and train.shape == (1, 8, 8)
    x = train.all()
    assert x.min() == -1.0 and x.max() == 1.0
    g = torch.Generator().manual_seed(0)
    assert train.batch(16, g).shape == (16, 1, 8, 8)
    assert train.uint8_images().dtype == torch.uint8


def test_unknown_dataset_and_missing_files_name_the_problem(tmp_path):
    with pytest.raises(D.DataError, match="data.name must be one of digits"):
        D.load("imagenet")
    with pytest.raises(D.DataError, match="CIFAR-10 .npz not found at"):
        D.load("cifar10", root=str(tmp_path / "nope.npz"))


def test_toy2d_is_eight_modes():
    pts = D.load("toy2d").all()
    radius = pts.norm(dim=1)
    assert ((radius - 0.7).abs() < 0.25).float().mean() > 0.99


@pytest.mark.skipif(not (SHARED / "assets" / "cifar10_partial.npz").exists(), reason="needs ../shared/assets (absent on a fresh machine)")
def test_cifar10_from_the_partial_npz_flips_only_in_training():
    train = D.load("cifar10", "train", root=str(SHARED / "assets" / "cifar10_partial.npz"))
    test = D.load("cifar10", "test", root=str(SHARED / "assets" / "cifar10_partial.npz"))
    assert train.shape == (3, 32, 32) and len(train) == 5085 and len(test) == 1017
    assert train.flip and not test.flip


@pytest.mark.skipif(not D.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_full_set_offline(tmp_path):
    train = D.load("fashion_mnist", "train", root=str(tmp_path))
    assert len(train) == 60000 and train.shape == (1, 28, 28)
    assert len(D.load("fashion_mnist", "test", root=str(tmp_path))) == 10000


def test_model_width_widens_the_network_and_keys_a_new_teacher_while_stored_keys_stay():
    from hydra import compose, initialize_config_dir

    from conftest import REPO
    from distill_core.models import build_network, count_parameters
    from sweeps.settings.checks import teacher_config
    from sweeps.teachers.trained import teacher_key
    assert build_network("unet_tiny", 1, width=64).emb[0].in_features == 64  # the time embedding's width
    assert count_parameters(build_network("unet_tiny", 1, width=64)) > 3 * count_parameters(build_network("unet_tiny", 1))
    assert build_network("mlp", 2, width=16).net[0].out_features == 16
    with initialize_config_dir(str(REPO / "conf")):
        default, wide = (compose("config", overrides=o) for o in ([], ["model.width=64"]))
    keys = [teacher_key(teacher_config(c), dict(c.data)) for c in (default, wide)]
    assert keys[0] == "147d733313ce3341", "the default teacher's key (stores keep reusing their teachers)"
    assert keys[1] != keys[0]
    teacher = DiffusionModel("unet_tiny", (1, 8, 8), network_overrides={"width": 64})
    assert teacher.net.emb[0].in_features == 64
    restored = DiffusionModel.from_state(teacher.to_state())  # a registered wide teacher loads wide
    assert restored.net.emb[0].in_features == 64


def edm_zip(path, images, labels, names=None, extra=None):
    """A zip as EDM's dataset_tool.py writes it: `00000/img00000000.png`, ..., and dataset.json's labels."""
    import io
    import json
    import zipfile

    from PIL import Image
    names = names or [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(images))]
    with zipfile.ZipFile(path, "w") as z:
        for name, image in zip(names, images):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="png")
            z.writestr(name, buffer.getvalue())
        z.writestr("dataset.json", json.dumps(extra or {"labels": [[n, y] for n, y in zip(names, labels)]}))
    return path


def test_imagenet64_reads_edms_dataset_tool_zip_images_and_labels_in_file_order(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    names = [f"00000/img{i:08d}.png" for i in (3, 0, 4, 1, 2)]  # written out of order: read sorted, labels by name
    labels = [7, 999, 0, 12, 500]
    data = D.load("imagenet64", root=str(edm_zip(tmp_path / "in64.zip", images, labels, names)))
    order = sorted(range(5), key=lambda i: names[i])
    assert data.shape == (3, 64, 64) and data.num_classes == 1000 and not data.flip
    assert torch.equal(data.values, torch.from_numpy(images[order]).permute(0, 3, 1, 2))
    assert data.labels.tolist() == [labels[i] for i in order]
    x, y = data.draw(4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 64, 64) and -1 <= x.min() and x.max() <= 1 and y.dtype == torch.long
    unlabelled = D.load("imagenet64", root=str(edm_zip(tmp_path / "u.zip", images[:2], None, extra={"labels": None})))
    assert unlabelled.labels is None and unlabelled.num_classes is None


def test_imagenet64_bad_zips_are_one_line_naming_the_key(tmp_path):
    import numpy as np
    small = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    good = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    cases = {"no such file": tmp_path / "missing.zip",
             "is 32x32x3 (HWC); this set's images are 64x64x3": edm_zip(tmp_path / "small.zip", small, [0, 1]),
             "has no label for 00000/img00000001.png": edm_zip(tmp_path / "half.zip", good, [0, 1],
                                                               extra={"labels": [["00000/img00000000.png", 3]]}),
             "ImageNet's classes are 0..999": edm_zip(tmp_path / "big.zip", good, [0, 1000]),
             "not a readable zip": tmp_path / "text.zip"}
    (tmp_path / "text.zip").write_text("not a zip")
    for expected, path in cases.items():
        with pytest.raises(D.DataError) as e:
            D.load("imagenet64", root=str(path))
        assert str(e.value).startswith(f"data.root={path}") and expected in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(D.DataError, match="needs data.root=/path/to/imagenet-64x64.zip"):
        D.load("imagenet64")
