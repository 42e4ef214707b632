"""Metric keys: each phase's evaluation under its own key and under its step-count key (`gap/1step`).

The plain keys chart a run over its updates; the step-count keys compare like with like across runs;
`gap_ratio` is the student's gap as a fraction of the teacher's at the same step count.
"""
import re


def step_count_keys(metrics: dict, steps: int) -> dict:
    """A phase's evaluation as logged: each value under its own key (a run's chart over updates) and under
    its step-count key (`gap/1step`: one chart compares like with like across runs), plus the student's
    gap as a fraction of the teacher's at the same step count (`gap_ratio`)."""
    out = {k: float(v) for k, v in metrics.items()}
    if out.get("gap") is not None and out.get("teacher_gap"):
        out["gap_ratio"] = out["gap"] / out["teacher_gap"]
    return {**out, **{f"{k}/{steps}step": v for k, v in out.items()}}


CURVE = "by_steps/"  # the papers' curve: quality against the number of sampling steps


def curve_keys(metrics: dict) -> dict:
    """A phase's evaluation as points of the quality-vs-steps curve, logged at step = its sampling step count:
    the student's gap (and FID/KID, pixel FD when on) beside the teacher's at the same count, so MLflow's
    chart of `by_steps/gap` and `by_steps/teacher_gap` is the curve both papers plot (across runs too)."""
    return {f"{CURVE}{k}": float(v) for k, v in metrics.items() if k in ("gap", "teacher_gap", "fid", "kid", "pixel_fd")}


STEP_KEY = re.compile(r"^(.+)/(\d+)step$")


def by_step_count(metrics: dict) -> dict:
    """{steps: {metric: value}} from a run's step-count keys (`gap/16step` -> {16: {"gap": ...}})."""
    out = {}
    for key, value in metrics.items():
        m = STEP_KEY.match(key)
        if m:
            out.setdefault(int(m.group(2)), {})[m.group(1)] = value
    return out
