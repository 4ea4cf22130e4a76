"""The run directory: what a run leaves behind, and how to find it again.

    runs/<spec>/<run-id>/
      spec.train     the spec as run: canonical, profile and overrides applied
      plan.json      the compiled plan, spec hash, Python/torch/specrun versions
      run.json       status (running/finished/failed/interrupted), pid, step, phases
      metrics.csv    append-only; a resumed run appends (column `segment` counts launches)
      events.jsonl   phase changes, skips, guard actions, checkpoints, resumes
      checkpoints/   complete checkpoints only, listed in checkpoints/index.json
"""

from __future__ import annotations

import csv
import json
import os
import platform
import socket
import time
from datetime import datetime
from pathlib import Path

from specrun.engine.atomic import write_json_atomic
from specrun.engine.sinks.base import Sinks
from specrun.engine.sinks.events import EventsFile

STATUS = "run.json"
STATUS_EVERY_S = 1.0  # how often progress (step, phases) reaches run.json


# The run's own files: a symbolic link in their place could send a write anywhere.
OWN_FILES = ("spec.train", "plan.json", "run.json", "metrics.csv", "events.jsonl", "error.txt")


def outputs_outside(run_dir: Path, plan) -> list[str]:
    """What would be written outside ``run_dir`` through a symbolic link (a run directory copied
    or edited by someone else): the spec's output paths (checked as text at validate time) and
    the run's own files. Empty when everything stays inside."""
    root = Path(run_dir).resolve()
    named = [("checkpoint.dir", plan.checkpoint.dir), ("log.csv", plan.log.csv), ("log.text", plan.log.text),
             ("profiler.dir", plan.profiler and plan.profiler.dir)]
    named += [(name, name) for name in OWN_FILES]
    out = []
    for setting, rel in named:
        if not isinstance(rel, str):
            continue
        target = (root / rel).resolve()
        if target != root and root not in target.parents:
            what = f"{setting} {rel!r}" if setting != rel else rel
            out.append(f"{what} in {run_dir} leads to {target}, outside the run directory (a symbolic link?): "
                       "a run writes only inside its own directory")
    return out


def new_run_id() -> str:
    if os.environ.get("SPECRUN_RUN_ID"):  # set by the torchrun launcher: one name for all ranks
        return os.environ["SPECRUN_RUN_ID"]
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + f"{os.getpid() % 100000:05d}"


def claim_new_run(root: Path) -> Path:
    """A run directory no other run has: created exclusively, suffixed on a clash."""
    base = new_run_id()
    shared = bool(os.environ.get("SPECRUN_RUN_ID"))
    for n in range(1000):
        path = Path(root) / (base if n == 0 else f"{base}-{n + 1}")
        try:
            path.mkdir(parents=True, exist_ok=shared)  # torchrun ranks share one name on purpose
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot find a free run directory under {root}")


def runs_root(spec_name: str, base: str | os.PathLike = "runs") -> Path:
    return Path(base) / spec_name


def latest_run(spec_name: str, base="runs", profile: str | None = None) -> Path | None:
    """The newest run of the spec started with the same profile (None: no profile).

    A smoke run and the full run are separate lines of work: `resume latest` on the
    full spec must not pick up yesterday's smoke run and then refuse it as changed.
    """
    root = runs_root(spec_name, base)
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if (p / "plan.json").exists() and _profile_of(p) == profile]
    return max(runs, key=lambda p: (p / "plan.json").stat().st_mtime) if runs else None


def _profile_of(run: Path) -> str | None:
    try:
        return json.loads((run / "plan.json").read_text(encoding="utf-8")).get("profile")
    except (OSError, ValueError):
        return "<unreadable>"  # never taken for a run of this profile


def versions() -> dict:
    import torch

    from specrun._version import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "specrun": __version__}


def read_status(run_dir: Path) -> dict:
    """run.json as a dict; {} when it is missing or not a JSON object (it is read back from disk)."""
    try:
        found = json.loads((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def pid_alive(pid: int | None, host: str | None) -> bool:
    if not pid or host != socket.gethostname():
        return False
    try:
        import psutil

        return psutil.pid_exists(pid)
    except Exception:
        return False


def effective_status(status: dict) -> str:
    """A 'running' mark left by a process that is gone reads as interrupted."""
    state = status.get("status", "unknown")
    if state == "running" and not pid_alive(status.get("pid"), status.get("host")):
        return "interrupted"
    return state


class RunDir:
    def __init__(self, path: Path, main_process: bool = True, checkpoint_dir: str = "checkpoints"):
        self.path = Path(path)
        self.main = main_process  # only rank 0 writes
        self.checkpoint_dir = checkpoint_dir  # the spec's checkpoint.dir, relative to the run
        self.status: dict = {}
        self.host = socket.gethostname()
        self.lock = None  # engine/lock.py's RunLock while this process writes here (rank 0)
        self.restart_segment: int | None = None  # set when a run with no checkpoint starts again here
        # Where rows and events go (engine/sinks): events.jsonl from the start; metrics.csv,
        # TensorBoard and trackers are added once the run is set up. Rank 0 only.
        self.sinks = Sinks()
        if self.main:
            self.sinks.add(EventsFile(self.path / "events.jsonl"))

    def take_lock(self) -> None:
        from specrun.engine.lock import lock_run_dir

        if self.lock is None:
            self.lock = lock_run_dir(self.path)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def checkpoints(self) -> Path:
        return self.path / self.checkpoint_dir

    def create(self, spec_text: str, plan_json: dict) -> None:
        if not self.main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        (self.path / "spec.train").write_text(spec_text, encoding="utf-8")
        write_json_atomic(self.path / "plan.json", {**plan_json, "versions": versions()})

    def set_status(self, **fields) -> None:
        if not self.main:
            return
        self.status.update(fields)
        now = time.time()
        if "status" not in fields and now - self.status.get("updated", 0.0) < STATUS_EVERY_S:
            return  # progress only: `specrun runs` can read it a second late; a row costs ~1 ms
        self.status.update(pid=os.getpid(), host=self.host, updated=now)
        # Progress is atomic but not fsynced (an fsync costs ~10 ms); a change of status is both.
        write_json_atomic(self.path / STATUS, self.status, durable="status" in fields)

    def event(self, name: str, step: int, /, **fields) -> None:
        if not self.main:
            return
        self.sinks.event(step, name, fields)


class CsvLog:
    """An append-only CSV: one header, never truncated; a resume keeps the old columns."""

    def __init__(self, path: Path, columns: list[str], enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.columns = columns
        self._file = self._writer = None  # opened at the first row
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = _header(self.path) if self.path.exists() and self.path.stat().st_size > 0 else None
        if header:
            self.columns = header  # keep the file's columns; new ones are dropped, missing left empty
            return
        if self.path.exists() and self.path.stat().st_size > 0:
            # A header that is not one (bytes that are not UTF-8, a NUL, an empty line): the file is
            # kept aside, whole, and a new one begins; rows are never appended under a broken header.
            self.path.rename(self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"))
        with open(self.path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(self.columns)

    def write(self, row: dict) -> None:
        """Append a row and hand it to the OS: a killed process loses none. The file stays open
        for the run (opening it per row cost ~0.1 ms of CPU a row here, more than the row)."""
        if not self.enabled:
            return
        if self._file is None:
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
        self._writer.writerow([_cell(row.get(c)) for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _header(path: Path) -> list[str] | None:
    """The CSV's column names, or None when its first line is not a usable header."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), None)
    except csv.Error:
        return None
    if not header or any(not name or "\ufffd" in name for name in header) or len(set(header)) != len(header):
        return None
    return header


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) >= 1e6 else f"{value:.6g}"
    return str(value)
