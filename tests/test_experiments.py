"""The papers' ablations as ready sweeps, and the report that reads them back."""
import processes
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from sweeps.settings.checks import check_keys as check
from sweeps.tools.report.specs import SPECS

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def test_every_experiment_has_a_report_spec():
    assert EXPERIMENTS == sorted(SPECS)


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_names_only_real_keys(name, scale):
    with initialize_config_dir(str(REPO / "conf")):
        cfg = compose("config", overrides=[f"+experiment={name}", f"scale={scale}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert params, f"{name} sweeps nothing"
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    for key, values in params.items():
        cells = str(values).replace("],[", "]|[").split("|" if "[" in str(values) else ",")
        if key.startswith("+"):  # a config group's options (conf/mltract_key/...)
            assert all((REPO / "conf" / key[1:] / f"{v}.yaml").exists() for v in cells), f"{name}: unknown {key}"
        else:
            assert OmegaConf.select(base, key, default="__missing__") != "__missing__", f"{name}: unknown key {key}"
        for value in cells:
            with initialize_config_dir(str(REPO / "conf")):
                one = compose("config", overrides=[f"+experiment={name}", f"scale={scale}", f"{key}={value}"])
            check(one)  # every cell of the sweep is a valid job
    assert cfg.experiment_name == f"ablation-{name}"
    if name.startswith("tract_edm_") or name.endswith("_edm"):  # the papers' EDM runs: their own data and NVlabs' teacher
        assert cfg.teacher.source.startswith("edm:https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-")
        assert cfg.diffusion.family == "edm" and cfg.eval.num_samples == 50000 and cfg.eval.fid_ref.endswith(".npz")
    elif scale == "paper":
        assert cfg.data.name == "cifar10" and cfg.model.preset == "unet_cifar10" and cfg.eval.num_samples == 50000


def test_report_fills_the_cells_it_has_and_marks_the_rest_missing(tmp_path):
    uri = processes.sqlite(tmp_path)
    sweep = processes.cli("sweeps.run", ["-m", "+experiment=tract_mu_s", "+debug=tiny", "distill.mu_s=0.5,0.9",
                                         "eval.kid=true", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    import mlflow
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    # a third trial, as an Optuna pruner leaves it (sweeps.job.pruned.record_pruned): KILLED with pruned_at_phase
    pruned = mlflow.search_runs(experiment_names=["ablation-tract_mu_s"], output_format="list",
                                filter_string="params.`distill.mu_s` = '0.9'")[0].info.run_id
    client.set_tag(pruned, "pruned_at_phase", "1")
    client.set_terminated(pruned, "KILLED")
    report = processes.cli("sweeps.report", ["tract_mu_s", "--out", str(tmp_path / "reports")], tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in (tmp_path / "reports" / "tract_mu_s" / "tract_mu_s.md").read_text().splitlines()
            if line.startswith("| 0")}
    assert set(rows) == {"0.0", "0.5", "0.9", "0.99"}
    assert rows["0.5"][0] == "1" and rows["0.5"][1] != "missing"  # one run, a gap
    for empty in ("0.0", "0.9", "0.99"):  # (0.9's only run was pruned)
        assert rows[empty][:2] == ["0", "missing"]
    assert rows["0.5"][-1] == "5.24" and rows["0.99"][-1] == "7.61"  # the paper's column
    text = (tmp_path / "reports" / "tract_mu_s" / "tract_mu_s.md").read_text()
    assert "- pruned by the sweep (not in the table): 1 run(s): 0.9 after phase 1 (gap 0." in text, text
    assert "- FID protocol: 16 samples vs digits-train-8x8: 16 images (order seed 0)" in text, text  # (KID's)
    for f in ("tract_mu_s.csv", "tract_mu_s_metric.png", "tract_mu_s_vs_steps.png"):
        assert (tmp_path / "reports" / "tract_mu_s" / f).stat().st_size > 0
    reports = mlflow.search_runs(experiment_names=["ablation-tract_mu_s"], filter_string="tags.role = 'report'",
                                 output_format="list")
    assert len(reports) == 1
    missing = processes.cli("sweeps.report", ["btd_vs_tract", "--out", str(tmp_path / "r2")], tmp_path)
    assert missing.returncode == 0 and "missing" in missing.stdout  # no runs: gaps, not a crash


def test_agreement_line_is_kendalls_tau_over_the_shared_cells():
    from sweeps.tools.report.tables import agreement
    paper = {0.0: 6.32, 0.5: 5.24, 0.9: 6.04, 0.99: 7.61}
    same = agreement("gap", {0.0: 3.0, 0.5: 1.0, 0.9: 2.0, 0.99: 4.0}, paper)
    assert "tau +1.00 (same ordering)" in same and "ours 0.5, paper 0.5" in same
    assert "tau -1.00 (disagrees)" in agreement("gap", {0.0: 2.0, 0.5: 4.0, 0.9: 3.0, 0.99: 1.0}, paper)
    assert "over 3 cells" in agreement("gap", {0.0: 2.0, 0.5: 1.0, 0.9: None, 0.99: 3.0, 7: 1.0}, paper)
    assert "not comparable" in agreement("gap", {0.5: 1.0}, paper)


def test_steps_and_teacher_layouts_put_each_phase_and_cell_in_its_row():
    from sweeps.tools.report.tables import table
    runs = [{"key": s, "final": {}, "phases": {2: {"gap": g, "pixel_fd": 10.0 + g, "teacher_pixel_fd": 20.0,
                                                   "teacher_pixel_fd_ancestral": 30.0, "teacher_ancestral_gamma": 0.5},
                                               1: {"gap": 2 * g, "pixel_fd": 40.0}}} for s, g in ((0, 0.1), (1, 0.3))]
    header, body, comparisons = table("pd_fid_vs_steps", runs)
    rows = {r[0]: dict(zip(header, r)) for r in body}
    assert set(rows) == {"1", "2", "4", "8"}
    assert rows["2"]["runs"] == "2" and float(rows["2"]["student gap"]) == pytest.approx(0.2)
    assert rows["2"]["teacher ancestral pixel FD (gamma)"] == "30 (0.5)" and rows["1"]["teacher DDIM pixel FD"] == "missing"
    assert rows["4"]["runs"] == "0" and rows["8"]["paper (distilled FID)"] == "2.57"
    assert comparisons[0][1] == {1: 40.0, 2: pytest.approx(10.2), 4: None, 8: None}
    cells = [{"key": ("x", "snr"), "phases": {},
              "final": {"teacher_pixel_fd_base_ancestral": 3.0, "teacher_pixel_fd_base": 4.0, "gap": 0.5}}]
    header, body, comparisons = table("pd_param_weighting", cells)
    rows = {r[0]: r for r in body}
    assert len(rows) == 12 and rows["x / snr"][1:4] == ["1", "3", "4"] and rows["x / snr"][-1] == "2.65 / 2.75"
    assert rows["eps / truncated_snr"][1:3] == ["0", "missing"] and rows["eps / truncated_snr"][-1] == "diverges"
    assert [c[1][("x", "snr")] for c in comparisons] == [3.0, 4.0] and comparisons[1][2][("x", "snr")] == 2.75


def test_the_class_conditional_table_has_a_row_per_method_and_step_count_with_the_teacher_beside():
    from sweeps.tools.report.tables import table
    phase = lambda g, acc: {"gap": g, "teacher_gap": 2 * g, "class_acc": acc, "teacher_class_acc": 1.0}  # noqa: E731
    runs = [{"key": "tract", "final": {"teacher_class_acc_base/16step": 0.9}, "phases": {16: phase(0.03, 0.99),
                                                                                         1: phase(0.1, 0.8)}},
            {"key": "tract", "final": {"teacher_class_acc_base/16step": 0.7}, "phases": {1: phase(0.3, 0.6)}},
            {"key": "btd", "final": {}, "phases": {s: phase(0.05 * s, 0.9) for s in (1, 2, 4)}}]
    header, body, comparisons = table("cond_tract_vs_btd", runs)
    rows = {(r[0], r[1]): dict(zip(header, r)) for r in body}
    assert len(rows) == 6 and rows[("tract", "1")]["runs"] == "2"
    assert float(rows[("tract", "1")]["student gap"]) == pytest.approx(0.2)
    assert float(rows[("tract", "1")]["student class acc"]) == pytest.approx(0.7)
    assert float(rows[("tract", "1")]["teacher class acc at its base steps"]) == pytest.approx(0.8)
    assert rows[("tract", "2")]["student gap"] == "missing" and rows[("btd", "4")]["teacher gap"] == "0.4"
    assert comparisons[0][1] == {"btd": pytest.approx(0.05), "tract": pytest.approx(0.2)}


def test_recipe_attribution_cells_take_one_ml_tract_key_each_and_the_report_shows_the_seed_spread():
    """Each +mltract_key option changes exactly its key to ml-tract's value (all: every one, as distill=tract_mltract),
    and the report reads the cell back from the params the job logs, in either order of the overrides."""
    from sweeps.tools.report.specs import MLTRACT, mltract_key
    from sweeps.tools.report.tables import table
    from sweeps.tracking.params import job_params
    options = sorted(p.stem for p in (REPO / "conf" / "mltract_key").glob("*.yaml"))
    assert options == sorted([*MLTRACT, "none", "all"])
    for option in options:
        for order in ([f"+mltract_key={option}", "+experiment=tract_recipe_keys"],
                      ["+experiment=tract_recipe_keys", f"+mltract_key={option}"]):
            with initialize_config_dir(str(REPO / "conf")):
                params = {k: str(v) for k, v in job_params(compose("config", overrides=order)).items()}
            assert mltract_key(params) == option, (order, params)
    runs = [{"key": "none", "final": {"gap": g}, "phases": {}} for g in (0.2, 0.3, 0.25)]
    header, body, _ = table("tract_recipe_keys", runs + [{"key": "lr", "final": {"gap": 0.4}, "phases": {}}])
    rows = {r[0]: dict(zip(header, r)) for r in body}
    assert rows["none"]["runs"] == "3" and float(rows["none"]["gap (ours)"]) == pytest.approx(0.25)
    assert rows["none"]["gap min / max over runs"] == "0.2 / 0.3" and rows["lr"]["gap min / max over runs"] == "0.4 / 0.4"


def test_a_malicious_stored_param_is_refused_not_run(tmp_path):
    """The report parses schedules read back from the store as literals only: code is never run."""
    from sweeps.tools.report.specs import SPECS
    marker = tmp_path / "pwned"
    key = SPECS["tract_phases_total"]["key"]
    with pytest.raises(ValueError):
        key({"distill.schedule": f"__import__('pathlib').Path({str(marker)!r}).touch()"})
    assert not marker.exists()
    assert key({"distill.schedule": "[256, 16, 1]"}) == "2 phase(s)"


def test_the_three_methods_table_puts_the_papers_fid_beside_each_method_and_step_count():
    from sweeps.tools.report.tables import table
    runs = [{"key": m, "final": {}, "phases": {s: {"gap": g * s, "teacher_gap": 0.5, "fid": 10 * g / s} for s in (1, 2, 4)}}
            for m, g in (("btd", 0.3), ("tract", 0.1), ("cd", 0.2))]
    header, body, comparisons = table("three_methods_edm", runs)
    rows = {(r[0], r[1]): dict(zip(header, r)) for r in body}
    assert len(rows) == 9 and rows[("cd", "1")]["paper (FID)"] == "3.55" and rows[("btd", "2")]["paper (FID)"] == "5.58"
    assert rows[("tract", "4")]["paper (FID)"] == "missing" and float(rows[("cd", "2")]["student FID"]) == pytest.approx(1.0)
    what, ours, paper = comparisons[0]
    assert what.startswith("FID") and ours[("btd", 1)] == pytest.approx(3.0) and paper[("tract", 2)] == 3.32
