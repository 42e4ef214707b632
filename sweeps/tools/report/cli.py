"""`python -m sweeps.report NAME`: an ablation's MLflow runs as the paper's table and plots.

Reads the finished runs of the experiment `ablation-NAME`, puts each run's final-phase metrics
(gap always; pixel FD, FID/KID when they were computed) in the row of its swept value(s), the
paper's number beside it, marks what is missing rather than failing, and says in one line whether
our ordering of the cells agrees with the paper's (Kendall's tau). Writes Markdown, CSV and PNG plots to
`reports/NAME/`, and logs them as an MLflow run (tag role=report) so the UI shows the report.
"""
import argparse
import csv
import sys
from pathlib import Path

from ...common.errors import command, fail
from .plots import plot_cells, plot_steps
from .queries import collect
from .specs import SPECS
from .tables import agreement, fmt, label, table


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.report", description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(SPECS)}, or all")
    p.add_argument("--study", help="instead: an Optuna study's trials (pruned ones as such) and the updates pruning saved")
    p.add_argument("--storage", default=None, help="the study's storage (default: $OPTUNA_STORAGE or sqlite:///optuna.db)")
    p.add_argument("--out", default="reports")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--no-mlflow-run", action="store_true", help="do not log the report as an MLflow run")
    a = p.parse_args(argv)
    if a.study:
        import os

        from .study import study_report
        storage = a.storage or os.environ.get("OPTUNA_STORAGE", "sqlite:///optuna.db")
        try:
            text = study_report(a.study, storage)
        except KeyError:
            fail(f"--study {a.study}: no such study in {storage}")
        print(text)
        return 0
    if a.name not in SPECS and a.name != "all":
        fail(f"NAME must be one of {', '.join(SPECS)}, all; got {a.name!r}")
    import mlflow
    mlflow.set_tracking_uri(a.tracking_uri or mlflow.get_tracking_uri())
    for name in (SPECS if a.name == "all" else [a.name]):
        report(name, Path(a.out), log_run=not a.no_mlflow_run)
    return 0


def report(name: str, out: Path, log_run: bool = True) -> None:
    """The report of ablation `name`: printed, written under `out/name`, and logged as a run (`role=report`)."""
    import mlflow
    exp = mlflow.get_experiment_by_name(f"ablation-{name}")
    if exp is None:
        print(f"note: no experiment ablation-{name} yet; every cell is missing "
              f"(run: python -m sweeps.run -m +experiment={name})", file=sys.stderr)
    everything = collect(name) if exp is not None else []
    runs = [r for r in everything if not r["pruned_at_phase"]]
    pruned = [r for r in everything if r["pruned_at_phase"]]
    header, body, comparisons = table(name, runs)
    lines = [agreement(*c) for c in comparisons]
    if pruned:  # stopped by an Optuna pruner: not results of their cell, but say so
        lines.append(f"pruned by the sweep (not in the table): {len(pruned)} run(s): " + "; ".join(
            f"{label(r['key'])} after phase {r['pruned_at_phase']} (gap {fmt(r['final'].get('gap'))})"
            for r in sorted(pruned, key=lambda r: str(r["key"]))))
    folder = out / name
    files = [write_table(name, header, body, lines, runs, folder), *write_csv(name, header, body, folder),
             plot_cells(name, header, body, folder / f"{name}_metric.png"),
             plot_steps(name, runs, folder / f"{name}_vs_steps.png")]
    print((folder / f"{name}.md").read_text())
    if log_run and exp is not None:
        with mlflow.start_run(experiment_id=exp.experiment_id, run_name=f"report {name}", tags={"role": "report"}):
            for f in files:
                mlflow.log_artifact(str(f), "report")


def write_table(name: str, header, body, lines: list[str], runs: list[dict], out: Path) -> Path:
    """The Markdown report: what the columns are, the table, the agreement lines, the FID protocols."""
    out.mkdir(parents=True, exist_ok=True)
    spec = SPECS[name]
    ours = ("each step count over the phases of the finished runs, mean over runs" if spec.get("layout") == "steps"
            else "final phase, mean over finished runs")
    md = [f"# {name}", "", f"Paper column: {spec['note']}. Ours: {ours}; "
          "pixel FD = Fréchet distance on raw pixels vs the data (lower is better; not comparable with FID); "
          "FID/KID only where the runs computed them (eval.fid / eval.kid).", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    md += [""] + [f"- {line}" for line in lines]
    protocols = sorted({r["fid_protocol"] for r in runs if r.get("fid_protocol")})
    md += [f"- FID protocol{'s (not comparable with each other)' if len(protocols) > 1 else ''}: {p}" for p in protocols]
    path = out / f"{name}.md"
    path.write_text("\n".join(md) + "\n")
    return path


def write_csv(name: str, header, body, out: Path) -> list[Path]:
    path = out / f"{name}.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    return [path]
