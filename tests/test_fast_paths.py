"""The fast paths (issue 9): torch.compile, the dataset resident on the device, bf16 + channels_last.

The CPU test runs everywhere; the `cuda` ones are the GPU subset (`pytest -m cuda` on a GPU machine)."""
import pytest
import torch

from distill_core import data as core_data
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_compiled_network_gives_the_eager_values_and_the_same_checkpoint_keys():
    torch.manual_seed(0)
    model = DiffusionModel("mlp", (2,))
    z, t = torch.randn(64, 2), torch.rand(64)
    eager = model.x_hat(z, t)
    keys = list(model.state_dict())
    model.use_fast_paths("cpu", compile=True)
    torch.testing.assert_close(model.x_hat(z, t), eager, rtol=1e-5, atol=1e-5)
    assert list(model.state_dict()) == keys  # checkpoints and the registry see no compile wrapper
    assert "compiled" not in model.to_state().get("config", {})


@pytest.mark.cuda
@cuda
def test_resident_data_draws_the_same_batches_on_the_gpu():
    images = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8)
    host, device = core_data.TensorData("cifar10", images, flip=True), None
    device = host.to("cuda")
    assert device.values.is_cuda and device.values.dtype == torch.uint8
    a = host.batch(32, torch.Generator().manual_seed(1))
    b = device.batch(32, torch.Generator().manual_seed(1))
    assert b.is_cuda
    torch.testing.assert_close(b.cpu(), a)


@pytest.mark.cuda
@cuda
def test_bf16_channels_last_forward_matches_fp32_and_a_distillation_step_runs(tmp_path):
    torch.manual_seed(0)
    model = DiffusionModel("unet_tiny", (1, 8, 8))
    z, t = torch.randn(16, 1, 8, 8), torch.rand(16)
    reference = model.x_hat(z, t)
    model.use_fast_paths("cuda")
    assert model.net.state_dict()[next(k for k, v in model.net.state_dict().items() if v.dim() == 4)] \
        .is_contiguous(memory_format=torch.channels_last)
    fast = model.x_hat(z.cuda(), t.cuda()).cpu()
    assert (fast - reference).abs().max() < 0.05  # bf16
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    data = core_data.TensorData("digits", images, levels=16).to("cuda")
    d = Distiller(model, data, DistillConfig(method="tract", schedule=[8, 1], batch_size=16), tmp_path, device="cuda",
                  progress=False)
    loss = d.loss(8, 1)
    loss.backward()
    assert torch.isfinite(loss) and loss.is_cuda
