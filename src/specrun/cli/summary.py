"""The end-of-run summary as ``specrun run`` prints it (the data: engine/summary.py)."""

from __future__ import annotations

from specrun.cli.runs import format_duration, format_value

_MARK = {"met": "met", "missed": "MISSED", "warned": "missed (warn only)"}


def render_summary(summary: dict) -> str:
    lines = []

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<12}{text}")

    steps = summary.get("step")
    total = summary.get("total_steps")
    row("run", f"{summary.get('run_dir')}   {format_duration(summary.get('duration_s'))}, "
               f"step {steps}" + (f" of {total}" if total else ""))
    phases = summary.get("phases") or {}
    if phases:
        moves = ", ".join(f"{p['old']}->{p['new']} at {p['step']}" for p in summary.get("promotions") or [])
        row("phases", ", ".join(f"{a}={p}" if len(phases) > 1 else str(p) for a, p in phases.items())
            + (f"   ({moves})" if moves else ""))
    final = summary.get("final") or {}
    if final:
        shown = [k for k in final if k.split(".", 1)[1] in ("loss", "accuracy") or k.startswith("val.")]
        row("final", "  ".join(f"{k} {format_value(final[k])}" for k in (shown or list(final)[:6])))
    best = summary.get("best")
    if best:
        row("best", f"{best['metric']} {format_value(best['value'])}"
            + (f" at step {best['step']}" if best.get("step") is not None else ""))
    for exp in summary.get("expectations") or []:
        outcome = exp.get("outcome", "")
        by = exp.get("by")
        by = f" by step {by}" if isinstance(by, int) else f" by {by}" if by is not None else " (at the end)"
        row("expect", f"{_MARK.get(outcome, outcome)}: {exp['expect']}{by}"
            + (f" (at step {exp['step']})" if outcome in ("missed", "warned") and exp.get("step") else ""))
    checkpoints = summary.get("checkpoints") or {}
    shown = [(kind, where) for kind, where in checkpoints.items()
             if not (kind == "latest" and where == checkpoints.get("final"))]
    for i, (kind, where) in enumerate(shown):
        row("checkpoints" if i == 0 else "", f"{kind:<7}{where['path']} (step {where['step']})")
    for i, command in enumerate((summary.get("next") or {}).values()):
        row("next" if i == 0 else "", command)
    return "\n".join(lines)
