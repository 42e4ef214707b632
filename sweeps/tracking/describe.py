"""The run description (Markdown at the top of a student run's page): the headline result, links to its
registered version and its teacher, a row per phase."""


def _f(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _ratio(metrics: dict):
    return metrics["gap"] / metrics["teacher_gap"] if metrics.get("teacher_gap") else None


ML = "?workflowType=machine_learning"  # (MLflow 3's UI opens its GenAI view on links without it)


def describe_run(result, what: str, version: str, teacher, experiment_id: str, teacher_run: str = "",
                 run_id: str = "") -> str:
    """`what`: e.g. `tract vp, schedule 256-16-1`; `version`: the student's `NAME/VERSION`; `teacher`: its
    reference (`teachers.TeacherRef`: `.tag`, `.page`); `teacher_run`: the teacher's run id, if any.
    The headline and the links come first, in one paragraph (the UI shows the first lines of a collapsed
    description, and links under its fade do not respond); the phases are a fixed-width table in a code
    block (MLflow's Markdown renders tables without cell spacing); then the samples, teacher beside student
    (`samples/overview.png`, served by the UI's own artifact route)."""
    last = result.phases[-1]
    m = last.metrics
    name, number = version.rsplit("/", 1)
    lines = [f"**{what}**: the {last.steps}-step student's gap is **{_f(m.get('gap'))}**, {_f(_ratio(m))} of the "
             f"teacher's own {_f(m.get('teacher_gap'))} at {last.steps} step(s)"
             + (f"; FID {_f(m['fid'])}" if "fid" in m else "")
             + (f"; class accuracy {_f(m['class_acc'])} (teacher {_f(m.get('teacher_class_acc'))})" if "class_acc" in m
                else "") + ". "
             f"Registered as [{version}](#/models/{name}/versions/{number}{ML}); teacher [{teacher.tag}]({teacher.page}{ML})"
             + (f" (its [run](#/experiments/{experiment_id}/runs/{teacher_run}{ML}))" if teacher_run else "") + ".",
             "", "```", f"{'steps':>5}  {'gap':>8}  {'teacher gap':>11}  {'gap ratio':>9}  {'pixel FD':>8}  {'FID':>7}"
             + (f"  {'class acc':>9}  {'teacher':>7}" if "class_acc" in m else "")]
    for p in result.phases:
        for steps, pm in [*sorted(p.also.items(), reverse=True), (p.steps, p.metrics)]:  # (also: other step counts)
            lines.append(f"{steps:>5}  {_f(pm.get('gap')):>8}  {_f(pm.get('teacher_gap')):>11}  {_f(_ratio(pm)):>9}  "
                         f"{_f(pm.get('pixel_fd')):>8}  {_f(pm.get('fid')):>7}"
                         + (f"  {_f(pm.get('class_acc')):>9}  {_f(pm.get('teacher_class_acc')):>7}" if "class_acc" in m
                            else ""))
    figure = [f"![teacher beside student, each phase](get-artifact?path=samples%2Foverview.png&run_uuid={run_id})"]
    return "\n".join(lines + ["```", ""] + (figure if run_id else []))
