"""The pruned ending: the sweep's pruner stopped the job at a phase boundary. What it measured stays
logged, the run ends KILLED with `pruned_at_phase`, the trial is told PRUNED, nothing is registered."""
import logging

log = logging.getLogger(__name__)


def record_pruned(s, run, result) -> float:
    """The objective at the phase it reached (the sweeper sees the trial already told)."""
    import mlflow

    from ..tracking.registry import abandon_model
    phase, last = result.stopped_after, result.phases[-1]
    value = float(last.metrics.get(s.objective, float("nan")))
    mlflow.set_tags({"pruned_at_phase": str(phase), "pruned_at_steps": str(last.steps)})
    abandon_model(run.record.get("model_id"))
    s.trial.prune()
    run.record.update(status="PRUNED")
    mlflow.end_run("KILLED")
    log.info("trial %d pruned after phase %d of %d (%d steps): %s=%.4g", s.trial.number, phase,
             len(s.distill.schedule) - 1, last.steps, s.objective, value)
    return value
