"""The end of a run, told once: what ran, how it went, where things are, what to do next.

``SummarySink`` watches the run's rows and events as they are written (it is one of
the run directory's sinks); ``summarize`` puts them together with the run's own
state when the run is over. The result is the ``summary`` event in events.jsonl,
``RunResult.summary`` in the Python API, and the block ``specrun run`` prints.
Also here: the exact command that continues a run.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from specrun.engine.expectations import deadline_text
from specrun.engine.sinks.base import Sink
from specrun.spec import expr as ex


def continue_command(plan, run_dir) -> str:
    """The command that continues this run: same spec, profile, overrides, and this directory."""
    parts = ["specrun", "run", plan.source or f"{plan.name}.train"]
    if plan.profile:
        parts += ["--profile", plan.profile]
    for override in plan.overrides:
        parts += ["--set", override]
    parts += ["--run-dir", str(run_dir)]
    if plan.checkpoint.resume != "latest" and not any(
            o.startswith("checkpoint.resume=") for o in plan.overrides):
        parts += ["--set", "checkpoint.resume=latest"]  # `resume none` would refuse a run that exists
    return " ".join(shlex.quote(str(p)) for p in parts)


class SummarySink(Sink):
    """What a summary needs from this launch: the last values of each metric, promotions,
    failed expectations."""

    def __init__(self):
        self.started = time.time()
        self.last: dict[str, tuple[int, float]] = {}  # metric -> (step, value) of its latest row
        self.promotions: list[dict] = []
        self.failed_expectations: list[dict] = []
        self.final_expectations: list[dict] = []

    def row(self, row: dict) -> None:
        step = row.get("step")
        for key, value in row.items():
            if key.startswith(("train.", "val.")) and isinstance(value, (int, float)):
                self.last[key] = (step, value)

    def event(self, record: dict) -> None:
        kind = record.get("event")
        if kind == "phase":
            self.promotions.append({k: record.get(k) for k in ("step", "axis", "old", "new")})
        elif kind == "expectation" and record.get("final"):
            self.final_expectations.append(record)  # judge_end: one outcome per expectation, in order
        elif (kind == "expectation_failed" or record.get("outcome") == "broken") and record.get("expect"):
            self.failed_expectations.append(record)


def _checkpoints(run) -> dict:
    """Where the final, best and latest checkpoints are (paths relative to where specrun ran)."""
    try:
        entries = run.checkpointer.index()
    except Exception:  # a summary must never fail a run that went well
        return {}
    out = {}
    for kind in ("final", "best"):
        found = [e for e in entries if e["kind"] == kind]
        if found:
            newest = max(found, key=lambda e: (e["step"], e.get("time", 0)))
            out[kind] = {"path": str(run.checkpointer.dir / newest["file"]), "step": newest["step"]}
    latest = run.checkpointer.candidates()
    if latest:
        out["latest"] = {"path": str(run.checkpointer.dir / latest[0]["file"]), "step": latest[0]["step"]}
    return out


def _best(run, seen: SummarySink, checkpoints: dict) -> dict | None:
    best = run.plan.checkpoint.best
    if best and run.best_value is not None:
        return {"metric": best.metric, "value": run.best_value,
                "step": (checkpoints.get("best") or {}).get("step")}
    if "val.loss" in seen.last:  # no checkpoint.best: the lowest validation loss this launch saw
        values = run.history.context.series.get("val.loss") or []
        if values:
            return {"metric": "val.loss", "value": min(values), "step": None}
    return None


_FINAL = {"held": "met", "unknown": "not judged: its values were never known",
          "unchecked": "not judged: the run ended before it was due"}


def _expectations(run, outcome, seen: SummarySink) -> list[dict]:
    expectations, deadlines = run.plan.expectations, run.timeline.deadlines
    if len(seen.final_expectations) == len(expectations) and expectations:  # judged at the end of the run
        out = []
        for exp, by, record in zip(expectations, deadlines, seen.final_expectations):
            result = record.get("outcome")
            shown = ("warned" if record.get("severity") == "warn" else "missed") if result == "broken" \
                else _FINAL.get(result, str(result))
            out.append({"expect": str(exp.expr), "by": _by(by), "outcome": shown}
                       | ({"broken_steps": record["broken_steps"]} if "broken_steps" in record else {}))
        return out
    out = []
    failed = {str(r.get("expect")): r for r in seen.failed_expectations}
    finished = outcome.status == "finished"
    at_end = finished or (run.total_steps is not None and run.counters.step >= run.total_steps)
    for i, (exp, by) in enumerate(zip(expectations, deadlines)):
        text = str(exp.expr)
        entry = {"expect": text, "by": _by(by)}
        record = failed.get(text)
        if record is not None:
            entry.update(outcome="warned" if finished or record.get("mode") == "warn" else "missed",
                         step=record.get("step"), values=record.get("values"))
        elif by is None:
            if at_end:
                held = ex.evaluate(exp.expr.expr, run.history.context)
                entry["outcome"] = "met" if held else "missed"
            else:
                entry["outcome"] = "not judged: it is judged at the end of the run"
        elif i in run.expectations_checked:
            entry["outcome"] = "met"
        else:
            entry["outcome"] = f"not judged: due by {'step ' if isinstance(by, int) else ''}{_by(by)}, the run is at step {run.counters.step}"
        out.append(entry)
    return out


def _by(deadline):
    """A deadline in the summary: a step number, or its words (``500 micro_steps``)."""
    return deadline if isinstance(deadline, int) or deadline is None else deadline_text(deadline)


def summarize(run, outcome, seen: SummarySink, run_dir: Path) -> dict:
    """The summary of a run that got as far as training (``run`` set up)."""
    checkpoints = _checkpoints(run)
    final = {k: v for k, (_, v) in sorted(seen.last.items())}
    next_steps = {"plot": f"specrun plot {shlex.quote(str(run_dir))}"}
    if checkpoints:
        next_steps["export"] = f"specrun export {shlex.quote(str(run_dir))} --which " \
                               f"{'best' if 'best' in checkpoints else 'final' if 'final' in checkpoints else 'latest'}"
    if outcome.status != "finished" or run.total_steps is None:
        next_steps = {"continue": continue_command(run.plan, run_dir), **next_steps}
    return {
        "status": outcome.status, "message": outcome.message, "run_dir": str(run_dir),
        "duration_s": round(time.time() - seen.started, 3), "step": run.counters.step,
        "total_steps": run.total_steps, "phases": run.curriculum.phase_names(),
        "promotions": seen.promotions, "final": final, "best": _best(run, seen, checkpoints),
        "expectations": _expectations(run, outcome, seen), "checkpoints": checkpoints, "next": next_steps,
    }

