"""Checkpoints that are never half-written, never lost, never unpickled blindly.

Writing: ``torch.save`` to a temporary file beside the target, flush and
fsync, ``os.replace`` onto the final name, fsync the directory, and only then
record the file in ``index.json`` (itself replaced atomically): the index is
the "complete" marker, written last. A file the index does not list is never
loaded. Rotation deletes old files only after the new one is recorded, never
the newest complete one, never the best or the final one.

Reading: ``torch.load(weights_only=True)``: tensors, dicts, lists and plain
numbers only, so a checkpoint cannot run code. A corrupt or truncated newest
checkpoint falls back to the previous complete one, and says so.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from specrun.atomic import fsync_dir, write_json_atomic

INDEX = "index.json"


class CheckpointError(RuntimeError):
    pass


@dataclass
class Saved:
    path: Path
    step: int
    kind: str  # "regular", "best", "final"
    bytes: int
    seconds: float


class Checkpointer:
    def __init__(self, directory: Path, keep: int, name: str, best_name: str | None, final_name: str,
                 save=torch.save):
        self.dir = Path(directory)
        self.keep = keep
        self.name = name
        self.best_name = best_name
        self.final_name = final_name
        self._save = save  # replaceable so a test can make the writer fail

    # ---- index ---------------------------------------------------------------------------

    def index(self) -> list[dict]:
        path = self.dir / INDEX
        if not path.exists():
            return []
        try:
            return json.loads(path.read_text(encoding="utf-8"))["checkpoints"]
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path} is damaged ({exc}); the checkpoint files are intact, "
                                  "pass one explicitly with `checkpoint.resume PATH`") from None

    def _write_index(self, entries: list[dict]) -> None:
        write_json_atomic(self.dir / INDEX, {"checkpoints": entries})

    # ---- writing ---------------------------------------------------------------------------

    def filename(self, kind: str, step: int, epoch: int) -> str:
        template = {"regular": self.name, "best": self.best_name, "final": self.final_name}[kind]
        return template.format(step=step, epoch=epoch)

    def save(self, state: dict, kind: str, step: int, epoch: int) -> Saved:
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / self.filename(kind, step, epoch)
        tmp = target.with_name(f".{target.name}.partial")
        started = time.perf_counter()
        try:
            with open(tmp, "wb") as fh:
                self._save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            fsync_dir(self.dir)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"could not write checkpoint {target}: {_reason(exc)}; "
                                  "earlier checkpoints are intact") from exc
        entries = [e for e in self.index() if e["file"] != target.name]
        entry = {"file": target.name, "step": step, "epoch": epoch, "kind": kind,
                 "bytes": target.stat().st_size, "time": time.time()}
        entries.append(entry)
        try:
            self._write_index(entries)  # the completion marker: written last
        except OSError as exc:
            raise CheckpointError(f"wrote {target} but could not record it in {INDEX}: {_reason(exc)}; "
                                  "earlier checkpoints are intact") from exc
        self._rotate(entries)
        return Saved(target, step, kind, entry["bytes"], time.perf_counter() - started)

    def _rotate(self, entries: list[dict]) -> None:
        # By write order, not step: after a fallback resume a newer-stepped but abandoned
        # checkpoint must go before the one just written.
        regular = sorted((e for e in entries if e["kind"] == "regular"), key=lambda e: e["time"])
        doomed = regular[: max(0, len(regular) - self.keep)]
        if not doomed:
            return
        keep = [e for e in entries if e not in doomed]
        try:
            self._write_index(keep)  # forget first, delete after: a crash in between leaves a stray file, not a hole
        except OSError:
            return  # rotation is housekeeping: the new checkpoint is already safe
        protected = {e["file"] for e in keep}
        for e in doomed:
            if e["file"] not in protected:
                (self.dir / e["file"]).unlink(missing_ok=True)

    def quarantine(self, entry: dict) -> None:
        """Take a checkpoint that cannot be loaded out of the index; keep the file, renamed."""
        self._write_index([e for e in self.index() if e["file"] != entry["file"]])
        path = self.dir / entry["file"]
        if path.exists():
            path.rename(path.with_name(path.name + ".damaged"))

    # ---- reading -----------------------------------------------------------------------------

    def candidates(self) -> list[dict]:
        """Complete checkpoints, newest first (by step; final beats regular on a tie)."""
        order = {"final": 2, "regular": 1, "best": 0}
        entries = [e for e in self.index() if e["kind"] in ("regular", "final")]
        return sorted(entries, key=lambda e: (e["step"], order[e["kind"]], e["time"]), reverse=True)

    def load_latest(self, warn) -> tuple[dict, Path] | None:
        for entry in self.candidates():
            path = self.dir / entry["file"]
            try:
                if path.stat().st_size != entry["bytes"]:
                    raise CheckpointError(f"{path.name} is truncated ({path.stat().st_size} of {entry['bytes']} bytes)")
                return load_file(path), path
            except (CheckpointError, OSError, RuntimeError, EOFError, ValueError) as exc:
                warn(f"checkpoint {path.name} cannot be loaded ({exc}); falling back to the previous one "
                     f"(kept as {path.name}.damaged)")
                self.quarantine(entry)
        return None


def _reason(exc: BaseException) -> str:
    """The OS's words for a failed write, also when torch wrapped them in its own error."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def load_file(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:  # pickle errors come in many types; all mean "unusable"
        raise CheckpointError(f"{path} is not a loadable checkpoint: {exc}") from None
