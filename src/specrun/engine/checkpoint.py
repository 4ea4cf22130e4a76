"""Checkpoints that are never half-written, never lost, never unpickled blindly.

What is kept, and under which name, is decided here; how a state is written
and read is the job of a store (``store.py``: ``FileStore``, one file per
checkpoint, unless the checkpointer is given another).

Writing: the store writes all or nothing, and only then is the checkpoint
recorded in ``index.json`` (itself replaced atomically): the index is the
"complete" marker, written last. Rotation deletes old checkpoints only after
the new one is recorded, never the newest complete one, never the best or the
final one.

Reading: ``index.json`` is untrusted input (a run directory is copied, edited,
half-written by a full disk). Each entry is checked — a plain file name inside
this directory, a non-negative integer step, a known kind — and a bad one is
left out with a warning; a missing or malformed index is rebuilt from the
checkpoint files, which each say what they are (``saved_as``). Nothing the
index names outside this directory is ever loaded, renamed or deleted. A
truncated newest checkpoint, or one whose fingerprint no longer matches the
index, falls back to the previous complete one, and says so.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from specrun.engine.atomic import write_json_atomic
from specrun.engine.store import (CheckpointError, CheckpointStore, FileStore, file_crc32, load_file,
                                  os_reason, plain_name)
from specrun.sections import CheckpointPolicy

INDEX = "index.json"
KINDS = ("regular", "best", "final")

__all__ = ["Checkpointer", "CheckpointError", "Saved", "INDEX", "load_file", "file_crc32", "valid_entry"]


@dataclass
class Saved:
    path: Path
    step: int
    kind: str  # "regular", "best", "final"
    bytes: int
    seconds: float  # from the start of the save until it was committed
    stall: float | None = None  # of a background save: how long training waited for it


@dataclass
class _Pending:
    """A background save begun and not yet committed (at most one at a time)."""

    handle: object  # the store's (``ShardedStore.begin_save``)
    name: str
    kind: str
    step: int
    epoch: int
    started: float
    stall: float
    entries: list[dict]  # the index as it was before the write


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def checkpoint_name(name) -> bool:
    """A name the index may list: a plain file in the checkpoint directory, never the index itself."""
    return plain_name(name) and name != INDEX and not name.startswith(INDEX + ".")


def valid_entry(entry) -> tuple[dict | None, str]:
    """(the entry with defaults filled, "") or (None, what is wrong with it)."""
    if not isinstance(entry, dict):
        return None, f"an entry is a {type(entry).__name__}, not an object"
    name = entry.get("file")
    if not checkpoint_name(name):
        return None, f"file {name!r} is not a plain checkpoint name inside the checkpoint directory"
    if not _int(entry.get("step")):
        return None, f"{name}: step {entry.get('step')!r} is not a non-negative integer"
    if entry.get("kind") not in KINDS:
        return None, f"{name}: kind {entry.get('kind')!r} is not one of {', '.join(KINDS)}"
    if not _int(entry.get("bytes")):
        return None, f"{name}: bytes {entry.get('bytes')!r} is not a non-negative integer"
    if "crc32" in entry and not (_int(entry["crc32"]) and entry["crc32"] < 2**32):
        return None, f"{name}: crc32 {entry['crc32']!r} is not a CRC-32"
    epoch = entry.get("epoch", 0)
    stamp = entry.get("time", 0.0)
    if not _int(epoch):
        return None, f"{name}: epoch {epoch!r} is not a non-negative integer"
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or stamp != stamp:
        return None, f"{name}: time {stamp!r} is not a number"
    return {**entry, "epoch": epoch, "time": float(stamp)}, ""


class Checkpointer:
    def __init__(self, directory: Path, keep: int, name: str, best_name: str | None, final_name: str,
                 save=None, repair: bool = True, store: CheckpointStore | None = None, background: bool = False):
        self.dir = Path(directory)
        self.keep = keep
        self.name = name
        self.best_name = best_name
        self.final_name = final_name
        # ``save`` replaces torch.save in the default store, so a test can make the writer fail.
        self.store = store if store is not None else FileStore(self.dir, write=save)
        # Only one process may mend a damaged index or set a file aside: rank 0. The
        # others read the same files and reach the same answer without writing.
        self.repair = repair
        # checkpoint.async: regular and best saves are written in the background by a store that
        # can (``begin_save``/``finish``: the sharded one); ``pending`` is the one in flight.
        self.background = background and hasattr(self.store, "begin_save")
        self.pending: _Pending | None = None

    @classmethod
    def of(cls, directory: Path, policy: CheckpointPolicy, **kw) -> "Checkpointer":
        """The checkpointer a plan's checkpoint policy describes, for ``directory``."""
        return cls(directory, policy.keep, policy.name, policy.best and policy.best.name, policy.final,
                   background=policy.background, **kw)

    # ---- index ---------------------------------------------------------------------------

    def index(self, warn=None) -> list[dict]:
        """The complete checkpoints. Bad entries are left out, a damaged or lost index rebuilt (and said)."""
        path = self.dir / INDEX
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not self.store.list():
                return []  # a run that has not saved yet
            raw, problem = None, "is missing"
        except OSError as exc:
            raw, problem = None, f"cannot be read ({os_reason(exc)})"
        else:
            try:
                entries = json.loads(raw.decode("utf-8"))["checkpoints"]
                if not isinstance(entries, list):
                    raise TypeError("`checkpoints` is not a list")
                return self._checked(entries, warn)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # UnicodeDecodeError: ValueError
                problem = f"was damaged ({type(exc).__name__}: {exc})" if raw else "was empty"
        entries = self._rebuild_index()
        if self.repair:
            if raw:
                damaged = path.with_name(f"{INDEX}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
                if not damaged.exists():
                    damaged.write_bytes(raw)
            try:
                self._write_index(entries)  # replaced atomically: an index.json is always there
            except OSError:
                pass  # read-only or full: the rebuilt list still serves this process
        if warn is not None:
            warn(f"{path} {problem}; rebuilt it from the {len(entries)} checkpoint file(s) that load"
                 + (" (the old one is kept beside it)" if raw else ""))
        return entries

    def _checked(self, entries: list, warn) -> list[dict]:
        good: dict[str, dict] = {}
        for raw in entries:
            entry, problem = valid_entry(raw)
            if entry is None:
                if warn is not None:
                    warn(f"{self.dir / INDEX}: skipped an entry: {problem}")
                continue
            good[entry["file"]] = entry  # a name listed twice: the later entry wins
        return list(good.values())

    def _rebuild_index(self) -> list[dict]:
        """Entries for the checkpoint files that load and say (or whose name says) what they are.

        A file of unknown kind is left out: never loaded, and never rotated away either.
        """
        entries = []
        for name in self.store.list():
            try:
                state = self.store.load(name)
                saved = state.get("saved_as") or {}
                step = saved.get("step", state["counters"]["step"])
                epoch = saved.get("epoch", 0)
            except (CheckpointError, KeyError, TypeError, ValueError, AttributeError, OSError):
                continue  # not one of ours, or not whole
            kind = saved.get("kind") if saved.get("kind") in KINDS else self._kind_by_name(name)
            # Written in step order as far as rotation can tell (their write times are gone with the index).
            entry, _ = valid_entry({"file": name, "step": step, "epoch": epoch, "kind": kind,
                                    "bytes": 0, "time": float(step) if _int(step) else 0.0})
            if entry is None:
                continue
            try:
                entries.append({**entry, **self.store.fingerprint(name)})
            except (OSError, CheckpointError):
                continue
        return entries

    def _kind_by_name(self, name: str) -> str | None:
        """For checkpoints written before they recorded their kind: match the spec's name patterns."""
        for kind, template in (("final", self.final_name), ("best", self.best_name), ("regular", self.name)):
            if template and re.fullmatch(_template_pattern(template), name):
                return kind
        return None

    def _write_index(self, entries: list[dict]) -> None:
        write_json_atomic(self.dir / INDEX, {"checkpoints": entries})

    # ---- writing ---------------------------------------------------------------------------

    def filename(self, kind: str, step: int, epoch: int) -> str:
        template = {"regular": self.name, "best": self.best_name, "final": self.final_name}[kind]
        return template.format(step=step, epoch=epoch)

    def save(self, state: dict, kind: str, step: int, epoch: int) -> Saved:
        name = self.filename(kind, step, epoch)
        entries = self._entries_but(name)
        started = time.perf_counter()
        fingerprint = self.store.save(name, _labelled(state, kind, step, epoch))
        return self._record(entries, name, kind, step, epoch, fingerprint, started)

    def begin(self, state: dict, kind: str, step: int, epoch: int) -> None:
        """Start a background save and return once the state is copied (``settle`` commits it).
        Only one is ever in flight: a pending one must be settled first."""
        assert self.pending is None, "settle(wait=True) the pending save before beginning another"
        name = self.filename(kind, step, epoch)
        entries = self._entries_but(name)
        started = time.perf_counter()
        handle = self.store.begin_save(name, _labelled(state, kind, step, epoch))
        self.pending = _Pending(handle, name, kind, step, epoch, started, time.perf_counter() - started, entries)

    def settle(self, wait: bool) -> Saved | None:
        """Commit the background save once every rank has written it: into the index, then
        rotation (which sees only committed checkpoints). None while it is still being written
        (``wait``: block until it is), or when none is pending. A failed write raises
        CheckpointError, and the earlier checkpoints stay as they were."""
        pending = self.pending
        if pending is None:
            return None
        try:
            fingerprint = self.store.finish(pending.handle, wait)
        except CheckpointError:
            self.pending = None
            raise
        if fingerprint is None:
            return None
        self.pending = None
        saved = self._record(pending.entries, pending.name, pending.kind, pending.step, pending.epoch, fingerprint,
                             pending.started)
        saved.stall = pending.stall
        return saved

    def abandon(self) -> str | None:
        """Wait for a background save's write to end, and forget it uncommitted (a run that failed
        while it was written: whether every rank got this far is not known). Its name, if any."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        pending.handle.wait()
        return pending.name

    def _entries_but(self, name: str) -> list[dict]:
        """The index less ``name``, read before the write: a first save finds none (and rebuilds nothing)."""
        return [e for e in self.index() if e["file"] != name]

    def _record(self, entries: list[dict], name: str, kind: str, step: int, epoch: int, fingerprint: dict,
                started: float) -> Saved:
        """A written checkpoint into the index (the completion marker, written last), then rotation."""
        if not self.repair:  # another rank's part of a sharded save: rank 0 records it
            return Saved(self.dir / name, step, kind, 0, time.perf_counter() - started)
        entry = {"file": name, "step": step, "epoch": epoch, "kind": kind, **fingerprint, "time": time.time()}
        entries.append(entry)
        try:
            self._write_index(entries)  # the completion marker: written last
        except OSError as exc:
            raise CheckpointError(f"wrote {self.dir / name} but could not record it in {INDEX}: "
                                  f"{os_reason(exc)}; earlier checkpoints are intact") from exc
        self._rotate(entries)
        return Saved(self.dir / name, step, kind, entry.get("bytes", 0), time.perf_counter() - started)

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
                try:
                    self.store.delete(e["file"])
                except OSError:
                    pass  # a stray file, not a hole

    def quarantine(self, entry: dict) -> str | None:
        """Take a checkpoint that cannot be loaded out of the index; keep the file, renamed.

        Returns the name it is kept under, or None when there was no file to keep.
        """
        if not self.repair or not checkpoint_name(entry.get("file")):
            return None
        try:
            self._write_index([e for e in self.index() if e["file"] != entry["file"]])
            return self.store.set_aside(entry["file"])
        except (OSError, CheckpointError):
            return None

    # ---- reading -----------------------------------------------------------------------------

    def candidates(self, warn=None) -> list[dict]:
        """Complete checkpoints, newest first (by step; final beats regular on a tie)."""
        order = {"final": 2, "regular": 1, "best": 0}
        entries = [e for e in self.index(warn) if e["kind"] in ("regular", "final")]
        return sorted(entries, key=lambda e: (e["step"], order[e["kind"]], e["time"]), reverse=True)

    def load_latest(self, warn) -> tuple[dict, Path] | None:
        for entry in self.candidates(warn):
            name = entry["file"]
            try:
                return self.store.load(name, entry), self.dir / name
            except (CheckpointError, OSError) as exc:
                kept = self.quarantine(entry)
                fate = f"kept as {kept}" if kept else ("the file is gone" if not (self.dir / name).exists()
                                                       else "left in place")
                warn(f"checkpoint {name} cannot be loaded ({exc}); falling back to the previous one ({fate})")
        return None


def _labelled(state: dict, kind: str, step: int, epoch: int) -> dict:
    """The state with what it is (``saved_as``), so that a lost index can be rebuilt from the files."""
    return {**state, "saved_as": {"kind": kind, "step": step, "epoch": epoch}}


def _template_pattern(template: str) -> str:
    """A name template (``step_{step}.pt``, ``s{step:06d}.pt``) as a regular expression."""
    out, pos = [], 0
    for m in re.finditer(r"\{(step|epoch)(?::[^{}]*)?\}", template):
        out.append(re.escape(template[pos:m.start()]) + r"\s*[+-]?\d+")
        pos = m.end()
    return "".join(out) + re.escape(template[pos:])
