"""An ablation's two plots: its metrics per cell, and gap / pixel FD against the number of sampling steps,
each run's student beside its teacher."""
from pathlib import Path

from .tables import number


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_cells(name: str, header, body, path: Path) -> Path:
    """Columns 2 and 3 of the table (the first two metrics) against the cells."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col in zip(axes, (2, 3)):
        points = [(row[0], number(row[col])) for row in body if number(row[col]) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(range(len(xs)), ys, "o-")
            ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(header[0])
        ax.set_ylabel(header[col])
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_steps(name: str, runs: list[dict], path: Path) -> Path:
    """Gap and pixel FD per phase against the sampling steps (log 2), the teachers' curves dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    several = len({r.get("teacher") for r in runs}) > 1  # each run's own teacher (e.g. one per noise family)
    for ax, metric in zip(axes, ("gap", "pixel_fd")):
        drawn = set()
        for r in sorted(runs, key=lambda r: str(r["key"])):
            steps = sorted(s for s in r["phases"] if metric in r["phases"][s])
            if steps:
                ax.plot(steps, [r["phases"][s][metric] for s in steps], "o-", label=f"student {r['key']}")
                _teacher_curves(ax, r, metric, steps, drawn, several)
        ax.set_xscale("log", base=2)
        if metric == "pixel_fd" and ax.has_data():
            ax.set_yscale("log")  # spans 0.5 to 50 between the teacher's 1-step and many-step samples
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(metric)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"{name}: per phase")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _teacher_curves(ax, r: dict, metric: str, steps, drawn: set, several: bool) -> None:
    """The run's teacher at the same step counts (DDIM and ancestral), once per teacher."""
    for tm, style in ((f"teacher_{metric}", "x--"), (f"teacher_{metric}_ancestral", "s:")):
        ts = [s for s in steps if tm in r["phases"][s]]
        if ts and (tm, r.get("teacher")) not in drawn:
            drawn.add((tm, r.get("teacher")))
            kind = "ancestral" if "ancestral" in tm else {"ddim": "DDIM"}.get(r.get("sampler"), r.get("sampler"))
            ax.plot(ts, [r["phases"][s][tm] for s in ts], style, alpha=0.7,
                    color=ax.lines[-1].get_color() if several else "grey",
                    label=f"teacher {kind}" + (f" ({r['key']})" if several else ""))
