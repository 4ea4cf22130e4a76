"""runs: what ran, read back from run directories (``specrun runs``).

Everything here reads files a run left behind (run.json, plan.json, metrics.csv,
events.jsonl) and never writes. A run killed with SIGKILL leaves ``running`` in
run.json; ``rundir.effective_status`` turns that into ``interrupted`` when the
recorded pid is gone, so the table stays true.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from specrun.engine.atomic import read_json_object

_SPEC_LINE = re.compile(r"^\s*spec\s+([A-Za-z_][\w\-]*)", re.MULTILINE)


@dataclass
class Best:
    metric: str
    value: float | None
    step: int | None


@dataclass
class RunInfo:
    spec: str
    run_id: str
    path: str
    status: str
    step: int | None
    phases: dict = field(default_factory=dict)
    best: Best | None = None
    started: float | None = None
    duration_s: float | None = None
    message: str = ""
    profile: str | None = None
    overrides: list = field(default_factory=list)  # the --set options the run was started with
    trial: dict | None = None  # a sweep's trial: its trial.json (sweep, number, params, objective)

    def to_json(self) -> dict:
        out = asdict(self)
        out["started_iso"] = datetime.fromtimestamp(self.started).isoformat(timespec="seconds") \
            if self.started else None
        return out


# ---- reading one run ------------------------------------------------------------------

def is_run_dir(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "plan.json").exists() or (path / "run.json").exists())


def read_events(run_dir: Path) -> list[dict]:
    """events.jsonl as a list; a torn last line (a killed writer) is skipped."""
    out = []
    try:
        with open(Path(run_dir) / "events.jsonl", encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    out.append(record)
    except OSError:
        pass
    return out


def _number(text) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as ``column -> [(step, value), ...]`` sorted by step.

    The file is append-only across resumes, so a step may appear twice (a resume
    from an earlier checkpoint logs it again): the row written last wins.
    """
    return _read_metrics(run_dir)[0]


def _read_metrics(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], str | None]:
    """(the series, what is wrong with the file or None). A run directory is untrusted: bytes
    that are not UTF-8 or a broken CSV record keep every row that can still be read."""
    by_column: dict[str, dict[int, float]] = {}
    problem = None
    try:
        with open(Path(run_dir) / "metrics.csv", newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                step = _number(row.get("step"))
                if step is None or not (0 <= step < 2**63):
                    continue
                for name, text in row.items():
                    if not isinstance(name, str) or name == "step" or not isinstance(text, str):
                        continue
                    if "\ufffd" in text or "\ufffd" in name:
                        problem = "metrics.csv holds bytes that are not UTF-8"
                        continue
                    value = _number(text)
                    if value is not None:
                        by_column.setdefault(name, {})[int(step)] = value
    except OSError:
        return {}, None
    except csv.Error as exc:
        problem = f"metrics.csv is damaged ({exc})"
    return {name: sorted(values.items()) for name, values in by_column.items()}, problem


def validation_series(events: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """``val.<metric>`` series from ``validation`` events (a fallback for metrics.csv)."""
    out: dict[str, dict[int, float]] = {}
    for ev in events:
        step = _number(ev.get("step", 0))
        if ev.get("event") != "validation" or not isinstance(ev.get("metrics"), dict) or step is None \
                or not 0 <= step < 2**63:
            continue  # events.jsonl is read back from disk: a record of another shape is skipped
        for name, value in ev["metrics"].items():
            value = _number(value)
            if value is not None:
                out.setdefault(f"val.{name}", {})[int(step)] = value
    return {k: sorted(v.items()) for k, v in out.items()}


def best_metric(plan: dict) -> tuple[str, bool]:
    """(metric, lower is better) the run is judged by: checkpoint.best, else val.loss."""
    from specrun.spec.expr import lower_is_better

    best = ((plan.get("settings") or {}).get("checkpoint") or {}).get("best") or {}
    metric = best.get("metric") or "val.loss"
    mode = best.get("mode")
    lower = mode == "min" if mode in ("min", "max") else lower_is_better(metric)
    return metric, lower


def find_best(plan: dict, metrics: dict, events: list[dict]) -> Best:
    metric, lower = best_metric(plan)
    series = metrics.get(metric) or validation_series(events).get(metric) or []
    if not series:
        return Best(metric, None, None)
    step, value = (min if lower else max)(series, key=lambda sv: sv[1])
    return Best(metric, value, step)


# run.json's fields and their types: anything else in it is a damaged file, not a crash.
_STATUS_TYPES = {"status": str, "spec": str, "message": str, "host": str, "pid": int, "step": int, "segment": int,
                 "started": (int, float), "updated": (int, float), "phases": dict}


_STATES = {"running", "finished", "failed", "interrupted", "pruned"}


def _checked_status(status: dict) -> tuple[dict, str | None]:
    """run.json with the fields of the wrong type dropped, and what was wrong (or None)."""
    good, bad = {}, []
    for key, value in status.items():
        kind = _STATUS_TYPES.get(key)
        if key == "status" and value not in _STATES:
            bad.append(key)
        elif kind is None:
            good[key] = value
        elif isinstance(value, kind) and not isinstance(value, bool) and \
                not (key == "phases" and not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            good[key] = value
        else:
            bad.append(key)
    return good, (f"run.json: {', '.join(bad)} of the wrong type" if bad else None)


def read_run(run_dir: Path) -> RunInfo:
    """One run, read as untrusted data: a damaged file marks the run damaged, and says which."""
    from specrun.engine.rundir import STATUS, effective_status, read_status

    run_dir = Path(run_dir)
    status, damage = _checked_status(read_status(run_dir))
    if not status and (run_dir / STATUS).exists():
        damage = "run.json is not a JSON object"
    plan = read_json_object(run_dir / "plan.json")
    events = read_events(run_dir)
    state = effective_status(status) if status else "unknown"
    started = status.get("started")
    if started is None:
        starts = [ev.get("time") for ev in events if ev.get("event") == "start"]
        started = starts[0] if starts else None
    if state == "running":
        end = time.time()
    else:
        end = status.get("updated") or (events[-1].get("time") if events else None)
    duration = max(end - started, 0.0) if started and end else None
    metrics, bad_metrics = _read_metrics(run_dir)
    damage = damage or bad_metrics
    if damage:
        state = "damaged"
    step = status.get("step")
    if state in ("running", "interrupted"):  # run.json's progress lags up to a second; the log does not
        logged = [s for series in metrics.values() for s, _ in series]
        step = max([step] + logged if step is not None else logged, default=None)
    return RunInfo(
        spec=status.get("spec") or plan.get("name") or run_dir.parent.name,
        run_id=run_dir.name,
        path=str(run_dir),
        status=state,
        step=step,
        phases=dict(status.get("phases") or {}),
        best=find_best(plan, metrics, events),
        started=started,
        duration_s=duration,
        message=damage or _message(status, state),
        profile=plan.get("profile") if isinstance(plan.get("profile"), str) else None,
        overrides=[o for o in plan.get("overrides") or [] if isinstance(o, str)]
        if isinstance(plan.get("overrides"), list) else [],
    )


def _message(status: dict, state: str) -> str:
    if status.get("status") == "running" and state == "interrupted":
        return f"marked running, but process {status.get('pid')} on {status.get('host')} is gone"
    return status.get("message", "")


# ---- finding runs ------------------------------------------------------------------------

def spec_name(spec: str) -> str:
    """A spec name from a name or a .train path (its ``spec NAME`` line)."""
    path = Path(spec)
    if spec.endswith(".train") or path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FileNotFoundError(f"cannot read {spec}: {exc.strerror}") from None
        try:
            from specrun.spec.document import locate
            from specrun.spec.parse import parse

            name = locate(parse(text, spec)).data.get("spec")
        except Exception:  # an invalid spec still names its runs
            name = None
        if not name:
            m = _SPEC_LINE.search(text)
            name = m.group(1) if m else path.stem
        return str(name)
    return spec


def find_runs(spec: str | None = None, base: str | Path = "runs") -> list[Path]:
    """Run directories under ``base`` (``base/<spec>/<run-id>``), oldest first."""
    base = Path(base)
    if spec is not None:
        roots = [base / spec_name(spec)]
    else:
        roots = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    found = []
    for root in roots:
        if not root.is_dir():
            continue
        found += [p for p in root.iterdir() if is_run_dir(p)]
    return sorted(found, key=_started_key)


def _started_key(path: Path):
    from specrun.engine.rundir import read_status

    started = read_status(path).get("started")
    if not isinstance(started, (int, float)) or isinstance(started, bool):
        started = None
    if started is None:
        for name in ("plan.json", "run.json"):
            if (path / name).exists():
                started = (path / name).stat().st_mtime
                break
    return (started or 0.0, path.name)


def list_runs(spec: str | None = None, base: str | Path = "runs") -> list[RunInfo]:
    """Every run, healthy ones as they are and damaged ones marked: one bad run hides no other."""
    return [_read_or_damaged(p) for p in find_runs(spec, base)]


def _read_or_damaged(path: Path) -> RunInfo:
    try:
        return read_run(path)
    except Exception as exc:  # whatever else a hand-edited or half-written directory holds
        return RunInfo(spec=path.parent.name, run_id=path.name, path=str(path), status="damaged", step=None,
                       message=f"cannot be read: {type(exc).__name__}: {exc}"[:300])


def resolve_run(ref: str, base: str | Path = "runs") -> Path:
    """A run directory from a path, or the latest run of a spec (a name or a .train path)."""
    path = Path(ref)
    if is_run_dir(path):
        return path
    if path.is_dir() and any(is_run_dir(p) for p in path.iterdir()):  # runs/<spec>
        return max((p for p in path.iterdir() if is_run_dir(p)), key=_started_key)
    name = spec_name(ref)
    runs = find_runs(name, base)
    if not runs:
        raise FileNotFoundError(
            f"{ref}: not a run directory, and no runs of spec {name!r} under {Path(base) / name}")
    return runs[-1]


# ---- the table -------------------------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


COLUMNS = ("spec", "run", "profile", "overrides", "status", "step", "phase", "best", "started", "duration")
OVERRIDES_WIDTH = 40  # a long --set list is cut in the table; --json has it whole


def _overrides_cell(overrides: list) -> str:
    text = ",".join(overrides) or "-"
    return text if len(text) <= OVERRIDES_WIDTH else text[: OVERRIDES_WIDTH - 3] + "..."


def table_rows(runs: list[RunInfo]) -> list[tuple[str, ...]]:
    rows = []
    for r in runs:
        phase = ", ".join(f"{a}={p}" if len(r.phases) > 1 else str(p) for a, p in r.phases.items()) or "-"
        best = f"{r.best.metric} {format_value(r.best.value)}" if r.best and r.best.value is not None \
            else (f"{r.best.metric} -" if r.best else "-")
        if r.best and r.best.step is not None:
            best += f" @{r.best.step}"
        started = datetime.fromtimestamp(r.started).strftime("%Y-%m-%d %H:%M") if r.started else "-"
        rows.append((r.spec, r.run_id, r.profile or "-", _overrides_cell(r.overrides), r.status, "-" if r.step is None else str(r.step), phase, best,
                     started, format_duration(r.duration_s)))
    return rows


def render_table(runs: list[RunInfo]) -> str:
    rows = [tuple(c.upper() for c in COLUMNS)] + table_rows(runs)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
