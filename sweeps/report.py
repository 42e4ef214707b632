"""`python -m sweeps.report NAME`: an ablation's MLflow runs as the paper's table and plots.

Reads the finished runs of the experiment `ablation-NAME`, puts each run's final-phase metrics
(gap always; FID/KID when they were computed) in the row of its swept value(s), the paper's number
beside it, and marks what is missing rather than failing. Writes Markdown, CSV and PNG plots to
`reports/NAME/`, and logs them as an MLflow run (tag role=report) so the UI shows the report.
"""
import argparse
import csv
import math
import sys
from pathlib import Path

# Reference numbers: DESIGN.md section 4 (CIFAR-10 FID, 50k samples; "unverified" as noted there).
PD_TABLE1_DDIM = {("both", "snr"): 2.78, ("both", "truncated_snr"): 2.76, ("both", "snr_plus_one"): 2.87,
                  ("x", "snr"): 2.75, ("x", "truncated_snr"): 2.51, ("x", "snr_plus_one"): 2.65,
                  ("eps", "snr"): 2.91, ("eps", "truncated_snr"): "diverges", ("eps", "snr_plus_one"): 3.27,
                  ("v", "snr"): 3.05, ("v", "truncated_snr"): 2.75, ("v", "snr_plus_one"): 2.87}


def n_phases(params) -> str:
    return f"{len(eval(params['distill.schedule'])) - 1} phase(s)"  # schedule params are list reprs


SPECS = {
    "tract_mu_s": dict(axes=["distill.mu_s"], key=lambda p: float(p["distill.mu_s"]),
                       paper={0.0: 6.32, 0.5: 5.24, 0.9: 6.04, 0.99: 7.61},
                       note="TRACT Table 3, FID at 1 step, CIFAR-10, 1024->32->1 (unverified)"),
    "tract_mu_i": dict(axes=["distill.mu_i"], key=lambda p: float(p["distill.mu_i"]),
                       paper={0.999: 6.91, 0.9999: 5.5, 0.99995: 5.24, 0.99999: 8.73},
                       note="TRACT Table 4, FID at 1 step (unverified); CPU values are not the paper's"),
    "tract_phases_total": dict(axes=["distill.schedule"], key=n_phases,
                               paper={"1 phase(s)": 14.40, "2 phase(s)": 5.24, "3 phase(s)": 6.06,
                                      "4 phase(s)": 7.27},
                               note="TRACT Table 5, fixed 96M samples in all (unverified)"),
    "tract_phases_per_phase": dict(axes=["distill.schedule"], key=n_phases, paper={},
                                   note="TRACT, fixed length per phase: no numbers found"),
    "btd_vs_tract": dict(axes=["distill.method"], key=lambda p: p["distill.method"],
                         paper={"btd": 5.95, "tract": 6.8},
                         note="binary schedule at 48M samples per phase (unverified)"),
    "pd_updates_per_phase": dict(axes=["distill.updates_per_phase"], key=lambda p: int(p["distill.updates_per_phase"]),
                                 paper={}, note="PD section 5.3: plot only"),
    "pd_step_factor": dict(axes=["distill.schedule"], key=n_phases, paper={}, note="PD section 5.3: plot only"),
    "pd_param_weighting": dict(axes=["distill.parameterization", "distill.weighting"],
                               key=lambda p: (p["distill.parameterization"], p["distill.weighting"]),
                               paper=PD_TABLE1_DDIM, note="PD Table 1, undistilled teacher, DDIM sampler"),
    "pd_fid_vs_steps": dict(axes=["seed"], key=lambda p: int(p["seed"]),
                            paper={}, note="PD Table 2 (distilled, FID): 1: 9.12, 2: 4.51, 4: 3.00, 8: 2.57"),
}
METRICS = ("gap", "fid", "kid")


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def collect(name: str):
    """{row key: {metric: mean over finished runs, 'runs': n}} plus per-run phase curves."""
    import mlflow
    from mlflow.tracking import MlflowClient
    spec = SPECS[name]
    runs = mlflow.search_runs(experiment_names=[f"ablation-{name}"], output_format="list",
                              filter_string="attributes.status = 'FINISHED'")
    rows, curves, client = {}, [], MlflowClient()
    for r in runs:
        if not r.data.tags.get("method"):
            continue  # teacher and report runs
        try:
            key = spec["key"](r.data.params)
        except (KeyError, ValueError, SyntaxError):
            continue
        cell = rows.setdefault(key, {"runs": 0, **{m: [] for m in METRICS}})
        cell["runs"] += 1
        for m in METRICS:
            if m in r.data.metrics:
                cell[m].append(r.data.metrics[m])
        steps = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "phase_steps")}
        gaps = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "gap")}
        teacher = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "teacher_gap")}
        curves.append((str(key), [(steps[s], gaps[s], teacher.get(s)) for s in sorted(gaps) if s in steps]))
    for cell in rows.values():
        for m in METRICS:
            cell[m] = sum(cell[m]) / len(cell[m]) if cell[m] else None
    return rows, curves


def table(name: str, rows: dict):
    spec = SPECS[name]
    keys = list(rows) + [k for k in spec["paper"] if k not in rows]
    try:
        keys.sort(key=lambda k: (str(type(k)), k))
    except TypeError:
        pass
    header = [" x ".join(spec["axes"]), "runs", "gap (ours)", "FID (ours)", "KID (ours)", "paper"]
    body = []
    for k in keys:
        cell = rows.get(k, {})
        body.append([str(k), str(cell.get("runs", 0)), fmt(cell.get("gap")), fmt(cell.get("fid")),
                     fmt(cell.get("kid")), fmt(spec["paper"].get(k, "plot only" if not spec["paper"] else None))])
    return header, body


def write(name: str, header, body, curves, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    spec = SPECS[name]
    md = [f"# {name}", "", f"Paper column: {spec['note']}. Ours: final phase, mean over finished runs; "
          "FID/KID only where the runs computed them (eval.fid / eval.kid), with their sample count in MLflow.", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    with open(out / f"{name}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    files = [out / f"{name}.md", out / f"{name}.csv"]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [row[0] for row in body if row[2] != "missing"]
    ys = [float(row[2]) for row in body if row[2] != "missing"]
    if xs:
        ax.plot(range(len(xs)), ys, "o-")
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right")
    ax.set_xlabel(" x ".join(spec["axes"]))
    ax.set_ylabel("gap at the final step count (ours)")
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(out / f"{name}_metric.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves:
        if points:
            steps, gap, teacher = zip(*points)
            ax.plot(steps, gap, "o-", label=f"student {label}")
            if all(t is not None for t in teacher):
                ax.plot(steps, teacher, "x--", color="grey", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("gap (students: lines; teacher DDIM: grey)")
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{name}_vs_steps.png", dpi=100)
    plt.close(fig)
    return files + [out / f"{name}_metric.png", out / f"{name}_vs_steps.png"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.report", description=__doc__.splitlines()[0])
    p.add_argument("name", help=f"one of: {', '.join(SPECS)}")
    p.add_argument("--out", default="reports")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--no-mlflow-run", action="store_true", help="do not log the report as an MLflow run")
    a = p.parse_args(argv)
    if a.name not in SPECS:
        print(f"error: NAME must be one of {', '.join(SPECS)}; got {a.name!r}", file=sys.stderr)
        return 2
    import mlflow
    mlflow.set_tracking_uri(a.tracking_uri or mlflow.get_tracking_uri())
    if mlflow.get_experiment_by_name(f"ablation-{a.name}") is None:
        print(f"note: no experiment ablation-{a.name} yet; every cell is missing "
              f"(run: python -m sweeps.run -m +experiment={a.name})", file=sys.stderr)
        rows, curves = {}, []
    else:
        rows, curves = collect(a.name)
    header, body = table(a.name, rows)
    files = write(a.name, header, body, curves, Path(a.out) / a.name)
    print((Path(a.out) / a.name / f"{a.name}.md").read_text())
    if not a.no_mlflow_run and mlflow.get_experiment_by_name(f"ablation-{a.name}") is not None:
        exp = mlflow.get_experiment_by_name(f"ablation-{a.name}")
        with mlflow.start_run(experiment_id=exp.experiment_id, run_name=f"report {a.name}", tags={"role": "report"}):
            for f in files:
                mlflow.log_artifact(str(f), "report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
