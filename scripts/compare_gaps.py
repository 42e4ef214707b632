"""Gap of registered students at 1 and 2 steps beside their teacher's own gap (README table).

    .venv/bin/python scripts/compare_gaps.py [--tracking-uri sqlite:///mlflow.db] [--grids docs/]

For the newest student of each method: RMSE between its N-step DDIM samples and the teacher's
T-step samples from the same 64 noises, for N = 1, 2; and the teacher's own N-step gap.
Loads models with sweeps.registry.load (weights files, no pickle) and samples with .sample(noise, steps).
"""
import argparse
from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient

from distill_core.images import save_grid
from sweeps import registry


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--model", default="distill-students")
    p.add_argument("--steps", default="1,2")
    p.add_argument("--grids", default=None, help="folder for the sample grids (teacher and students)")
    p.add_argument("--versions", default=None, help="comma list of versions (default: the newest per method)")
    a = p.parse_args()
    mlflow.set_tracking_uri(a.tracking_uri)
    client = MlflowClient()
    newest = {}
    wanted = set(a.versions.split(",")) if a.versions else None
    for v in client.search_model_versions(f"name = '{a.model}'"):
        if wanted is not None and str(v.version) not in wanted:
            continue
        m = v.tags.get("method")
        if m and (m not in newest or int(v.version) > int(newest[m].version)):
            newest[m] = v
    steps = [int(s) for s in a.steps.split(",")]
    rows, teachers = [], {}
    for method, v in sorted(newest.items()):
        student = registry.load(f"models:/{a.model}/{v.version}")
        tv = v.tags["teacher_version"]
        teacher = teachers.setdefault(tv, registry.load(f"models:/{tv}"))
        schedule = student.info["schedule"]
        noise = torch.randn(64, *student.data_shape, generator=torch.Generator().manual_seed(1))
        ref = teacher.sample(noise, schedule[0])
        gap = lambda m, n: float((m.sample(noise, n) - ref).pow(2).mean().sqrt())  # noqa: E731
        rows.append((f"{method} {schedule}", [gap(student, n) for n in steps], [gap(teacher, n) for n in steps]))
        if a.grids:
            save_grid(student.sample(noise, 1), Path(a.grids) / f"digits_{method}_1step.png")
            save_grid(ref, Path(a.grids) / f"digits_teacher_{schedule[0]}steps.png")
            save_grid(teacher.sample(noise, 1), Path(a.grids) / "digits_teacher_1step.png")
    head = " | ".join(f"student {n} step{'s' * (n > 1)} | teacher {n} step{'s' * (n > 1)}" for n in steps)
    print(f"| student | {head} |\n|---|" + "---|" * (2 * len(steps)))
    for name, s, t in rows:
        print(f"| {name} | " + " | ".join(f"{x:.4f} | {y:.4f}" for x, y in zip(s, t)) + " |")


if __name__ == "__main__":
    main()
