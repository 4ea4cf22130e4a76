"""plot: a picture of one or more runs (``specrun plot``).

One panel per metric (``loss`` shows train.loss and val.loss together), against
optimizer steps. What is drawn by default: the loss, the ``checkpoint.best``
metric, and every series the plan's gates read (curriculum promotions, stop,
switches, expectations, taken from the gate texts in plan.json). Phase
promotions (``phase`` events) are vertical lines; the constant a gate compares
a metric against
(``mean(train.accuracy, 100) >= 0.95``) is a horizontal line on that metric's
panel. Several runs overlay, one colour per run.

matplotlib is optional (``pip install 'specrun[plot]'``) and imported only here,
with the Agg canvas (no display, no pyplot global state).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from specrun.cli.runs import read_events, read_metrics, validation_series
from specrun.engine.atomic import read_json_object

PLOT_EXTRA = "pip install 'specrun[plot]'"
COMPARISONS = {"<", "<=", ">", ">=", "==", "!="}
_SERIES = re.compile(r"\b((?:train|val)\.[A-Za-z_][A-Za-z0-9_]*)")
_THRESHOLD = re.compile(
    r"((?:train|val)\.[A-Za-z_][A-Za-z0-9_]*)[^<>=!]*?(>=|<=|>|<)\s*(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


class PlotError(RuntimeError):
    """Nothing to draw (no such metric, empty runs)."""


@dataclass(frozen=True)
class Gate:
    label: str  # "promote warm", "stop", "switch model.memory"
    text: str  # the expression as written in plan.json
    phase: tuple[str, str] | None = None  # (axis, phase) a promotion gate is judged in; None: the whole run


@dataclass(frozen=True)
class Threshold:
    series: str  # "train.accuracy"
    value: float
    label: str  # the whole gate: "promote warm: phase.steps >= 20 and mean(train.accuracy, 10) >= 0.95"
    phase: tuple[str, str] | None = None  # drawn over that phase's steps only


@dataclass
class RunData:
    path: Path
    label: str
    plan: dict
    metrics: dict[str, list[tuple[int, float]]]
    events: list[dict] = field(default_factory=list)

    @property
    def promotions(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "phase"]


def load(run_dir: Path, label: str | None = None) -> RunData:
    run_dir = Path(run_dir)
    plan = read_json_object(run_dir / "plan.json")
    events = read_events(run_dir)
    metrics = read_metrics(run_dir)
    for name, series in validation_series(events).items():  # metrics.csv may lack a val column
        metrics.setdefault(name, series)
    return RunData(run_dir, label or run_dir.name, plan, metrics, events)


def load_healthy(dirs: list[Path], labels: list[str]) -> tuple[list[RunData], list[str]]:
    """(the runs that can be drawn, a warning for each damaged one). A run directory is read back
    from disk: a damaged plan.json loses its gate lines, a run that cannot be read at all is left
    out, and neither stops the others being drawn."""
    loaded, warnings = [], []
    for run_dir, label in zip(dirs, labels):
        try:
            data = load(run_dir, label)
        except Exception as exc:
            warnings.append(f"{run_dir} is damaged and left out ({type(exc).__name__}: {exc})"[:300])
            continue
        try:
            for gate in gates(data.plan):
                gate_thresholds(gate)
        except Exception as exc:
            warnings.append(f"{run_dir}/plan.json is damaged ({type(exc).__name__}): its gate lines are not drawn")
            data.plan = {}
        loaded.append(data)
    return loaded, warnings


# ---- what the gates read -------------------------------------------------------------------

def gates(plan: dict) -> list[Gate]:
    """Every gate expression of a plan.json, with a label saying what it decides."""
    out = []
    axes = plan.get("curriculum") or []
    for axis in axes:
        for phase in axis.get("phases") or []:
            if phase.get("promote"):
                where = phase["name"] if len(axes) == 1 else f"{axis.get('axis')}.{phase['name']}"
                out.append(Gate(f"promote {where}", str(phase["promote"]), (str(axis.get("axis")), phase["name"])))
    settings = plan.get("settings") or {}
    if settings.get("stop"):
        out.append(Gate("stop", str(settings["stop"])))
    for sw in plan.get("switches") or []:
        if sw.get("gate"):
            out.append(Gate(f"switch {sw.get('target')}.{sw.get('name')}", str(sw["gate"])))
    for exp in settings.get("expect") or []:
        if isinstance(exp, dict) and exp.get("expr"):
            out.append(Gate("expect", str(exp["expr"])))
    return out


def _parse_expr(text: str):
    from specrun.spec.parse import parse_expression

    return parse_expression(text, "<plan.json>")


def gate_series(text: str) -> set[str]:
    """The metric series (``train.x``/``val.x``) an expression reads."""
    try:
        from specrun.spec.expr import series_refs

        return series_refs(_parse_expr(text))
    except Exception:  # a plan written by another version: fall back to the text
        return set(_SERIES.findall(text))


def gate_thresholds(gate: Gate) -> list[Threshold]:
    """Constants compared against one series: ``mean(train.accuracy, 100) >= 0.95`` -> 0.95."""
    try:
        expr = _parse_expr(gate.text)
        found = list(_thresholds_in(expr))
    except Exception:
        found = [(m[0], m[1], float(m[2])) for m in _THRESHOLD.findall(gate.text)]
    # Labelled with the whole gate: half of `a and b` would say the phase ends when it does not.
    return [Threshold(series, value, f"{gate.label}: {gate.text}", gate.phase) for series, op, value in found]


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _thresholds_in(expr):
    from specrun.spec import syntax as s
    from specrun.spec.expr import series_refs, walk

    def constant(node):
        if isinstance(node, s.Number):
            return float(node.value)
        if isinstance(node, s.Neg) and isinstance(node.operand, s.Number):
            return -float(node.operand.value)
        return None

    for node in walk(expr):
        if not (isinstance(node, s.BinOp) and node.op in COMPARISONS):
            continue
        for side, other, op in ((node.left, node.right, node.op), (node.right, node.left, _FLIP[node.op])):
            value = constant(other)
            refs = series_refs(side)
            if value is not None and len(refs) == 1:
                yield next(iter(refs)), op, value


# ---- choosing panels ------------------------------------------------------------------------

def default_metrics(runs: list[RunData]) -> list[str]:
    names = ["train.loss", "val.loss"]
    for run in runs:
        for gate in gates(run.plan):
            names += sorted(gate_series(gate.text))
        best = ((run.plan.get("settings") or {}).get("checkpoint") or {}).get("best") or {}
        if best.get("metric"):
            names.append(best["metric"])
    return list(dict.fromkeys(names))


def expand(requested: list[str], available: set[str]) -> list[str]:
    """``accuracy`` means train.accuracy and val.accuracy (those that exist)."""
    out = []
    for name in requested:
        if name in available or "." in name:
            out.append(name)
        else:
            out += [f"{split}.{name}" for split in ("train", "val") if f"{split}.{name}" in available] or [name]
    return list(dict.fromkeys(out))


def panel_of(series: str) -> str:
    split, _, rest = series.partition(".")
    return rest if split in ("train", "val") and rest else series


# ---- drawing ---------------------------------------------------------------------------------------

def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(f"specrun plot needs matplotlib, which is not installed: {PLOT_EXTRA}") from None
    return Figure, FigureCanvasAgg


def plot_runs(runs: list[RunData], output: str | Path, metrics: list[str] | None = None,
              title: str | None = None) -> tuple[Path, list[str]]:
    """Draw ``runs`` into ``output`` (PNG, or whatever the suffix says). Returns (path, warnings)."""
    fig, warnings = build_figure(runs, metrics, title)
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, dpi=100)
    except ValueError as exc:  # matplotlib: "Format 'txt' is not supported"
        raise PlotError(f"{output}: {exc} (use .png, .svg or .pdf)") from None
    except OSError as exc:
        raise PlotError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output, warnings


def build_figure(runs: list[RunData], metrics: list[str] | None = None, title: str | None = None):
    """(matplotlib Figure, warnings): one panel per metric, runs overlaid."""
    Figure, FigureCanvasAgg = _matplotlib()
    if not runs:
        raise PlotError("no runs to plot")
    available = {name for run in runs for name, series in run.metrics.items() if series}
    wanted = expand(metrics, available) if metrics else default_metrics(runs)
    warnings = [f"no run has {name}" for name in wanted if name not in available and metrics]
    if not metrics and "train.loss" not in available:
        warnings.append("no run has train.loss")
    wanted = [name for name in wanted if name in available]
    if not wanted:
        raise PlotError("nothing to plot: " + (", ".join(metrics) if metrics else "the runs have no metrics yet")
                        + f" (the runs have: {', '.join(sorted(available)) or 'no metrics.csv rows'})")
    panels = list(dict.fromkeys(panel_of(name) for name in wanted))
    thresholds = _all_thresholds(runs)

    fig = Figure(figsize=(10, 2.6 * len(panels) + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(runs))]
    several = len(runs) > 1
    for ax, panel in zip(axes, panels):
        for run, colour in zip(runs, colours):
            for name in [n for n in wanted if panel_of(n) == panel]:
                series = run.metrics.get(name)
                if not series:
                    continue
                steps, values = zip(*series)
                val = name.startswith("val.")
                ax.plot(steps, values, color=colour, linestyle="--" if val else "-",
                        marker="o" if val else None, markersize=3.5, linewidth=1.3,
                        label=f"{run.label} {name}" if several else name)
            for promo in run.promotions:
                ax.axvline(promo.get("step", 0), color=colour, linestyle=":", linewidth=1.0, alpha=0.8)
        for th in thresholds:
            if panel_of(th.series) == panel and any(n == th.series for n in wanted):
                _draw_threshold(ax, th, runs, colours)
        ax.set_ylabel(panel)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    top = axes[0]
    at_step: dict = {}  # labels already at a step: the next one goes beside them, not on top
    for run, colour in zip(runs, colours):
        for promo in run.promotions:
            text = f"{promo.get('old')}→{promo.get('new')}"
            if len({p.get('axis') for p in run.promotions}) > 1:
                text = f"{promo.get('axis')}: {text}"
            step = promo.get("step", 0)
            beside = at_step[step] = at_step.get(step, -1) + 1
            top.annotate(text, xy=(step, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2 + 13 * beside, -2), textcoords="offset points", rotation=90, ha="left",
                         va="top", fontsize=9, color=colour,
                         bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    axes[-1].set_xlabel("step")
    fig.suptitle(title or _title(runs), fontsize=10)
    return fig, warnings


def phase_spans(run: RunData, axis: str, phase: str) -> list[tuple[float, float]]:
    """The steps during which ``axis`` was in ``phase``, from the run's ``phase`` events."""
    moves = sorted((e for e in run.promotions if str(e.get("axis")) == axis), key=lambda e: e.get("step", 0))
    phases = next((a.get("phases") or [] for a in run.plan.get("curriculum") or [] if str(a.get("axis")) == axis), [])
    current = moves[0].get("old") if moves else (phases[0].get("name") if phases else None)
    last = max((s for series in run.metrics.values() for s, _ in series), default=0)
    spans, start = [], 0
    for move in moves:
        if move.get("old") == current and current == phase:
            spans.append((start, move.get("step", 0)))
        current, start = move.get("new"), move.get("step", 0)
    if current == phase:
        spans.append((start, max(last, start)))
    return spans


def _draw_threshold(ax, th: Threshold, runs: list[RunData], colours: list[str]) -> None:
    """A gate's constant as a dash-dot line: over its phase's steps in each run, else across the run."""
    several = len(runs) > 1
    if th.phase is None:
        ax.axhline(th.value, color="0.35", linestyle="-.", linewidth=0.9)
        ax.annotate(th.label, xy=(1.0, th.value), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.25")
        return
    starts = []
    for run, colour in zip(runs, colours):
        for start, end in phase_spans(run, *th.phase):
            ax.hlines(th.value, start, end, colors=colour if several else "0.35", linestyles="-.", linewidth=0.9)
            starts.append(start)
    if starts:  # written from where the phase began, into the plot (its span may be short)
        ax.annotate(th.label, xy=(min(starts), th.value), xycoords="data", xytext=(4, 3),
                    textcoords="offset points", ha="left", va="bottom", fontsize=8, color="0.25")


def run_labels(dirs: list[Path]) -> list[str]:
    """Legend names that tell the runs apart. A run id only says when a run started: runs of one
    spec are named by their profile and overrides, and by id only where those are the same."""
    def config(path: Path) -> str:
        plan = read_json_object(path / "plan.json")
        profile = plan.get("profile") if isinstance(plan.get("profile"), str) else None
        overrides = [o for o in plan.get("overrides") or [] if isinstance(o, str)] \
            if isinstance(plan.get("overrides"), list) else []
        return " ".join(([f"-p {profile}"] if profile else []) + overrides)

    configs = [config(d) for d in dirs]
    specs = {d.parent.name for d in dirs}
    labels = []
    for d, conf in zip(dirs, configs):
        if len(set(configs)) == 1:
            label = d.name  # nothing but time tells them apart
        else:
            label = conf or "(as written)"
            if configs.count(conf) > 1:
                label += f" {d.name}"
        labels.append(f"{d.parent.name}: {label}" if len(specs) > 1 else label)
    return labels


def _all_thresholds(runs: list[RunData]) -> list[Threshold]:
    seen = {}
    for run in runs:
        for gate in gates(run.plan):
            for th in gate_thresholds(gate):
                seen.setdefault((th.series, th.value, th.phase), th)
    return list(seen.values())


def _title(runs: list[RunData]) -> str:
    names = list(dict.fromkeys(run.plan.get("name") or run.path.parent.name for run in runs))
    if len(runs) == 1:
        run = runs[0]
        profile = run.plan.get("profile")
        return f"{names[0]} / {run.path.name}" + (f" (profile {profile})" if profile else "")
    return f"{', '.join(names)}: {len(runs)} runs"
