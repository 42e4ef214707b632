"""The MLflow UI as a user meets it: a tiny job and `promote` (real processes, a SQLite store), a real
`mlflow ui` on 127.0.0.1 and a real Chromium. Each page the job's output leads to shows what matters:
the result in the runs table, the run's headline and its samples, an image at the image view's first
step, the quality-vs-steps chart, the registry's description and alias, the logged model's result.
Under CI=true a missing browser fails the suite instead of skipping."""
import os
import re

import mlflow
import processes
import pytest
from mlflow.tracking import MlflowClient

from ui_pages import ML, browser_problem, chromium_page, image_shown, mlflow_ui, open_page, scroll_to, \
    sidebar_is_classic

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def cli(module, args, cwd):
    proc = processes.cli(module, args, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(the job's printed link, the UI's base URL, the student run) for the store of a tiny job."""
    problem = browser_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the browser test: {problem}")
        pytest.skip(problem)
    store = tmp_path_factory.mktemp("ui")
    out = cli("sweeps.run", ["+debug=tiny", f"hydra.run.dir={store}/out"], store)
    cli("sweeps.promote", ["--model", "distill-students"], store)
    (link,) = [line.split()[1] for line in out.splitlines() if line.startswith("runs: ")]
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=["distill-sweeps"], filter_string="tags.role = 'student'",
                                output_format="list")
    with mlflow_ui(store / "mlflow.db", store / "ui.log") as base:
        yield link.replace("http://127.0.0.1:5000", base), base, run


@pytest.fixture(scope="module")
def page(site):
    with chromium_page() as page:
        yield page


def test_the_printed_link_opens_the_result_in_the_runs_table(site, page):
    link, _, run = site
    text = open_page(page, link, run.info.run_name)
    assert sidebar_is_classic(text), text[:500]
    header = page.locator(".ag-header").inner_text()
    assert all(key in header for key in ("gap", "gap_ratio", "teacher_gap")), header
    gap = run.data.metrics["gap"]
    assert str(gap)[:6] in page.locator(".ag-center-cols-container").inner_text(), "the student's gap, in its row"


def test_the_run_page_leads_with_the_headline_and_shows_teacher_beside_student(site, page):
    _, base, run = site
    url = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?{ML}"
    text = open_page(page, url, "Description")
    assert f"the 1-step student's gap is {run.data.metrics['gap']:.4g}" in text
    assert sidebar_is_classic(text)
    natural, width, height = image_shown(page.locator("img[src*='overview.png']"))
    assert natural > 0 and width > 0 and height > 0


def test_the_image_view_opens_on_a_real_image(site, page):
    """The image card's step slider starts at step 0: `samples` has the teacher's grid there."""
    _, base, run = site
    open_page(page, f"{base}/#/experiments/{run.info.experiment_id}/runs?{ML}&compareRunsMode=CHART", "Run Name")
    card = scroll_to(page, "img[src*='images%2Fsamples%2Bstep%2B0']")
    natural, width, height = image_shown(card)
    assert natural > 0 and width > 0 and height > 0


def test_the_quality_against_steps_chart_is_the_first_section(site, page):
    _, base, run = site
    url = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/model-metrics?{ML}"
    text = open_page(page, url, "(by_steps/teacher_gap)")  # (a chart's legend: drawn after its section)
    sections = re.findall(r"^(\S+)\n?\s*\(\d+\)", text, flags=re.M)
    assert sections and sections[0] == "by_steps", sections
    assert "(by_steps/gap)" in text and "(by_steps/teacher_gap)" in text


def test_the_registry_version_shows_its_description_and_alias(site, page):
    _, base, run = site
    (version,) = MlflowClient().search_model_versions("name = 'distill-students'")
    text = open_page(page, f"{base}/#/models/distill-students/versions/{version.version}?{ML}", "Aliases")
    assert sidebar_is_classic(text)
    assert "tract vp student, 1 step(s)" in text and f"gap {run.data.metrics['gap']:.4g}" in text
    assert "champion" in text, "promote's alias"


def test_the_logged_model_shows_the_result_first(site, page):
    _, base, run = site
    (model,) = [m for m in MlflowClient().search_logged_models([run.info.experiment_id])
                if m.source_run_id == run.info.run_id]
    text = open_page(page, f"{base}/#/experiments/{run.info.experiment_id}/models/{model.model_id}?{ML}", "Metrics")
    assert sidebar_is_classic(text)
    assert f"the 1-step student's gap is {run.data.metrics['gap']:.4g}" in text, "its description"
    metrics = text[text.index("Metrics ("):]
    assert "system/" not in metrics, "only the final evaluation is linked"
    assert metrics.index("gap") < len(metrics)
