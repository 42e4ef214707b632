"""Regenerate the README's screenshots of the MLflow UI (docs/ui_*.png) from a fresh 3-run sweep.

    .venv/bin/python scripts/screenshots.py [--folder DIR [--reuse]] [OVERRIDE ...]   # +debug=tiny: a quick look

Runs `python -m sweeps.run -m distill.mu_s=0.5,0.9,0.99 OVERRIDE...` in a temporary folder (or DIR, kept: a
second run there reuses its teacher and resumes a sweep that was cut off; `--reuse`: photograph the last
sweep already there), serves
its store with `mlflow ui` and photographs, in Chromium (the browser test's machinery,
tests/ui_pages.py): the sweep's runs table (the link it prints), a run page, its quality-vs-steps
chart, the teacher-beside-student figure and the registry version (after `sweeps.promote`).
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from ui_pages import ML, browser_problem, chromium_page, mlflow_ui, open_page  # noqa: E402


def sweep(folder: Path, overrides: list) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    out = subprocess.run([sys.executable, "-m", "sweeps.run", "-m", "distill.mu_s=0.5,0.9,0.99", *overrides,
                          f"hydra.sweep.dir={folder}/multirun"], cwd=folder, env=env, capture_output=True, text=True)
    promoted = subprocess.run([sys.executable, "-m", "sweeps.promote", "--model", "distill-students"], cwd=folder,
                              env=env, capture_output=True, text=True)
    if out.returncode or promoted.returncode:
        sys.exit((out.stderr + promoted.stderr)[-3000:])


def main(overrides: list) -> None:
    problem = browser_problem()
    if problem:
        sys.exit(problem)
    import mlflow

    from sweeps.tracking import view
    docs = ROOT / "docs"
    folder, reuse = None, False
    if overrides[:1] == ["--folder"]:
        folder, overrides = Path(overrides[1]).resolve(), overrides[2:]
        folder.mkdir(parents=True, exist_ok=True)
        reuse, overrides = overrides[:1] == ["--reuse"], overrides[overrides[:1] == ["--reuse"]:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or Path(tmp)
        if not reuse:
            print("running the sweep (a few minutes on the default settings)...", flush=True)
            sweep(folder, overrides)
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        parent = mlflow.search_runs(experiment_names=["distill-sweeps"], filter_string="tags.role = 'sweep'",
                                    order_by=["attributes.start_time DESC"], output_format="list")[0]
        link = (f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs?{ML}"
                f"&viewStateShareKey={view.sweep_key(parent.info.run_id)}")  # (the link the sweep printed)
        best = mlflow.search_runs(experiment_names=["distill-sweeps"], order_by=["metrics.objective ASC"],
                                  filter_string=f"tags.sweep_id = '{parent.info.run_id}' and tags.role = 'student'",
                                  output_format="list")[0]
        run_page = f"#/experiments/{best.info.experiment_id}/runs/{best.info.run_id}"
        with mlflow_ui(folder / "mlflow.db", folder / "ui.log") as base, chromium_page(1280, 720) as page:
            shots = [("ui_runs_table", link.replace("http://127.0.0.1:5000", base), best.info.run_name),
                     ("ui_run_page", f"{base}/{run_page}?{ML}", "Description"),
                     ("ui_steps_chart", f"{base}/{run_page}/model-metrics?{ML}", "(by_steps/teacher_gap)"),
                     ("ui_registry", f"{base}/#/models/distill-students/versions/1?{ML}", "Aliases")]
            for name, url, waits_for in shots:
                open_page(page, url, waits_for)
                page.wait_for_timeout(1500)
                page.screenshot(path=docs / f"{name}.png")
                print(f"docs/{name}.png", flush=True)
            figure = mlflow.artifacts.download_artifacts(run_id=best.info.run_id, artifact_path="samples/overview.png",
                                                         dst_path=tmp)
            Path(figure).replace(docs / "ui_samples_overview.png")
            print("docs/ui_samples_overview.png")


if __name__ == "__main__":
    main(sys.argv[1:])
