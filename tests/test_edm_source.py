"""`teacher.source=edm:` end to end (issue 35, part): an NVlabs EDM file (read as data) registered once by its
sha256 and distilled, the same file by URL downloaded once and reused, a conditional ADM file making the job
class-conditional, and the bad inputs: one line, exit 2, no run."""
import functools
import http.server
import threading
from pathlib import Path

import mlflow
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient

from sweeps import registry

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "edm"
pytestmark = pytest.mark.skipif(not ASSETS.is_dir(), reason=f"the EDM test files are not here ({ASSETS})")
JOB = ["diffusion=edm", "+debug=tiny"]
# TRACT on the 40-step Heun grid, [40, 8, 1]: enough updates for the 1-step student to close more than half of the
# teacher's own 1-step gap (the files' weights are random: matching its teacher is all the student can learn)
LEARNS = ["distill.schedule=[40,8,1]", "distill.updates_per_phase=[60,240]", "distill.checkpoint_every=60",
          "distill.log_every=20"]


def closes_half_the_teachers_gap(version) -> None:
    """The 1-step student's gap to its teacher's 40-step Heun samples is under half the teacher's own at 1 step."""
    gap, teacher_gap = float(version.tags["gap"]), float(version.tags["teacher_gap"])
    assert version.tags["steps"] == "1" and gap < 0.5 * teacher_gap, (gap, teacher_gap)


@pytest.fixture
def served():
    """The assets folder on a local HTTP server (the URL form without the internet)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ASSETS))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_an_edm_file_is_registered_once_by_its_sha256_and_distilled(tmp_path, served):
    local = ASSETS / "edm_vp_ddpmpp_uncond.pkl"
    first = processes.cli("sweeps.run", [f"teacher.source=edm:{local}", *JOB, *LEARNS], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = processes.cli("sweeps.run", [f"teacher.source=edm:{served}/{local.name}", "distill=btd",
                                          "distill.schedule=[8,4,2,1]", *JOB], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing teacher distill-teachers version 1" in second.stdout + second.stderr
    assert list((tmp_path / ".distill-sweeps" / "edm").glob(f"*/{local.name}")), "downloaded into the cache"
    mlflow.set_tracking_uri(processes.sqlite(tmp_path))
    try:
        client = MlflowClient()
        (teacher,) = client.search_model_versions("name='distill-teachers'")
        tags = teacher.tags
        assert (tags["family"], tags["network"], tags["preconditioning"], tags["format"]) == \
            ("edm", "SongUNet", "EDMPrecond", "weights")
        assert tags["teacher_key"].startswith("edm-") and '"embedding_type": "positional"' in tags["network_kwargs"]
        registered, direct = registry.load(f"models:/distill-teachers/{teacher.version}"), registry.load_edm(local)
        x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.01, 1.0, 50.0])
        assert torch.equal(registered.x_hat(x, sigma), direct.x_hat(x, sigma))
        students = client.search_model_versions("name='distill-students'")
        assert sorted(v.tags["method"] for v in students) == ["btd", "tract"]
        closes_half_the_teachers_gap(next(v for v in students if v.tags["method"] == "tract"))
        assert all(v.tags["family"] == "edm" and v.tags["teacher_version"] == "distill-teachers/1" for v in students)
        student = registry.load("models:/distill-students/1")
        assert type(student.net).__name__ == "EDMNetwork" and student.net.architecture == "SongUNet"
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_conditional_adm_file_makes_the_job_class_conditional(tmp_path):
    proc = processes.cli("sweeps.run", [f"teacher.source=edm:{ASSETS / 'edm_adm_cond.pkl'}", *JOB, *LEARNS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(processes.sqlite(tmp_path))
    try:
        (student,) = MlflowClient().search_model_versions("name='distill-students'")
        assert student.tags["num_classes"] == "10" and "class_acc" in student.tags
        closes_half_the_teachers_gap(student)
        model = registry.load("models:/distill-students/1")
        assert model.sample(torch.randn(4, 1, 8, 8), 1, labels=[0, 3, 7, 9]).shape == (4, 1, 8, 8)
    finally:
        mlflow.set_tracking_uri(None)


def evil_file(tmp_path) -> Path:
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": Payload()}))
    return path


def test_bad_edm_teachers_are_one_line_and_exit_2_before_any_run(tmp_path):
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes((ASSETS / "edm_adm_cond.pkl").read_bytes()[:40000])
    cases = [([f"teacher.source=edm:{evil_file(tmp_path)}", *JOB], "the pickle asks for posix.system, which is refused"),
             ([f"teacher.source=edm:{truncated}", *JOB], "not a readable NVlabs pickle"),
             ([f"teacher.source=edm:{ASSETS / 'vp_ddpmpp_uncond.pkl'}", *JOB], "preconditioning is VPPrecond"),
             ([f"teacher.source=edm:{ASSETS / 'edm_cifar10_ddpmpp_structure.pkl'}", *JOB], "use data.name=cifar10"),
             ([f"teacher.source=edm:{ASSETS / 'edm_vp_ddpmpp_uncond.pkl'}", "+debug=tiny"], "add diffusion=edm"),
             ([f"teacher.source=edm:{ASSETS / 'edm_vp_ddpmpp_uncond.pkl'}", "model.num_classes=10", *JOB],
              "is an unconditional teacher"),
             (["teacher.source=edm:http://127.0.0.1:9/edm-cifar10-32x32-uncond-vp.pkl", *JOB],
              "cannot be downloaded .*pass teacher.source=edm:/path/to/edm-cifar10-32x32-uncond-vp.pkl"),
             ([f"teacher.source=edm:{ASSETS / 'edm_vp_ddpmpp_uncond.pkl'}", f"teacher.sha256={'ab' * 32}", *JOB],
              "its sha256 is [0-9a-f]{64}, not the teacher.sha256 pinned"),
             ([f"teacher.source=edm:{ASSETS / 'edm_vp_ddpmpp_uncond.pkl'}", "teacher.sha256=1234", *JOB],
              "teacher.sha256 must be null or a file's sha256"),
             ([f"teacher.sha256={'ab' * 32}", *JOB], "teacher.sha256 pins an edm: file")]
    import re
    for args, words in cases:
        proc = processes.cli("sweeps.run", args, tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and re.search(words, lines[0]), (args, proc.stderr[-2000:])
    assert not (tmp_path / "ran").exists()
    mlflow.set_tracking_uri(processes.sqlite(tmp_path))
    try:
        assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    finally:
        mlflow.set_tracking_uri(None)
