"""An ablation's table in the paper's layout, and how far our ordering agrees with the paper's."""
import math

from .specs import METRICS, PHASE_METRICS, SPECS, TEACHER_METRICS


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, tuple):
        return " / ".join(fmt(x) for x in v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def mean(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


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
    (what, {key: our value}, {key: the paper's value}) for `agreement`. Layouts: "runs" (a row per swept
    value, final-phase metrics), "steps" (a row per step count, over the phases of every run), "teacher"
    (a row per cell, the teacher's base-step scores first)."""
    spec = SPECS[name]
    layout = {"steps": steps_table, "teacher": teacher_table, "cell_steps": cell_steps_table}.get(
        spec.get("layout", "runs"), runs_table)
    return layout(spec, runs)


CELL_STEPS = ("gap", "teacher_gap", "class_acc", "teacher_class_acc")
COLUMN_NAMES = {"gap": "student gap", "teacher_gap": "teacher gap", "class_acc": "student class acc",
                "teacher_class_acc": "teacher class acc", "pixel_fd": "student pixel FD", "fid": "student FID",
                "kid": "student KID"}


def base_class_acc(metrics: dict):
    """The teacher's class accuracy at the schedule's base step count: logged once, in the first phase, under that
    phase's step count (`teacher_class_acc_base/16step`)."""
    found = [v for k, v in metrics.items() if k == "teacher_class_acc_base" or k.startswith("teacher_class_acc_base/")]
    return found[0] if found else None


def cell_steps_table(spec: dict, runs: list[dict]):
    """A row per (cell, step count in `spec["steps"]`): each cell's evaluations at that count (a phase's, or the
    final student's at `distill.eval_steps`), averaged over its runs (its seeds), the student beside the teacher at
    the same count; `spec["columns"]` (default CELL_STEPS, then the teacher's class accuracy at its base steps).
    A paper keyed by (cell, steps) is its last column, and the ordering is compared over those pairs."""
    cells, columns = {}, spec.get("columns", CELL_STEPS)
    for r in runs:
        cells.setdefault(r["key"], []).append(r)
    measured = {m for r in runs for f in r["phases"].values() for m, v in f.items() if v is not None}
    columns = [m for m in columns if m in ("gap", "teacher_gap") or m in measured]  # (what no run measured: left out)
    per_step_paper = any(isinstance(k, tuple) for k in spec["paper"])
    bases = {k: mean([base_class_acc(r["final"]) for r in cells[k]]) for k in cells}
    last_column = "paper (FID)" if per_step_paper else \
        "teacher class acc at its base steps" if any(v is not None for v in bases.values()) else None
    header = [" x ".join(spec["axes"]), "steps", "runs", *(COLUMN_NAMES[m] for m in columns)] + \
        ([last_column] if last_column else [])
    body, ours = [], {}
    for k in sorted_keys(cells):
        for steps in spec["steps"]:
            found = [r["phases"][steps] for r in cells[k] if steps in r["phases"]]
            avg = {m: mean([f.get(m) for f in found]) for m in columns}
            last = [fmt(spec["paper"].get((k, steps)) if per_step_paper else bases[k])] if last_column else []
            body.append([label(k), str(steps), str(len(found)), *(fmt(avg[m]) for m in columns), *last])
            if per_step_paper:
                ours[(k, steps)] = avg["fid"] if avg.get("fid") is not None else avg["gap"]
            elif steps == min(spec["steps"]):
                ours[k] = avg["gap"]
    what = "FID (gap where no FID)" if per_step_paper else "1-step gap"
    return header, body, [(what, ours, dict(spec["paper"]))]


def steps_table(spec: dict, runs: list[dict]):
    paper, body, ours = spec["paper"], [], {}
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


def teacher_table(spec: dict, runs: list[dict]):
    paper, body, ours, theirs = spec["paper"], [], {}, {}
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


def runs_table(spec: dict, runs: list[dict]):
    paper, body, ours = spec["paper"], [], {}
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
