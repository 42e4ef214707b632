import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id would otherwise retry for ~24 s (nothing downloads in tests)
if os.environ.get("PYTEST_XDIST_WORKER"):  # several test processes share the cores (-n): one thread each, and
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # in the jobs they start, or the threads' spinning starves them
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def float64():
    """Closed forms are checked in double precision; the default dtype is restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def random_denoiser(dim_shape=(1, 4, 4), seed=0):
    """A fixed smooth nonlinear function of (z, t) standing in for a trained network."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim_shape, generator=g) * 0.5
    return lambda z, t: torch.tanh(z * w + t.reshape(-1, *([1] * (z.dim() - 1))) - 0.3)
