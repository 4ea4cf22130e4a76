"""Sweeps in `specrun runs` and `specrun plot`: trials grouped under their sweep, best first.

Reads what a sweep left on disk (sweep.json, each trial's trial.json and run files);
never Optuna, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specrun.cli.runs import RunInfo, format_duration, format_value, read_run, spec_name
from specrun.sweep import layout


@dataclass
class SweepGroup:
    spec: str
    name: str
    path: Path
    metric: str
    direction: str
    budget: int | None
    trials: list[RunInfo]  # best first, then the unfinished by number


def read_sweep(folder: Path) -> SweepGroup | None:
    info = layout.read_sweep(folder)
    if not info:
        return None
    trials = [layout.read_trial(p) | {"dir": p} for p in layout.trial_dirs(folder)]
    runs = []
    for trial in layout.best_first(trials, info["direction"]):
        run = read_run(trial.pop("dir"))
        run.trial = trial
        if run.status == "unknown":  # refused before it ran (a combination that does not check)
            run.status, run.message = trial.get("state", "unknown"), trial.get("message", "")
        runs.append(run)
    budget = info.get("trials") if isinstance(info.get("trials"), int) else None
    return SweepGroup(folder.parent.parent.name, folder.name, folder, info["metric"], info["direction"],
                      budget, runs)


def list_sweeps(spec: str | None = None, base="runs") -> list[SweepGroup]:
    name = spec_name(spec) if spec else None
    return [g for g in (read_sweep(f) for f in layout.find_sweeps(base, name)) if g is not None]


def find_sweep(ref: str, base="runs") -> Path | None:
    """A sweep folder from its path, or from ``SPEC/sweeps/NAME`` under ``base``."""
    for path in (Path(ref), Path(base) / ref):
        if path.is_dir() and layout.read_sweep(path):
            return path
    return None


def _settings(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def render_sweep(group: SweepGroup) -> str:
    states: dict = {}
    for run in group.trials:
        states[run.status] = states.get(run.status, 0) + 1
    told = ", ".join(f"{n} {s}" for s, n in states.items())
    budget = f" (budget {group.budget})" if group.budget else ""
    head = (f"sweep {group.spec}/{group.name}: {group.direction} {group.metric}, "
            f"{len(group.trials)} trials{budget}: {told or 'none yet'}")
    columns = ("trial", group.metric, "status", "step", "settings", "duration", "run")
    rows = [tuple(c.upper() for c in columns)]
    for run in group.trials:
        t = run.trial or {}
        rows.append((str(t.get("number", "-")), format_value(t.get("objective")), run.status,
                     "-" if run.step is None else str(run.step), _settings(t.get("params") or {}),
                     format_duration(run.duration_s), run.run_id))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([head] + lines)
