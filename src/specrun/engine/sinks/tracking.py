"""What the experiment-tracker sinks share: the package check, what a run is called and
tagged with, the resolved plan flattened to parameters, and the record that lets a
resumed run continue the same tracker run.

The record lives in ``<run>/trackers/<tracker>.json``. A run directory is untrusted
input, so the record is checked field by field when it is read back; one that does
not pass is reported and a new tracker run is started instead.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
from numbers import Real
from pathlib import Path

from specrun.engine.atomic import write_json_atomic
from specrun.engine.sinks.base import SinkUnavailable

SKIP_COLUMNS = {"step", "time"}  # the x axis and wall time: not quantities


def require(package: str, setting: str, extra: str) -> None:
    """Refuse before any training when the package is missing (found without importing it)."""
    if importlib.util.find_spec(package) is None:
        raise SinkUnavailable(f"log.{setting} is set but the {package} package is not installed: "
                              f"pip install 'specrun[{extra}]'")


def numeric(row: dict) -> dict[str, float]:
    """The row's finite numbers (phase names, booleans, empty cells and infinities left out)."""
    out = {}
    for column, value in row.items():
        if column in SKIP_COLUMNS or isinstance(value, bool) or not isinstance(value, Real):
            continue
        value = float(value)
        if math.isfinite(value):
            out[column] = value
    return out


def plan_params(plan: dict) -> dict:
    """The resolved plan (``Plan.to_json()``) as flat ``a.b.c -> scalar`` parameters (lists of scalars as JSON)."""
    data = dict(plan)
    for key in ("source", "resolved"):  # the spec's path is a tag; `resolved` repeats settings in words
        data.pop(key, None)
    return flatten(data)


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, sub in enumerate(value):
            name = sub.get("name") or sub.get("axis") if isinstance(sub, dict) else None
            out.update(flatten(sub, f"{prefix}.{name if isinstance(name, str) else i}"))
        return out
    if isinstance(value, list):
        return {prefix: json.dumps(value)}
    return {prefix: value}


def run_tags(plan: dict, run_path: Path) -> dict[str, str]:
    """spec, profile, overrides, git commit, run id: what a tracker's run list is filtered by."""
    tags = {"specrun.spec": plan["name"], "specrun.run_id": run_path.name,
            "specrun.run_dir": str(run_path.resolve()), "specrun.spec_hash": plan["spec_hash"],
            "specrun.profile": plan.get("profile") or "", "specrun.overrides": " ".join(plan.get("overrides", ()))}
    commit = git_commit(Path(plan["source"]).parent if plan.get("source") else Path.cwd())
    if commit:
        tags["specrun.git_commit"] = commit
    return tags


def git_commit(where: Path) -> str | None:
    """The commit checked out where the spec lives (with ``+dirty`` when it has changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_name(plan: dict, run_path: Path, settings: dict) -> str:
    return settings.get("run_name") or f"{plan['name']}/{run_path.name}"


# ---- the record a resumed run reads back ------------------------------------------------------

class Record:
    """``<run>/trackers/<name>.json``: the tracker run this run directory writes to, and the last step sent."""

    def __init__(self, run_path: Path, name: str, fields: dict[str, str]):
        """``fields``: each required key -> the regular expression its (string) value must match."""
        self.path = Path(run_path) / "trackers" / f"{name}.json"
        self.fields = fields

    def read(self, warn) -> dict | None:
        """The record, or None when there is none or it does not pass (then ``warn`` says why)."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return self._refuse(warn, f"unreadable ({type(exc).__name__})")
        if not isinstance(data, dict):
            return self._refuse(warn, "not a JSON object")
        for key, pattern in self.fields.items():
            value = data.get(key)
            if not isinstance(value, str) or not re.fullmatch(pattern, value):
                return self._refuse(warn, f"`{key}` is missing or malformed")
        step = data.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            return self._refuse(warn, "`step` is not a step number")
        return {**{k: data[k] for k in self.fields}, "step": step}

    def write(self, data: dict) -> None:
        write_json_atomic(self.path, data, durable=False)

    def _refuse(self, warn, why: str) -> None:
        warn(f"{self.path} cannot be used ({why}): this segment starts a new tracker run")
        return None
