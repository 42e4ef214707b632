"""`python -m sweeps.jumps RUN_ID`: where a distilled student loses its teacher, jump by jump.

For each phase checkpoint of a finished (or resumed) student run, the model the phase evaluated
(the inference EMA when there is one) jumps once from each group end of the teacher's own
base-step path to the group start, beside the teacher's own DDIM jump over the same stretch
(`distill_core/jumps.py`); and, starting later inside the groups, how the error grows with the
distance to the group start (what each TRACT bootstrapping step costs). Same noise as the run's gap.
"""
import argparse
import ast

from ..common.errors import command, fail


def eval_state(state: dict, params: dict) -> dict:
    """The weights the phase evaluated: the inference EMA's when the run kept one (distill.mu_i > 0 or
    distill.mu_i_residual set), else the student's."""
    residual = params.get("distill.mu_i_residual")
    use_ema = (residual not in (None, "None", "null")) or float(params.get("distill.mu_i", 0) or 0) > 0
    weights = state["ema_i"] if use_ema else state["student"]
    return {k.removeprefix("module."): v for k, v in weights.items() if k != "updates"}


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.jumps", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="a student run's id (the MLflow UI shows it on the run's page)")
    parser.add_argument("--phase", type=int, default=None, help="only this phase (1 = the first); default: all")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    import tempfile

    import mlflow
    import torch

    from distill_core.jumps import teacher_path
    mlflow.set_tracking_uri(args.tracking_uri or mlflow.get_tracking_uri())
    run, schedule, phases, teacher = read_run(args.run_id, args.phase)
    params = run.data.params
    n = int(params.get("eval.gap_samples", 64))
    noise = torch.randn((n, *teacher.data_shape), generator=torch.Generator().manual_seed(int(params.get("seed", 0)) + 1))
    path = teacher_path(teacher, noise, schedule[0])
    print(f"# {run.info.run_name}: each jump from the teacher's {schedule[0]}-step path ({n} noises, RMSE)\n")
    with tempfile.TemporaryDirectory() as tmp:
        for p in phases:
            student = phase_student(run, teacher, p, schedule[p], tmp)
            print_phase(student, teacher, path, p, schedule[p - 1], schedule[p])
    return 0


def read_run(run_id: str, phase):
    """(run, schedule, the phases to replay, the run's teacher), or one line and exit 2."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ..teachers import TAG, TeacherError, TeacherRef
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        fail(f"run_id {run_id!r}: no such run in {mlflow.get_tracking_uri()}")
    params, tags = run.data.params, run.data.tags
    if "distill.schedule" not in params or TAG not in tags:
        fail(f"run_id {run_id}: not a student run (no distill.schedule param or {TAG} tag)")
    schedule = [int(s) for s in ast.literal_eval(params["distill.schedule"])]  # a list literal: no code runs
    phases = range(1, len(schedule)) if phase is None else [phase]
    if any(not 1 <= p < len(schedule) for p in phases):
        fail(f"--phase must be in 1..{len(schedule) - 1} for the schedule {schedule}; got {phase}")
    try:
        teacher = TeacherRef.from_tag(tags[TAG]).load()
    except TeacherError as e:
        fail(f"run_id {run_id}: {e}")
    return run, schedule, phases, teacher


def phase_student(run, teacher, p: int, steps: int, tmp: str):
    """The model phase `p` evaluated, from its checkpoint artifact."""
    import copy

    import mlflow
    from mlflow.tracking import MlflowClient

    from distill_core.checkpoint import CheckpointError, load_checked
    name = f"checkpoints/phase{p}_{steps}steps.pt"
    try:
        state = load_checked(MlflowClient().download_artifacts(run.info.run_id, name, tmp))
    except (mlflow.exceptions.MlflowException, OSError, CheckpointError) as e:
        fail(f"run_id {run.info.run_id}: no readable {name} ({str(e).splitlines()[0][:160]})")
    student = copy.deepcopy(teacher)
    student.load_state_dict(eval_state(state, run.data.params))
    return student


def print_phase(student, teacher, path, p: int, teacher_steps: int, steps: int) -> None:
    from distill_core.jumps import jump_errors
    ours, theirs = (jump_errors(m, path, steps, teacher_steps) for m in (student, teacher))
    print(f"## phase {p}: {teacher_steps} -> {steps} steps\n")
    print("| jump (base grid) | student | teacher's DDIM jump |\n|---|---|---|")
    for (end, start, e), (_, _, t) in zip(ours["groups"], theirs["groups"]):
        print(f"| {end} -> {start} | {e:.4f} | {t:.4f} |")
    if len(ours["offsets"]) > 1:
        print(f"\nFrom inside the groups (mean over the {steps} groups; offset o = o of the phase teacher's "
              f"steps below the group end):\n\n| offset | steps to the group start | student | teacher's "
              f"DDIM jump |\n|---|---|---|---|")
        size = len(ours["offsets"])
        for (o, e), (_, t) in zip(ours["offsets"], theirs["offsets"]):
            print(f"| {o} | {size - o} | {e:.4f} | {t:.4f} |")
    print()
