"""`python -m sweeps.promote --model NAME --metric fid [--alias champion]`

Moves a registry alias to the version with the best (lowest, unless --maximize) value of a
metric recorded as a version tag, and prints the previous and the new holder. Refuses, with
exit code 2, when no version has the metric.
"""
import argparse
import math
import sys


def best_version(versions, metric: str, maximize: bool = False):
    scored = []
    for v in versions:
        try:
            value = float(v.tags[metric])
        except (KeyError, ValueError):
            continue
        if math.isfinite(value):
            scored.append((value, int(v.version), v))
    if not scored:
        return None
    scored.sort(key=lambda s: (-s[0] if maximize else s[0], -s[1]))  # ties: the newest version
    return scored[0][2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.promote", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name, e.g. distill-students")
    parser.add_argument("--metric", required=True, help="version tag to rank by: fid, kid or gap")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--maximize", action="store_true", help="higher is better")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    args = parser.parse_args(argv)

    import mlflow
    from mlflow.tracking import MlflowClient
    mlflow.set_tracking_uri(args.tracking_uri or mlflow.get_tracking_uri())
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{args.model}'")
    except mlflow.exceptions.MlflowException as e:
        print(f"error: --model {args.model}: {(str(e).splitlines() or [''])[0][:300]}", file=sys.stderr)
        return 2
    if not versions:
        print(f"error: --model {args.model}: no registered versions in {mlflow.get_tracking_uri()}", file=sys.stderr)
        return 2
    best = best_version(versions, args.metric, args.maximize)
    if best is None:
        print(f"error: --metric {args.metric}: none of the {len(versions)} versions of {args.model} has it "
              f"(tags present: {', '.join(sorted(set().union(*(v.tags for v in versions))))})", file=sys.stderr)
        return 2
    try:
        previous = client.get_model_version_by_alias(args.model, args.alias)
        before = f"version {previous.version} ({args.metric}={previous.tags.get(args.metric, 'n/a')})"
    except mlflow.exceptions.MlflowException:
        before = "none"
    try:
        client.set_registered_model_alias(args.model, args.alias, best.version)
    except mlflow.exceptions.MlflowException as e:
        from .tracking import denied, user
        if not denied(e):
            raise
        print(f"error: {args.model}@{args.alias}: the server refused to move the alias (403 {e.error_code}): "
              f"user {user()} needs EDIT on {args.model}", file=sys.stderr)
        return 2
    print(f"{args.model}@{args.alias}: {before} -> version {best.version} ({args.metric}={best.tags[args.metric]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
