"""`python -m sweeps.promote --model NAME [--metric fid] [--steps N] [--teacher T] [--dataset D] [--alias champion]`

Moves a registry alias to the best *comparable* version: only versions that sample with the same
step count, were distilled from the same teacher and on the same dataset are ranked together (a
4-step student never beats the 1-step one it should not be compared with, and gaps measured against
different teachers are never ranked as if comparable). Unless given, the class is the current alias
holder's, else the fewest steps present and, among those, the best version's teacher and dataset;
the command says which it used and what it left out. The metric (a version tag) defaults to FID,
else KID, else the gap, whichever the candidates have. Prints the previous and the new holder and
the new champion's page in the MLflow UI. Refuses, with exit code 2, when nothing qualifies.
"""
import argparse
import math

from ..common.errors import command, fail
from ..teachers import TAG

CLASS_KEYS = (("steps", "steps"), ("teacher", TAG), ("dataset", "dataset"))  # (option, version tag)
DEFAULT_METRICS = ("fid", "kid", "gap")


def score(version, metric: str):
    try:
        value = float(version.tags[metric])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def best_version(versions, metric: str, maximize: bool = False):
    scored = [(score(v, metric), int(v.version), v) for v in versions if score(v, metric) is not None]
    if not scored:
        return None
    scored.sort(key=lambda s: (-s[0] if maximize else s[0], -s[1]))  # ties: the newest version
    return scored[0][2]


def comparable_class(versions, metric: str, given: dict, holder=None, maximize: bool = False) -> dict:
    """{tag: value} that every ranked version must share: given on the command line, else the alias
    holder's, else the fewest steps and the best version's teacher and dataset."""
    chosen = {tag: value for tag, value in given.items() if value is not None}
    for _, tag in CLASS_KEYS:
        if tag in chosen:
            continue
        if holder is not None and tag in holder.tags:
            chosen[tag] = holder.tags[tag]
        elif tag == "steps":
            steps = sorted({int(v.tags["steps"]) for v in versions if "steps" in v.tags and score(v, metric) is not None})
            if steps:
                chosen[tag] = str(steps[0])
    pool = [v for v in versions if all(v.tags.get(t) == chosen[t] for t in chosen)]
    best = best_version(pool, metric, maximize)
    for _, tag in CLASS_KEYS:
        if tag not in chosen and best is not None and tag in best.tags:
            chosen[tag] = best.tags[tag]
    return chosen


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.promote", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name, e.g. distill-students")
    parser.add_argument("--metric", default=None, help="version tag to rank by (default: fid, else kid, else gap)")
    parser.add_argument("--steps", type=int, default=None, help="only students that sample in this many steps")
    parser.add_argument("--teacher", default=None, help="only students of this teacher version, e.g. distill-teachers/1")
    parser.add_argument("--dataset", default=None, help="only students distilled on this dataset, e.g. digits")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--maximize", action="store_true", help="higher is better")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    import mlflow
    from mlflow.tracking import MlflowClient
    mlflow.set_tracking_uri(args.tracking_uri or mlflow.get_tracking_uri())
    client = MlflowClient()
    versions = registered_versions(client, args.model)
    metric = ranking_metric(versions, args.metric, args.model)
    try:
        previous = client.get_model_version_by_alias(args.model, args.alias)
    except mlflow.exceptions.MlflowException:
        previous = None
    given = {"steps": None if args.steps is None else str(args.steps), TAG: args.teacher, "dataset": args.dataset}
    chosen = comparable_class(versions, metric, given, previous, args.maximize)
    pool = [v for v in versions if all(v.tags.get(t) == chosen[t] for t in chosen)]
    best = intact_best(pool, metric, args.maximize)
    described = ", ".join(f"{t}={chosen[t]}" for _, t in CLASS_KEYS if t in chosen)
    if best is None:
        fail(f"no version of {args.model} with {described} has {metric} (use --steps, --teacher, --dataset "
             f"to choose another class)")
    ranked = len([v for v in pool if score(v, metric) is not None])
    left_out = len([v for v in versions if score(v, metric) is not None]) - ranked
    print(f"ranked {ranked} version(s) by {metric} with {described}" + (f"; {left_out} not comparable left out" if left_out else ""))
    move_alias(client, args.model, args.alias, best, previous, metric)
    return 0


def intact_best(pool: list, metric: str, maximize: bool):
    """The best version whose weights match their recorded sha256; a tampered one is left out, with a line."""
    import sys

    from ..tracking.registry import RegistryError, verify
    while True:
        best = best_version(pool, metric, maximize)
        if best is None:
            return None
        try:
            verify(best)
            return best
        except RegistryError as e:
            print(f"left out: {e}", file=sys.stderr, flush=True)
            pool = [v for v in pool if v.version != best.version]


def registered_versions(client, model: str) -> list:
    import mlflow
    try:
        versions = client.search_model_versions(f"name = '{model}'")
    except mlflow.exceptions.MlflowException as e:
        fail(f"--model {model}: {(str(e).splitlines() or [''])[0][:300]}")
    if not versions:
        fail(f"--model {model}: no registered versions in {mlflow.get_tracking_uri()}")
    return versions


def ranking_metric(versions, asked, model: str) -> str:
    """`--metric`, else the first of DEFAULT_METRICS that some version has."""
    metric = asked or next((m for m in DEFAULT_METRICS if any(score(v, m) is not None for v in versions)), None)
    if metric is None or not any(score(v, metric) is not None for v in versions):
        fail(f"--metric {asked or ' / '.join(DEFAULT_METRICS)}: none of the {len(versions)} versions of "
             f"{model} has it (tags present: {', '.join(sorted(set().union(*(v.tags for v in versions))))})")
    return metric


def move_alias(client, model: str, alias: str, best, previous, metric: str) -> None:
    """Point `alias` at `best`; say what it pointed at before and where the champion's page is."""
    import mlflow

    from ..tracking.store import denied, ui_link, user
    before = "none" if previous is None else f"version {previous.version} ({metric}={previous.tags.get(metric, 'n/a')})"
    try:
        client.set_registered_model_alias(model, alias, best.version)
    except mlflow.exceptions.MlflowException as e:
        if not denied(e):
            raise
        fail(f"{model}@{alias}: the server refused to move the alias (403 {e.error_code}): user {user()} needs EDIT on {model}")
    print(f"{model}@{alias}: {before} -> version {best.version} ({metric}={best.tags[metric]})")
    print(f"champion: {ui_link(mlflow.get_tracking_uri(), page=f'#/models/{model}/versions/{best.version}')}")
