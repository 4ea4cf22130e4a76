"""Checkpoints that are never half-written, never lost, never unpickled blindly.

Writing: ``torch.save`` to a temporary file beside the target, flush and
fsync, ``os.replace`` onto the final name, fsync the directory, and only then
record the file in ``index.json`` (itself replaced atomically): the index is
the "complete" marker, written last. A file the index does not list is never
loaded. Rotation deletes old files only after the new one is recorded, never
the newest complete one, never the best or the final one.

Reading: ``torch.load(weights_only=True)``: tensors, dicts, lists and plain
numbers only, so a checkpoint cannot run code. A truncated newest checkpoint, or
one whose CRC-32 no longer matches the index, falls back to the previous complete
one, and says so. A damaged index is rebuilt from the checkpoint files that load.
"""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from specrun.engine.atomic import fsync_dir, write_json_atomic

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
                 save=torch.save, repair: bool = True):
        self.dir = Path(directory)
        self.keep = keep
        self.name = name
        self.best_name = best_name
        self.final_name = final_name
        self._save = save  # replaceable so a test can make the writer fail
        # Only one process may mend a damaged index or quarantine a file: rank 0. The
        # others read the same files and reach the same answer without writing.
        self.repair = repair

    @classmethod
    def from_settings(cls, directory: Path, ck: dict, **kw) -> "Checkpointer":
        """The checkpointer a spec's `checkpoint` block describes, for ``directory``."""
        return cls(directory, ck["keep"], ck["name"], (ck.get("best") or {}).get("name"), ck["final"], **kw)

    # ---- index ---------------------------------------------------------------------------

    def index(self, warn=None) -> list[dict]:
        """The complete checkpoints. A damaged index is rebuilt from the files that load (and said)."""
        path = self.dir / INDEX
        if not path.exists():
            return []
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))["checkpoints"]
            if isinstance(entries, list) and all(isinstance(e, dict) and {"file", "step", "kind", "bytes"} <= set(e)
                                                 for e in entries):
                return entries
            raise ValueError("unexpected contents")
        except (ValueError, KeyError, TypeError) as exc:
            entries = self._rebuild_index()
            if self.repair:
                damaged = path.with_name(f"{INDEX}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
                if not damaged.exists():
                    damaged.write_bytes(path.read_bytes())
                self._write_index(entries)  # replaced atomically: an index.json is always there
            if warn is not None:
                warn(f"{path} was damaged ({exc}); rebuilt it from the {len(entries)} checkpoint file(s) "
                     "that load (the old one is kept beside it)")
            return entries

    def _rebuild_index(self) -> list[dict]:
        """Entries for the checkpoint files that load and say (or whose name says) what they are.

        A file of unknown kind is left out: never loaded, and never rotated away either.
        """
        entries = []
        for file in sorted(self.dir.glob("*.pt")):
            try:
                state = load_file(file)
                saved = state.get("saved_as") or {}
                step = int(saved.get("step", state["counters"]["step"]))
            except (CheckpointError, KeyError, TypeError, ValueError, AttributeError):
                continue  # not one of ours, or not whole
            kind = saved.get("kind") or self._kind_by_name(file.name)
            if kind is None:
                continue
            entries.append({"file": file.name, "step": step, "epoch": int(saved.get("epoch", 0)), "kind": kind,
                            "bytes": file.stat().st_size, "crc32": file_crc32(file), "time": file.stat().st_mtime})
        return entries

    def _kind_by_name(self, name: str) -> str | None:
        """For checkpoints written before they recorded their kind: match the spec's name patterns."""
        for kind, template in (("final", self.final_name), ("best", self.best_name), ("regular", self.name)):
            if template and re.fullmatch(re.escape(template).replace(r"\{step\}", r"\d+")
                                         .replace(r"\{epoch\}", r"\d+"), name):
                return kind
        return None

    def _write_index(self, entries: list[dict]) -> None:
        write_json_atomic(self.dir / INDEX, {"checkpoints": entries})

    # ---- writing ---------------------------------------------------------------------------

    def filename(self, kind: str, step: int, epoch: int) -> str:
        template = {"regular": self.name, "best": self.best_name, "final": self.final_name}[kind]
        return template.format(step=step, epoch=epoch)

    def save(self, state: dict, kind: str, step: int, epoch: int) -> Saved:
        state = {**state, "saved_as": {"kind": kind, "step": step, "epoch": epoch}}  # so an index can be rebuilt
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
                 "bytes": target.stat().st_size, "crc32": file_crc32(target), "time": time.time()}
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
        if not self.repair:
            return
        self._write_index([e for e in self.index() if e["file"] != entry["file"]])
        path = self.dir / entry["file"]
        if path.exists():
            path.rename(path.with_name(path.name + ".damaged"))

    # ---- reading -----------------------------------------------------------------------------

    def candidates(self, warn=None) -> list[dict]:
        """Complete checkpoints, newest first (by step; final beats regular on a tie)."""
        order = {"final": 2, "regular": 1, "best": 0}
        entries = [e for e in self.index(warn) if e["kind"] in ("regular", "final")]
        return sorted(entries, key=lambda e: (e["step"], order[e["kind"]], e["time"]), reverse=True)

    def load_latest(self, warn) -> tuple[dict, Path] | None:
        for entry in self.candidates(warn):
            path = self.dir / entry["file"]
            try:
                if path.stat().st_size != entry["bytes"]:
                    raise CheckpointError(f"{path.name} is truncated ({path.stat().st_size} of {entry['bytes']} bytes)")
                if "crc32" in entry and file_crc32(path) != entry["crc32"]:  # older indexes have no checksum
                    raise CheckpointError(f"{path.name}'s contents changed since it was written (CRC-32 mismatch)")
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


def file_crc32(path: Path) -> int:
    """CRC-32 of a file: torch's zip format does not check its records on load, so a flipped
    byte in a tensor would load silently. About 1 GB/s; a checkpoint was just written or is
    about to be read, so its pages are usually in the cache."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def load_file(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:  # pickle errors come in many types; all mean "unusable"
        raise CheckpointError(f"{path} is not a loadable checkpoint: {exc}") from None
