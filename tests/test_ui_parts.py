"""The pieces behind what the UI shows, without a browser: the teacher-beside-student figure, the runs
table's headline values (once, rounded), the sweep's swept keys, the shared view a link opens."""
import json

import mlflow
import processes
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from distill_core.images import save_grid
from sweeps.multirun.parent_run import swept_keys
from sweeps.tracking import view
from sweeps.tracking.figure import overview, rows
from sweeps.tracking.metric_keys import headline_keys, round_significant, step_count_keys


def test_the_overview_puts_each_phases_teacher_beside_its_student(tmp_path):
    assert overview(tmp_path, tmp_path / "overview.png") is None, "no phase ended yet"
    noise = torch.rand(8, 1, 8, 8) * 2 - 1
    save_grid(-torch.ones(8, 1, 8, 8), tmp_path / "samples_teacher_16steps.png")  # the reference: not a row
    for phase, steps in ((1, 16 // 4), (2, 1)):
        save_grid(noise, tmp_path / f"samples_teacher_{steps}steps.png")
        save_grid(-noise, tmp_path / f"samples_phase{phase}_{steps}steps.png")
    assert [label for label, _, _ in rows(tmp_path)] == ["phase 1\n4 steps", "phase 2\n1 step"]
    figure = Image.open(overview(tmp_path, tmp_path / "overview.png")).convert("L")
    grid = Image.open(tmp_path / "samples_phase1_4steps.png")
    assert figure.width > 2 * 2 * grid.width and figure.height > 2 * 2 * grid.height  # 2 columns, 2 rows, x2
    x_teacher, x_student, y = 120, 120 + 2 * grid.width + 8, 28
    teacher = figure.crop((x_teacher, y, x_teacher + 2 * grid.width, y + 2 * grid.height))
    student = figure.crop((x_student, y, x_student + 2 * grid.width, y + 2 * grid.height))
    assert teacher.tobytes() != student.tobytes(), "the teacher's grid and the student's, side by side"


def test_the_headline_values_are_the_final_phases_rounded_and_the_phases_keep_every_digit():
    metrics = {"gap": 0.24247947123, "teacher_gap": 0.0747912, "pixel_fd": 43.740447}
    per_phase = step_count_keys(metrics, 1)
    assert per_phase["gap/1step"] == 0.24247947123 and per_phase["gap_ratio/1step"] == pytest.approx(3.24207, rel=1e-5)
    assert headline_keys(metrics) == {"gap": 0.2425, "teacher_gap": 0.07479, "pixel_fd": 43.74, "gap_ratio": 3.242}
    assert round_significant(0.0) == 0.0 and round_significant(123456.0) == 123500.0


def test_a_sweeps_swept_keys_come_from_its_overrides_and_its_search_space():
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["distill.mu_s=0.5,0.9", "+debug=tiny",
                                                                "distill.schedule=[8,2,1]", "seed=range(0,3)"]},
                                         "sweeper": {"params": {"distill.mu_i": "interval(0.9, 0.999)"}}}})
    assert swept_keys(config) == ["distill.mu_s", "seed", "distill.mu_i"]


def test_the_experiment_view_is_published_for_the_link_to_open(tmp_path):
    from sweeps.tracking import store
    uri = processes.sqlite(tmp_path)
    exp = store.setup(uri, "distill-sweeps")
    state = json.loads(MlflowClient().get_experiment(exp).tags[view.TAG_PREFIX + view.EXPERIMENT_VIEW])
    assert {"metrics.`gap`", "metrics.`gap_ratio`", "params.`distill.mu_s`"} <= set(state["selectedColumns"])
    assert f"viewStateShareKey={view.EXPERIMENT_VIEW} " in store.ui_link(uri, exp) + " "
    mlflow.set_tracking_uri(None)
