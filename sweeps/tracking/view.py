"""The runs table a printed link opens: the result's columns, not MLflow's empty default.

MLflow's runs table shows no metric until the user picks columns (92 to choose from); its UI state
cannot be set from Python except through a "shared view": an experiment tag
`mlflow.sharedViewState.<key>` holding the table's state as JSON, which the UI applies when a link
carries `viewStateShareKey=<key>`. The job publishes the experiment's view (headline metrics and the
method's params); a sweep publishes its own (its runs only, its swept params, ranked by objective).
"""
import json

TAG_PREFIX = "mlflow.sharedViewState."
EXPERIMENT_VIEW = "distill-sweeps"
HEADLINE = ("gap", "teacher_gap", "gap_ratio", "fid", "class_acc")  # final values (the last phase's), rounded when logged
PARAMS = ("distill.method", "distill.schedule", "distill.mu_s")


def column(kind: str, key: str) -> str:
    """A column's key as the UI spells it (`metrics.`gap``, `params.`distill.mu_s``)."""
    return f"{kind}.`{key}`"


def state(params=PARAMS, search: str = "", order_by: str = "", ascending: bool = True) -> dict:
    """The table's state: search facets and UI fields, as the UI's own "share view" writes them. The params come
    first (a sweep's swept keys, left of the fold: its run names are cut there), then the result, then Models."""
    columns = [*(column("params", p) for p in params), *(column("metrics", m) for m in HEADLINE),
               column("attributes", "Models")]
    return {"searchFilter": search, "orderByKey": order_by or "attributes.start_time", "orderByAsc": ascending,
            "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
            "selectedColumns": columns, "runListHidden": False, "viewMaximized": False}


def sweep_key(parent_run_id: str) -> str:
    """The share key of a sweep's own view (its link's `viewStateShareKey`)."""
    return f"sweep-{parent_run_id[:12]}"


def publish(client, experiment_id: str, key: str, view: dict) -> None:
    """Store the view on the experiment, where links carrying `viewStateShareKey=key` find it."""
    client.set_experiment_tag(experiment_id, TAG_PREFIX + key, json.dumps(view))


def sweep_view(search: str, swept: list) -> dict:
    """A sweep's table: its jobs only (`search`), the swept keys as columns, the best (lowest) objective
    first, as the sweep's printed ranking."""
    return state(params=tuple(dict.fromkeys([*swept, "distill.method"])), search=search,
                 order_by=column("metrics", "objective"), ascending=True)
