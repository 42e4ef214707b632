"""Metric keys: each phase's evaluation under its step-count key (`gap/1step`), the run's result under the
plain keys (`gap`), and the quality-vs-steps curve (`by_steps/gap`).

The plain keys are logged once, with the final phase's values: logged per phase they drew a line from
the 16-step evaluation to the 1-step one that read as "the gap got worse during training". They are the
runs table's columns, rounded to 4 significant digits (MLflow's table prints every digit); full precision
stays under the step-count keys. `gap_ratio` is the student's gap as a fraction of the teacher's at the
same step count.
"""
import math
import re


def with_ratio(metrics: dict) -> dict:
    out = {k: float(v) for k, v in metrics.items()}
    if out.get("gap") is not None and out.get("teacher_gap"):
        out["gap_ratio"] = out["gap"] / out["teacher_gap"]
    return out


def step_count_keys(metrics: dict, steps: int) -> dict:
    """A phase's evaluation under its step-count keys (`gap/1step`: one chart compares like with like across
    runs), the gap ratio included."""
    return {f"{k}/{steps}step": v for k, v in with_ratio(metrics).items()}


def headline_keys(metrics: dict) -> dict:
    """The final phase's evaluation as the run's result: plain keys, 4 significant digits."""
    return {k: round_significant(v) for k, v in with_ratio(metrics).items()}


def round_significant(value: float, digits: int = 4) -> float:
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


CURVE = "by_steps/"  # the papers' curve: quality against the number of sampling steps


def curve_keys(metrics: dict) -> dict:
    """A phase's evaluation as points of the quality-vs-steps curve, logged at step = its sampling step count:
    the student's gap (and FID/KID, pixel FD when on) beside the teacher's at the same count, so MLflow's
    chart of `by_steps/gap` and `by_steps/teacher_gap` is the curve both papers plot (across runs too)."""
    return {f"{CURVE}{k}": float(v) for k, v in metrics.items()
            if k in ("gap", "teacher_gap", "fid", "kid", "pixel_fd", "class_acc", "teacher_class_acc")}


STEP_KEY = re.compile(r"^(.+)/(\d+)step$")


def by_step_count(metrics: dict) -> dict:
    """{steps: {metric: value}} from a run's step-count keys (`gap/16step` -> {16: {"gap": ...}})."""
    out = {}
    for key, value in metrics.items():
        m = STEP_KEY.match(key)
        if m:
            out.setdefault(int(m.group(2)), {})[m.group(1)] = value
    return out
