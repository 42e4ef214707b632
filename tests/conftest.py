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

import processes  # noqa: E402  (after the environment above: the fork server inherits it)
import services  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the test run; a test takes its own databases (`postgres.database(name)`)."""
    yield from services.postgres_server()


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


# The longest files first (measured: tests/README.md), so that parallel runs (`-n 2 --dist loadfile`) do not end on
# one long file; the rest keep their order.
LONGEST_FIRST = ["test_conditioning.py", "test_diffusers_teacher.py", "test_reliability.py", "test_sweeps.py",
                 "test_three_methods.py", "test_distributed_jobs.py", "test_published_size.py", "test_edm_source.py",
                 "test_team.py", "test_auth.py", "test_fid.py", "test_damaged.py", "test_browser.py",
                 "test_distributed.py", "test_experiments.py", "test_learning.py", "test_edm_hostile.py"]


def pytest_collection_modifyitems(session, config, items):
    """The longest files first; the product's commands start from a fork server (tests/processes.py): start it
    while the first tests run."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: each file keeps its order)
    if any(item.get_closest_marker("slow") for item in items):
        processes.context()


def pytest_terminal_summary(terminalreporter):
    """The five slowest tests (set-up, call and teardown together) at the end of every run, so that drift
    shows in every CI log; tests/README.md says what each tier may cost."""
    totals = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) in ("setup", "call", "teardown"):
                totals[report.nodeid] = totals.get(report.nodeid, 0.0) + report.duration
    if totals:
        terminalreporter.section("five slowest tests (set-up + call + teardown)")
        for nodeid, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:5]:
            terminalreporter.write_line(f"{seconds:8.1f} s  {nodeid}")
