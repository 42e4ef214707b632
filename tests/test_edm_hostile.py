"""A hostile EDM file is refused in one line (issue 42): every class of attack on a pickle reader (`hostile_edm`),
read in a fresh process under an address-space cap, is refused by the reader's one error type, in a line naming
what it refused, in bounded time and memory, with no code run; a refused file leaves later loads untouched; a job
given one exits 2 with one line and creates no run; the download path keeps its cache clean."""
import functools
import http.server
import json
import threading
from pathlib import Path

import processes
import pytest
import torch

import hostile_edm
from hostile_edm import FILES


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    for name, (write, _) in FILES.items():
        (folder / f"{name}.pkl").write_bytes(write())
    (folder / "good.pkl").write_bytes(hostile_edm.good())
    out = folder / "results.jsonl"
    processes.call(hostile_edm.read_all, str(folder), str(out), timeout=300)
    return {r["name"]: r for r in map(json.loads, out.read_text().splitlines())}


@pytest.mark.parametrize("name", FILES)
def test_each_hostile_file_is_refused_in_one_line_within_bounds(results, name):
    r = results[name]
    assert r["error"] in ("NotEDM", "Refused", "RefusedGlobal", "EDMFileError"), r
    assert FILES[name][1] in r["message"] and "\n" not in r["message"] and len(r["message"]) < 600, r
    assert r["grew_mb"] < 1024, r  # (the process also runs under an address-space cap: hostile_edm.HEADROOM)
    assert not Path("/tmp/hostile_edm_ran").exists()


def test_the_good_file_reads_in_the_same_harness(results):
    assert results["good"]["error"] is None, results["good"]


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    from distill_core import edm_pickle
    path = tmp_path / "huge.pkl"
    with open(path, "wb") as f:
        f.truncate(edm_pickle.MAX_FILE_BYTES + 1)  # (sparse: no disk used)
    with pytest.raises(edm_pickle.Refused, match="more than an EDM network file holds"):
        edm_pickle.network(path)


def test_a_refused_file_leaves_later_loads_untouched(tmp_path):
    """The old reader let a BUILD on torch's rebuild function set its defaults: every tensor loaded afterwards in
    that process (by the reader or torch.load) came back negated. Now: hostile then good in one process equals
    good alone in a fresh one."""
    hostile, good = tmp_path / "hostile.pkl", tmp_path / "good.pkl"
    hostile.write_bytes(hostile_edm.build_on_function())
    good.write_bytes(hostile_edm.good())
    processes.call(hostile_edm.tensors_after, str(hostile), str(good), str(tmp_path / "after.pt"))
    processes.call(hostile_edm.tensors_after, str(tmp_path / "absent.pkl"), str(good), str(tmp_path / "fresh.pt"))
    after, fresh = (torch.load(tmp_path / n, weights_only=True) for n in ("after.pt", "fresh.pt"))
    assert after["state"].keys() == fresh["state"].keys() and len(fresh["state"]) > 10
    assert all(torch.equal(after["state"][k], fresh["state"][k]) for k in fresh["state"])
    assert torch.equal(after["torch_load"], torch.arange(4.0))


@pytest.mark.slow
def test_a_job_given_a_hostile_file_exits_2_with_one_line_and_no_run(tmp_path):
    """The file that crashed the process (exit 139) under the old reader, through the product's command."""
    (tmp_path / "evil.pkl").write_bytes(hostile_edm.numpy_object_dtype())
    job = processes.cli("sweeps.run", ["teacher.source=edm:evil.pkl", "diffusion=edm", "+debug=tiny"], tmp_path)
    assert job.returncode == 2, (job.returncode, job.stderr[-2000:])
    lines = [line for line in job.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: teacher.source=edm:evil.pkl") and "numpy dtype" in lines[0]
    from mlflow.tracking import MlflowClient
    client = MlflowClient(processes.sqlite(tmp_path))
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture
def served(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "net.pkl").write_bytes(hostile_edm.good())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_download_is_a_safe_name_in_the_cache_and_its_pin_is_checked(tmp_path, served):
    from distill_core.checkpoint import sha256
    from sweeps.teachers.edm_source import download
    from sweeps.teachers.reference import TeacherError
    cache = tmp_path / "cache"
    path = download(f"{served}/net.pkl?name=/..", cache)  # a query ending in /.. (os.replace failed on it before)
    assert path.name == "net.pkl" and cache in path.parents and path.is_file()
    assert not list(cache.rglob("*.part"))
    pin = sha256(path)
    assert download(f"{served}/net.pkl?name=/..", cache, pin) == path  # the cached copy, checked again
    with pytest.raises(TeacherError, match="sha256 .* not the teacher.sha256 pinned"):
        download(f"{served}/net.pkl?name=/..", cache, "0" * 64)
    with pytest.raises(TeacherError, match="cannot be downloaded"):
        download(f"{served}/absent.pkl", cache)
    assert not list(cache.rglob("*.part")), "a failed download leaves no .part behind"
    with pytest.raises(TeacherError, match="plain http: is refused"):
        download("http://example.com/net.pkl", cache)  # (refused before any connection)
