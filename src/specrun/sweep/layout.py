"""Where a sweep lives on disk, and what its trials leave there. No torch, no Optuna.

    runs/<spec>/sweeps/<name>/
      sweep.json        what is searched and how (written when the sweep starts)
      study.db          the Optuna study (SQLite), unless `storage` names another
      003-lr=0.00123-width=128/   one trial: a normal run directory, plus
        trial.json      its number, settings, state and objective

`runs/<spec>/sweeps` is not a run directory, so `resume latest` of the spec never
picks up a trial, and `specrun runs` lists trials under their sweep.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from specrun.engine.atomic import read_json_object, write_json_atomic

SWEEPS = "sweeps"
SWEEP_FILE = "sweep.json"
TRIAL_FILE = "trial.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def sweep_dir(base, spec: str, name: str) -> Path:
    return Path(base) / spec / SWEEPS / name


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(Path(folder) / 'study.db').resolve()}"


def shown_storage(url: str) -> str:
    """A storage URL fit to print and to write down: no password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def trial_name(number: int, params: dict) -> str:
    """``003-lr=0.00123-width=128``: a trial's folder, named by its settings.

    Each setting by its last part (`optimizer.lr` -> `lr`) unless two share it."""
    lasts = [p.rsplit(".", 1)[-1] for p in params]
    parts = []
    for (path, value), last in zip(params.items(), lasts):
        key = last if lasts.count(last) == 1 else path
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(_UNSAFE.sub("_", f"{key}={text}"))
    return f"{number:03d}" + "".join(f"-{p}" for p in parts)[:120]


def write_sweep(folder: Path, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / SWEEP_FILE, info)


def write_trial(run_dir: Path, info: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / TRIAL_FILE, info)


def read_sweep(folder: Path) -> dict:
    """sweep.json, validated as untrusted input: {} when it is not a sweep's."""
    info = read_json_object(Path(folder) / SWEEP_FILE)
    ok = isinstance(info.get("metric"), str) and info.get("direction") in ("minimize", "maximize")
    return info if ok else {}


def read_trial(run_dir: Path) -> dict:
    """trial.json, validated: {} when absent or damaged."""
    info = read_json_object(Path(run_dir) / TRIAL_FILE)
    if not isinstance(info.get("number"), int) or not isinstance(info.get("params"), dict):
        return {}
    value = info.get("objective")
    if value is not None and not isinstance(value, (int, float)) or isinstance(value, bool):
        info["objective"] = None
    return info


def find_sweeps(base, spec: str | None = None) -> list[Path]:
    """Sweep folders under ``base`` (of one spec, or of all)."""
    base = Path(base)
    roots = [base / spec] if spec else (sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else [])
    found = []
    for root in roots:
        folder = root / SWEEPS
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_dir() and read_sweep(p))
    return found


def trial_dirs(folder: Path) -> list[Path]:
    """The sweep's trials that left a trial.json, by trial number."""
    if not Path(folder).is_dir():
        return []
    found = [p for p in Path(folder).iterdir() if p.is_dir() and read_trial(p)]
    return sorted(found, key=lambda p: read_trial(p)["number"])


def best_first(trials: list[dict], direction: str) -> list[dict]:
    """Trials with an objective, best first; then the others by number."""
    scored = [t for t in trials if t.get("objective") is not None and t.get("state") == "finished"]
    rest = [t for t in trials if t not in scored]
    scored.sort(key=lambda t: t["objective"], reverse=direction == "maximize")
    return scored + sorted(rest, key=lambda t: t["number"])
