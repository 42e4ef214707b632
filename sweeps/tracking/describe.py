"""The run description (Markdown at the top of a student run's page): the headline result, links to its
registered version and its teacher, a row per phase."""


def _f(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _ratio(metrics: dict):
    return metrics["gap"] / metrics["teacher_gap"] if metrics.get("teacher_gap") else None


def describe_run(result, what: str, version: str, teacher, experiment_id: str, teacher_run: str = "") -> str:
    """`what`: e.g. `tract vp, schedule 256-16-1`; `version`: the student's `NAME/VERSION`; `teacher`: its
    reference (`teachers.TeacherRef`: `.tag`, `.page`); `teacher_run`: the teacher's run id, if any."""
    last = result.phases[-1]
    m = last.metrics
    name, number = version.rsplit("/", 1)
    lines = [f"**{what}**: the {last.steps}-step student's gap is **{_f(m.get('gap'))}**, {_f(_ratio(m))} of the "
             f"teacher's own {_f(m.get('teacher_gap'))} at {last.steps} step(s)"
             + (f"; FID {_f(m['fid'])}" if "fid" in m else "") + ".",
             "",
             f"Registered as [{version}](#/models/{name}/versions/{number}); teacher [{teacher.tag}]({teacher.page})"
             + (f" (its [run](#/experiments/{experiment_id}/runs/{teacher_run}))" if teacher_run else "") + ".",
             "", "| steps | gap | teacher gap | gap ratio | pixel FD | FID |", "|---|---|---|---|---|---|"]
    for p in result.phases:
        pm = p.metrics
        lines.append(f"| {p.steps} | {_f(pm.get('gap'))} | {_f(pm.get('teacher_gap'))} | {_f(_ratio(pm))} | "
                     f"{_f(pm.get('pixel_fd'))} | {_f(pm.get('fid'))} |")
    return "\n".join(lines)
