"""`python -m sweeps.report --study NAME`: an Optuna study's trials, pruned ones as such."""
from .tables import fmt


def study_report(study_name: str, storage: str) -> str:
    """An Optuna study as Markdown: one row per trial (state, parameters, intermediate values at each
    phase end, value, pruned-at), and the distillation updates run vs what running every trial to
    its end would have taken."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from ...multirun.trial import open_storage
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return f"# study {study_name}\n\nno trials yet\n"
    names = sorted({k for t in trials for k in t.params})
    full = max((max(t.intermediate_values) for t in trials if t.state.name == "COMPLETE" and t.intermediate_values),
               default=None)
    lines = [f"# study {study_name}", "", "| trial | state | " + " | ".join(names) + " | at each phase end (update: value)"
             " | value |", "|" + "---|" * (len(names) + 4)]
    for t in trials:
        steps = " ".join(f"{u}: {v:.4g}" for u, v in sorted(t.intermediate_values.items()))
        state = t.state.name.lower() + (f" after update {max(t.intermediate_values)}"
                                        if t.state.name == "PRUNED" and t.intermediate_values else "")
        lines.append(f"| {t.number} | {state} | " + " | ".join(fmt(t.params.get(k)) for k in names) +
                     f" | {steps} | {fmt(t.value)} |")
    counts = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    lines += ["", "- trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and t.intermediate_values]
    if full and done:
        ran = sum(max(t.intermediate_values) for t in done)
        lines.append(f"- distillation updates run: {ran} of {full * len(done)} without pruning "
                     f"({1 - ran / (full * len(done)):.0%} saved)")
    best = [t for t in trials if t.state.name == "COMPLETE"]
    if best:
        b = (min if study.direction.name == "MINIMIZE" else max)(best, key=lambda t: t.value)
        lines.append(f"- best: trial {b.number}, value {b.value:.4g}, " + ", ".join(f"{k}={fmt(v)}" for k, v in b.params.items()))
    return "\n".join(lines) + "\n"
