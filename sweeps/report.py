"""`python -m sweeps.report NAME`: an ablation's MLflow runs as the paper's table and plots.

Reads the finished runs of the experiment `ablation-NAME`, puts each run's final-phase metrics
(gap always; pixel FD, FID/KID when they were computed) in the row of its swept value(s), the
paper's number beside it, marks what is missing rather than failing, and says in one line whether
our ordering of the cells agrees with the paper's (Kendall's tau). Writes Markdown, CSV and PNG plots to
`reports/NAME/`, and logs them as an MLflow run (tag role=report) so the UI shows the report.
"""
import argparse
import ast
import csv
import math
import sys
from pathlib import Path

# Reference numbers: DESIGN.md section 4 (CIFAR-10 FID, 50k samples; "unverified" as noted there).
# PD Table 1: (stochastic sampler, DDIM sampler) FID of the undistilled teacher.
PD_TABLE1 = {("both", "snr"): (2.54, 2.78), ("both", "truncated_snr"): (2.47, 2.76),
             ("both", "snr_plus_one"): (2.52, 2.87), ("x", "snr"): (2.65, 2.75), ("x", "truncated_snr"): (2.53, 2.51),
             ("x", "snr_plus_one"): (2.56, 2.65), ("eps", "snr"): (2.59, 2.91), ("eps", "truncated_snr"): "diverges",
             ("eps", "snr_plus_one"): (2.56, 3.27), ("v", "snr"): (2.65, 3.05), ("v", "truncated_snr"): (2.45, 2.75),
             ("v", "snr_plus_one"): (2.49, 2.87)}


def n_phases(params) -> str:
    return f"{len(ast.literal_eval(params['distill.schedule'])) - 1} phase(s)"  # list reprs: literals only, no code


# layout: "runs" (a row per swept value, final-phase metrics), "steps" (a row per step count, over
# the phases of every run), "teacher" (a row per cell, the teacher's base-step scores first).
def recipe(p: dict) -> str:
    """tract, tract_mltract (summed loss: ml-tract's recipe) or btd, from a run's params."""
    return "tract_mltract" if p.get("distill.loss_reduction") == "sum" else p["distill.method"]


# tract_recipe_keys: ml-tract's value of each recipe key that differs from ours (conf/mltract_key/, docs/recipes.md)
MLTRACT = {"loss_reduction": ("distill.loss_reduction", "sum"), "lr": ("distill.lr", 2e-4),
           "lr_schedule": ("distill.lr_schedule", "constant"), "batch_size": ("distill.batch_size", 256),
           "mu_i": ("distill.mu_i_residual", 1e-3), "target_precision": ("distill.target_precision", "float64"),
           "t0": ("diffusion.t0", "clipped")}


def mltract_key(p: dict) -> str:
    """Which of ml-tract's settings a TRACT run took over ours, from what it logged: none, one key, all."""
    def took(name, want):
        value = p.get(name)
        if value is None:
            return False
        try:
            return float(value) == want if isinstance(want, (int, float)) else str(value) == want
        except ValueError:
            return False
    taken = [key for key, (name, want) in MLTRACT.items() if took(name, want)]
    return "none" if not taken else "all" if len(taken) == len(MLTRACT) else "+".join(taken)


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
    "pd_param_weighting": dict(axes=["distill.parameterization", "distill.weighting"], layout="teacher",
                               key=lambda p: (p["distill.parameterization"], p["distill.weighting"]),
                               paper=PD_TABLE1,
                               note="PD Table 1, undistilled teacher, FID stochastic / DDIM sampler"),
    "tract_vs_btd_budget": dict(axes=["recipe", "budget"], key=lambda p: (recipe(p), int(p["budget"])), paper={},
                                extra=[("teacher gap at the student's steps", "teacher_gap")],
                                note="TRACT section 5: 1024->32->1 (FID 5.24) beats binary BTD (5.95) at 96M "
                                     "samples; no budget sweep published"),
    "tract_recipe_keys": dict(axes=["ml-tract setting"], key=mltract_key, paper={}, spread=True,
                              extra=[("teacher gap at the student's steps", "teacher_gap")],
                              note="no paper numbers: ours (distill=tract) with one of ml-tract's settings at a time "
                                   "(none = ours, all = distill=tract_mltract; docs/recipes.md)"),
    "tract_teacher_family": dict(axes=["diffusion.family"], key=lambda p: p["diffusion.family"],
                                 paper={"vp": 5.02, "edm": 3.78},
                                 extra=[("teacher gap at the student's steps", "teacher_gap"),
                                        ("teacher pixel FD at its base steps", "teacher_pixel_fd_base")],
                                 note="TRACT 1-step FID, CIFAR-10: VP/DDIM teacher 5.02 at 96M samples (Table 1, "
                                      "unverified), EDM/Heun teacher 3.78 at 256M (its EDM tables); gaps are to each "
                                      "family's own teacher, so compare pixel FD (or FID) across rows"),
    "pd_fid_vs_steps": dict(axes=["steps"], layout="steps", key=lambda p: int(p["seed"]),
                            paper={1: 9.12, 2: 4.51, 4: 3.00, 8: 2.57},
                            note="PD Table 2, distilled students' FID (the DDIM / stochastic curves of Fig. 4 "
                                 "are plot only)"),
}
METRICS = ("gap", "pixel_fd", "fid", "kid")
PHASE_METRICS = ("gap", "teacher_gap", "pixel_fd", "teacher_pixel_fd", "teacher_pixel_fd_ancestral",
                 "teacher_ancestral_gamma", "fid", "kid")
TEACHER_METRICS = ("teacher_pixel_fd_base_ancestral", "teacher_pixel_fd_base")


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, tuple):
        return " / ".join(fmt(x) for x in v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def mean(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def collect(name: str) -> list[dict]:
    """The experiment's finished distillation runs: {key, final: {metric: latest}, phases: {steps: {metric}}}."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from . import tracking
    spec, client = SPECS[name], MlflowClient()
    runs = mlflow.search_runs(experiment_names=[f"ablation-{name}"], output_format="list",
                              filter_string="attributes.status != 'RUNNING'")  # (IN: run ids only)
    out = []
    for r in runs:
        if not r.data.tags.get("method"):
            continue  # teacher and report runs
        pruned = r.data.tags.get("pruned_at_phase")
        if r.info.status != "FINISHED" and not pruned:
            continue  # failed, or cut off by hand
        try:
            key = spec["key"](r.data.params)
        except (KeyError, ValueError, SyntaxError):
            continue
        phases = tracking.by_step_count(r.data.metrics)
        if not phases and "phase_steps" in r.data.metrics:  # a run logged before the step-count keys
            history = {m: {h.step: h.value for h in client.get_metric_history(r.info.run_id, m)}
                       for m in PHASE_METRICS + ("phase_steps",) if m in r.data.metrics}
            steps = history.pop("phase_steps", {})
            phases = {int(steps[i]): {m: h[i] for m, h in history.items() if i in h} for i in sorted(steps)}
        out.append({"key": key, "final": dict(r.data.metrics), "phases": phases,
                    "teacher": r.data.tags.get("teacher_version"),
                    "sampler": r.data.params.get("diffusion.teacher_sampler", "ddim"),
                    "fid_protocol": fid_protocol(r.data.tags), "pruned_at_phase": pruned})
    return out


def fid_protocol(tags: dict):
    """How a run's FID was measured (None without a FID): sample count, reference, seed sets, extrapolation."""
    if "fid.num_samples" not in tags:
        return None
    return (f"{tags['fid.num_samples']} samples vs {tags.get('fid.reference', '?')} "
            f"(sha256 {tags.get('fid.reference_sha256', '?')}), {tags.get('fid.extractor', '?')} weights "
            f"{tags.get('fid.weights_sha256', '?')}, {tags.get('fid.protocol', '?')}")


def group(runs: list[dict], metrics) -> dict:
    """{key: {'runs': n, metric: mean over the runs, 'gap_range': (min, max)}} from the runs' final values."""
    rows = {}
    for r in runs:
        rows.setdefault(r["key"], []).append(r["final"])
    out = {}
    for k, v in rows.items():
        gaps = [f["gap"] for f in v if f.get("gap") is not None and not math.isnan(f["gap"])]
        out[k] = {"runs": len(v), **{m: mean([f.get(m) for f in v]) for m in metrics},
                  "gap_range": (min(gaps), max(gaps)) if gaps else None}
    return out


def sorted_keys(keys):
    keys = list(dict.fromkeys(keys))
    try:
        keys.sort(key=lambda k: (str(type(k)), k))
    except TypeError:
        pass
    return keys


def table(name: str, runs: list[dict]):
    """(header, body rows as strings, comparisons) in the paper's layout; a comparison is
    (what, {key: our value}, {key: the paper's value}) for `agreement`."""
    spec = SPECS[name]
    layout, paper = spec.get("layout", "runs"), spec["paper"]
    body, ours, theirs = [], {}, {}
    if layout == "steps":
        per_steps = {}
        for r in runs:
            for steps, m in r["phases"].items():
                per_steps.setdefault(steps, []).append(m)
        header = ["steps", "runs", "student gap", "teacher DDIM gap", "student pixel FD", "teacher DDIM pixel FD",
                  "teacher ancestral pixel FD (gamma)", "student FID", "paper (distilled FID)"]
        for k in sorted_keys(list(per_steps) + list(paper)):
            cells = per_steps.get(k, [])
            avg = {m: mean([c.get(m) for c in cells]) for m in PHASE_METRICS}
            anc = fmt(avg["teacher_pixel_fd_ancestral"])
            if avg["teacher_ancestral_gamma"] is not None:
                anc += f" ({avg['teacher_ancestral_gamma']:.2g})"
            body.append([label(k), str(len(cells)), fmt(avg["gap"]), fmt(avg["teacher_gap"]), fmt(avg["pixel_fd"]),
                         fmt(avg["teacher_pixel_fd"]), anc, fmt(avg["fid"]), fmt(paper.get(k, "plot only"))])
            ours[k] = avg["fid"] if avg["fid"] is not None else avg["pixel_fd"]
        return header, body, [("student FID or pixel FD vs distilled FID", ours, dict(paper))]
    elif layout == "teacher":
        rows = group(runs, TEACHER_METRICS + METRICS)
        header = [" x ".join(spec["axes"]), "runs", "teacher pixel FD ancestral", "teacher pixel FD DDIM",
                  "student gap", "student pixel FD", "paper (FID stochastic / DDIM)"]
        for k in sorted_keys(list(rows) + list(paper)):
            c = rows.get(k, {})
            body.append([label(k), str(c.get("runs", 0)), fmt(c.get("teacher_pixel_fd_base_ancestral")),
                         fmt(c.get("teacher_pixel_fd_base")), fmt(c.get("gap")), fmt(c.get("pixel_fd")),
                         fmt(paper.get(k))])
            for i, metric in enumerate(TEACHER_METRICS):
                ours.setdefault(i, {})[k] = c.get(metric)
                theirs.setdefault(i, {})[k] = paper[k][i] if isinstance(paper.get(k), tuple) else None
        return header, body, [("teacher, ancestral vs stochastic", ours.get(0, {}), theirs.get(0, {})),
                              ("teacher, DDIM", ours.get(1, {}), theirs.get(1, {}))]
    else:
        extra = spec.get("extra", [])  # (column title, metric) beside the standard columns
        rows = group(runs, METRICS + tuple(m for _, m in extra))
        spread = ["gap min / max over runs"] if spec.get("spread") else []  # (several seeds of a cell)
        header = [" x ".join(spec["axes"]), "runs", "gap (ours)", "pixel FD (ours)", "FID (ours)", "KID (ours)",
                  *(title for title, _ in extra), *spread, "paper"]
        for k in sorted_keys(list(rows) + list(paper)):
            c = rows.get(k, {})
            body.append([label(k), str(c.get("runs", 0)), fmt(c.get("gap")), fmt(c.get("pixel_fd")), fmt(c.get("fid")),
                         fmt(c.get("kid")), *(fmt(c.get(m)) for _, m in extra),
                         *([fmt(c.get("gap_range"))] if spread else []),
                         fmt(paper.get(k, "plot only" if not paper else None))])
            ours[k] = next((c[m] for m in ("fid", "pixel_fd", "gap") if c.get(m) is not None), None)
    return header, body, [("FID, else pixel FD, else gap", ours, dict(paper))]


def label(key) -> str:
    return " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def agreement(what: str, ours: dict, theirs: dict) -> str:
    """One line: does our ordering of the cells agree with the paper's (Kendall's tau over shared cells)?"""
    shared = [k for k in ours if ours[k] is not None and isinstance(theirs.get(k), (int, float))]
    if len(shared) < 2:
        return f"ordering vs paper ({what}): not comparable (fewer than two cells with both numbers)"
    from scipy.stats import kendalltau
    tau = kendalltau([ours[k] for k in shared], [theirs[k] for k in shared]).statistic
    best_ours, best_theirs = min(shared, key=ours.get), min(shared, key=theirs.get)
    if math.isnan(tau):
        return f"ordering vs paper ({what}): undefined over {len(shared)} cells (ties)"
    verdict = ("same ordering" if tau > 0.999 else "partly agrees" if tau > 0 else "disagrees")
    return (f"ordering vs paper ({what}) over {len(shared)} cells: Kendall tau {tau:+.2f} ({verdict}); "
            f"best cell: ours {label(best_ours)}, paper {label(best_theirs)}")


def number(cell: str):
    """The leading number of a table cell, or None (missing, diverges, ...)."""
    try:
        return float(cell.split()[0])
    except (ValueError, IndexError):
        return None


def write(name: str, header, body, lines: list[str], runs: list[dict], out: Path) -> list[Path]:
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
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    with open(out / f"{name}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col in zip(axes, (2, 3)):
        points = [(row[0], number(row[col])) for row in body if number(row[col]) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(range(len(xs)), ys, "o-")
            ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(header[0])
        ax.set_ylabel(header[col])
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(out / f"{name}_metric.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    several = len({r.get("teacher") for r in runs}) > 1  # each run's own teacher (e.g. one per noise family)
    for ax, metric in zip(axes, ("gap", "pixel_fd")):
        teacher_drawn = set()
        for r in sorted(runs, key=lambda r: str(r["key"])):
            steps = sorted(s for s in r["phases"] if metric in r["phases"][s])
            if not steps:
                continue
            ax.plot(steps, [r["phases"][s][metric] for s in steps], "o-", label=f"student {r['key']}")
            for tm, style in ((f"teacher_{metric}", "x--"), (f"teacher_{metric}_ancestral", "s:")):
                ts = [s for s in steps if tm in r["phases"][s]]
                if ts and (tm, r.get("teacher")) not in teacher_drawn:
                    teacher_drawn.add((tm, r.get("teacher")))
                    kind = "ancestral" if "ancestral" in tm else {"ddim": "DDIM"}.get(r.get("sampler"), r.get("sampler"))
                    ax.plot(ts, [r["phases"][s][tm] for s in ts], style, alpha=0.7,
                            color=ax.lines[-1].get_color() if several else "grey",
                            label=f"teacher {kind}" + (f" ({r['key']})" if several else ""))
        ax.set_xscale("log", base=2)
        if metric == "pixel_fd" and ax.has_data():
            ax.set_yscale("log")  # spans 0.5 to 50 between the teacher's 1-step and many-step samples
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(metric)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"{name}: per phase")
    fig.tight_layout()
    fig.savefig(out / f"{name}_vs_steps.png", dpi=100)
    plt.close(fig)
    return [out / f"{name}.md", out / f"{name}.csv", out / f"{name}_metric.png", out / f"{name}_vs_steps.png"]


def report(name: str, out: Path, log_run: bool = True) -> None:
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
    files = write(name, header, body, lines, runs, out / name)
    print((out / name / f"{name}.md").read_text())
    if log_run and exp is not None:
        with mlflow.start_run(experiment_id=exp.experiment_id, run_name=f"report {name}", tags={"role": "report"}):
            for f in files:
                mlflow.log_artifact(str(f), "report")


def study_report(study_name: str, storage: str) -> str:
    """An Optuna study as Markdown: one row per trial (state, parameters, intermediate values at each
    phase end, value, pruned-at), and the distillation updates run vs what running every trial to
    its end would have taken."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from .optuna_link import open_storage
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return f"# study {study_name}\n\nno trials yet\n"
    names = sorted({k for t in trials for k in t.params})
    full = max((max(t.intermediate_values) for t in trials if t.state.name == "COMPLETE" and t.intermediate_values),
               default=None)
    lines = [f"# study {study_name}", "", "| trial | state | " + " | ".join(names) + " | at each phase end (update: value)"
             " | value |", "|" + "---|" * (len(names) + 4)]
    for t in trials:
        steps = " ".join(f"{u}: {v:.4g}" for u, v in sorted(t.intermediate_values.items()))
        state = t.state.name.lower() + (f" after update {max(t.intermediate_values)}"
                                        if t.state.name == "PRUNED" and t.intermediate_values else "")
        lines.append(f"| {t.number} | {state} | " + " | ".join(fmt(t.params.get(k)) for k in names) +
                     f" | {steps} | {fmt(t.value)} |")
    counts = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    lines += ["", "- trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and t.intermediate_values]
    if full and done:
        ran = sum(max(t.intermediate_values) for t in done)
        lines.append(f"- distillation updates run: {ran} of {full * len(done)} without pruning "
                     f"({1 - ran / (full * len(done)):.0%} saved)")
    best = [t for t in trials if t.state.name == "COMPLETE"]
    if best:
        b = (min if study.direction.name == "MINIMIZE" else max)(best, key=lambda t: t.value)
        lines.append(f"- best: trial {b.number}, value {b.value:.4g}, " + ", ".join(f"{k}={fmt(v)}" for k, v in b.params.items()))
    return "\n".join(lines) + "\n"


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
        storage = a.storage or os.environ.get("OPTUNA_STORAGE", "sqlite:///optuna.db")
        try:
            text = study_report(a.study, storage)
        except KeyError:
            from .redaction import redact
            print(f"error: --study {a.study}: no such study in {redact(storage)}", file=sys.stderr)
            return 2
        print(text)
        return 0
    if a.name not in SPECS and a.name != "all":
        print(f"error: NAME must be one of {', '.join(SPECS)}, all; got {a.name!r}", file=sys.stderr)
        return 2
    import mlflow
    mlflow.set_tracking_uri(a.tracking_uri or mlflow.get_tracking_uri())
    for name in (SPECS if a.name == "all" else [a.name]):
        report(name, Path(a.out), log_run=not a.no_mlflow_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
