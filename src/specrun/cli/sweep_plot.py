"""``specrun plot SWEEP``: the objective against trial number, and the trials' curves overlaid.

The top panel shows each trial's objective (finished trials as dots, pruned ones as
crosses at the last value they measured) and the best so far as a step line; below it,
the objective's series and train.loss of every trial against steps, the best trial bold.
"""

from __future__ import annotations

from pathlib import Path

from specrun.cli.plot import PlotError, _matplotlib, expand, load, panel_of
from specrun.cli.sweep_runs import SweepGroup


def plot_sweep(group: SweepGroup, output: str | Path, metrics: list[str] | None = None) -> tuple[Path, list[str]]:
    Figure, FigureCanvasAgg = _matplotlib()
    trials = [(run.trial or {}, load(Path(run.path), f"trial {(run.trial or {}).get('number')}"))
              for run in group.trials]
    if not trials:
        raise PlotError(f"sweep {group.name} has no trials yet")
    available = {name for _, data in trials for name, series in data.metrics.items() if series}
    wanted = expand(metrics, available) if metrics else list(dict.fromkeys([group.metric, "train.loss"]))
    warnings = [f"no trial has {name}" for name in wanted if name not in available]
    wanted = [name for name in wanted if name in available]
    panels = list(dict.fromkeys(panel_of(name) for name in wanted))

    fig = Figure(figsize=(10, 2.8 * (len(panels) + 1) + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels) + 1, 1, squeeze=False)[:, 0]
    _objective_panel(axes[0], group, trials)
    best = group.trials[0].trial if group.trials and group.trials[0].status == "finished" else None
    for ax, panel in zip(axes[1:], panels):
        for i, (trial, data) in enumerate(trials):
            for name in [n for n in wanted if panel_of(n) == panel]:
                series = data.metrics.get(name)
                if not series:
                    continue
                steps, values = zip(*series)
                is_best = trial is best
                ax.plot(steps, values, color=f"C{i % 10}", linewidth=2.4 if is_best else 1.0,
                        alpha=1.0 if is_best else 0.6, linestyle="--" if name.startswith("val.") else "-",
                        label=f"{data.label} {name}" + (" (best)" if is_best else ""))
        ax.set_ylabel(panel)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if len(trials) <= 12:
            ax.legend(loc="best", fontsize=7)
    fig.suptitle(f"sweep {group.spec}/{group.name}: {group.direction} {group.metric}, {len(trials)} trials",
                 fontsize=10)
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, dpi=100)
    except ValueError as exc:
        raise PlotError(f"{output}: {exc} (use .png, .svg or .pdf)") from None
    except OSError as exc:
        raise PlotError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output, warnings


def _objective_panel(ax, group: SweepGroup, trials) -> None:
    lower = group.direction == "minimize"
    done = sorted((t["number"], t["objective"]) for t, _ in trials
                  if t.get("state") == "finished" and t.get("objective") is not None)
    cut = []
    for trial, data in trials:
        series = data.metrics.get(group.metric)
        if trial.get("state") != "finished" and series:
            cut.append((trial.get("number"), series[-1][1]))
    if done:
        numbers, values = zip(*done)
        ax.plot(numbers, values, "o", color="C0", label="finished")
        best, so_far = [], None
        for v in values:
            so_far = v if so_far is None or (v < so_far if lower else v > so_far) else so_far
            best.append(so_far)
        ax.step(numbers, best, where="post", color="C3", linewidth=1.5, label="best so far")
    if cut:
        numbers, values = zip(*sorted(cut))
        ax.plot(numbers, values, "x", color="0.4", label="pruned or cut short (last value)")
    ax.set_xlabel("trial")
    ax.set_ylabel(group.metric)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=7)
