"""Sharded checkpoints: each rank writes its own shards (torch.distributed.checkpoint, DCP).

A run with ``distributed.strategy fsdp`` keeps its checkpoints here: nothing is
gathered to rank 0, no rank holds more than its shard, every rank writes at once.
A checkpoint is a directory named as the spec names checkpoints::

    step_8.pt/  __0_0.distcp  __1_0.distcp   each rank's shards of model and optimizer state
                .metadata                    DCP's map of which chunk lives where (rank 0)
                rest.pt                      everything else (counters, RNG, history...; rank 0)
                manifest.json                size and CRC-32 of each file above (rank 0, last)

Same guarantees as a checkpoint file (``store.FileStore``): written under
``.step_8.pt.partial`` and renamed into place by rank 0 only once every rank's
shards, the metadata and the manifest are on disk (fsynced), then recorded in the
index by the checkpointer; a checkpoint whose manifest or files do not match is
refused, and the checkpointer falls back to the previous one. Nothing is unpickled
beyond what ``weights_only`` allows: only tensors go through DCP (never its pickled
"bytes" items), ``rest.pt`` is read with ``weights_only=True``, and DCP's metadata
file is read with an unpickler that knows DCP's own metadata classes and nothing else.

In the background (``checkpoint { async true }``: ``begin_save``, then ``finish``): rank 0
writes rest.pt at once, every rank's tensors are copied into host memory (DCP's
staging) and written by ``async_save`` on a thread, talking between ranks on a gloo
group of its own; training goes on. At each step boundary the ranks agree (one small
all-reduce, only while a save is pending) whether all of them have written their part;
only then are the manifest and the rename done, on the training thread, exactly as
above. A killed process leaves a ``.step_8.pt.partial`` that nothing lists or loads;
a failed write raises on every rank, at the same step.

Loading reshards: DCP reads, for each rank's tensors, the chunks they need, so a
checkpoint written by 2 ranks loads on 1 or on 4 (and one written by a single
process loads on several). ``full_state_dict`` gives the whole model (and
optimizer) state of a sharded checkpoint offline, in one process, for export.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import warnings
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from specrun.engine.atomic import fsync_dir, write_json_atomic
from specrun.engine.store import CheckpointError, CheckpointStore, FileStore, file_crc32, load_file, os_reason

MANIFEST = "manifest.json"
REST = "rest.pt"
METADATA = ".metadata"


@contextmanager
def _quiet_single_process():
    """DCP warns on every call without a process group that it assumes one process: we know."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def sharded(plan) -> bool:
    """Whether a plan's checkpoints are sharded: under FSDP, whatever the number of processes."""
    return plan.distributed is not None and plan.distributed.strategy == "fsdp"


# ---- what goes through DCP -----------------------------------------------------------------

def split_state(state: dict) -> tuple[dict, dict]:
    """(tensors for DCP, everything else for rest.pt) of a snapshot with sharded model/optimizer state."""
    import torch

    rest = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    optim = state["optimizer"]
    tensors, plain = {}, {}
    for fqn, slots in optim.get("state", {}).items():
        for key, value in slots.items():
            (tensors if isinstance(value, torch.Tensor) else plain).setdefault(fqn, {})[key] = value
    rest["optimizer"] = {"param_groups": optim.get("param_groups", []), "plain": plain}
    rest["sharded"] = True
    return {"model": state["model"], "optim": tensors}, rest


def join_state(tensors: dict, rest: dict) -> dict:
    """The inverse of ``split_state``."""
    state = {k: v for k, v in rest.items() if k != "optimizer"}
    optim = {fqn: dict(slots) for fqn, slots in tensors.get("optim", {}).items()}
    for fqn, slots in rest["optimizer"].get("plain", {}).items():
        optim.setdefault(fqn, {}).update(slots)
    state["model"] = tensors["model"]
    state["optimizer"] = {"state": optim, "param_groups": rest["optimizer"]["param_groups"]}
    return state


def live_template(model, optimizer) -> dict:
    """This process's model and optimizer state (its shards under FSDP), to load a checkpoint into.

    ``get_optimizer_state_dict`` creates the optimizer's state first if it has none yet
    (a step at zero learning rate on zero gradients), so there is a tensor to load into.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    tensors, _ = split_state({"model": get_model_state_dict(model),
                              "optimizer": get_optimizer_state_dict(model, optimizer)})
    return tensors


# ---- reading DCP's metadata without running code -----------------------------------------

_ALLOWED = {
    "torch.distributed.checkpoint.metadata": None,  # any of DCP's metadata dataclasses
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset", "slice"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        import torch

        allowed = _ALLOWED.get(module, set())
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in _ALLOWED and (allowed is None or name in allowed):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a checkpoint's metadata")


def read_metadata(directory: Path):
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    try:
        metadata = _MetadataUnpickler(io.BytesIO((Path(directory) / METADATA).read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory}/{METADATA} cannot be read: {exc}") from None
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{directory}/{METADATA} is not DCP metadata")
    if getattr(metadata, "storage_meta", None) is None:
        metadata.storage_meta = StorageMeta()
    return metadata


def _reader(directory: Path):
    from torch.distributed.checkpoint import FileSystemReader

    class SafeReader(FileSystemReader):
        """DCP's file reader, with the metadata read by the restricted unpickler."""

        def read_metadata(self, *args, **kwargs):
            metadata = read_metadata(directory)
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(directory))


def _only_tensors(metadata, directory: Path) -> None:
    """DCP loads a non-tensor item with torch.load(weights_only=False): refuse a checkpoint that has one."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    for key, item in metadata.state_dict_metadata.items():
        if isinstance(item, BytesStorageMetadata):
            raise CheckpointError(f"{directory} holds a pickled object ({key}); specrun never loads one")


def full_state_dict(directory: Path) -> dict:
    """The whole state of a sharded checkpoint, in this process, without a process group.

    Model weights and optimizer tensors come back whole (every rank's shards joined),
    with the rest of the checkpoint (counters, RNG, ...): the same dict a
    ``FileStore`` checkpoint holds, for ``specrun export`` and for inspection.
    """
    directory = Path(directory)
    _verify(directory, _read_manifest(directory), None)
    return _joined(directory)


def _joined(directory: Path) -> dict:
    """A verified checkpoint directory's whole state, in this process."""
    import torch
    import torch.distributed.checkpoint as dcp

    metadata = read_metadata(directory)
    _only_tensors(metadata, directory)
    flat = {}
    for key, item in metadata.state_dict_metadata.items():
        flat[key] = torch.empty(item.size, dtype=item.properties.dtype)
    with _quiet_single_process():
        dcp.load(flat, storage_reader=_reader(directory), no_dist=True)
    tensors: dict = {}
    for key, value in flat.items():
        path = metadata.planner_data.get(key, (key,)) if metadata.planner_data else (key,)
        node = tensors
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    tensors.setdefault("optim", {})
    return join_state(tensors, load_file(directory / REST))


# ---- manifest -----------------------------------------------------------------------------

def _read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or not all(
                isinstance(n, str) and "/" not in n and isinstance(f, dict)
                and isinstance(f.get("bytes"), int) and isinstance(f.get("crc32"), int) for n, f in files.items()):
            raise ValueError("unexpected contents")
        return manifest
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {MANIFEST}: it was never completed") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{directory}/{MANIFEST} is damaged ({exc})") from None


def _verify(directory: Path, manifest: dict, share: tuple[int, int] | None) -> None:
    """Sizes and CRC-32s as the manifest says. ``share`` (rank, world): check every world-th file only."""
    names = sorted(manifest["files"])
    if share is not None:
        names = names[share[0]::share[1]]
    for name in names:
        want, path = manifest["files"][name], directory / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CheckpointError(f"{directory.name}/{name} is missing") from None
        if size != want["bytes"]:
            raise CheckpointError(f"{directory.name}/{name} is truncated ({size} of {want['bytes']} bytes)")
        if file_crc32(path) != want["crc32"]:
            raise CheckpointError(f"{directory.name}/{name}'s contents changed since it was written (CRC-32 mismatch)")


# ---- the store ------------------------------------------------------------------------------

class ShardedStore(CheckpointStore):
    """Checkpoints as DCP directories, written by every rank (``every_rank_writes``)."""

    every_rank_writes = True

    def __init__(self, directory: Path, template=None, dist=None, whole: bool = False, background: bool = False):
        super().__init__(directory)
        self.template = template  # () -> tensors to load into (live_template); None: rest.pt only
        self.whole = whole  # load() joins every shard in this process (export, inspection)
        self.dist = dist  # engine.distributed.Dist, or None in a single process
        self.files = FileStore(directory)  # checkpoints written before the run was sharded
        # Background saves (checkpoint.async) talk between ranks on a gloo group of their own:
        # their thread's collectives must never interleave with the training thread's.
        # Created on every rank at once (a collective), when the run is set up.
        self.background_group = None
        self.stager = None  # DCP's, made by the first background save
        if background and dist is not None:
            import torch.distributed as td

            self.background_group = td.new_group(backend="gloo")

    # collectives over the host group: agreement and the manifest's pieces, never a GPU sync
    def _group(self):
        return self.dist.host_group if self.dist is not None else None

    def _rank(self) -> int:
        return self.dist.rank if self.dist is not None else 0

    def save(self, name: str, state: dict) -> dict:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

        target, tmp = self._begin(name, state)
        try:
            writer = dcp.FileSystemWriter(str(tmp), sync_files=True)
            with _quiet_single_process():
                dcp.save(split_state(state)[0], storage_writer=writer, no_dist=self.dist is None)
            return self._commit(target, tmp, self._pieces(_own_files(tmp, self._rank())))
        except (OSError, RuntimeError, CheckpointException) as exc:
            self._abandon(tmp)
            raise _not_written(target, _reason(exc)) from exc

    def begin_save(self, name: str, state: dict) -> "BackgroundSave":
        """Start writing ``state`` and return at once: its tensors are copied into host memory
        first (DCP's staging), so training may change the live ones; every rank's shards are
        written on a thread of its own. Nothing is committed until ``finish``."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        if self.dist is None:  # the writing thread cannot be told per call that we know
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        target, tmp = self._begin(name, state)
        try:
            writer = dcp.FileSystemWriter(str(tmp), sync_files=True)
            written = dcp.async_save(split_state(state)[0], storage_writer=writer, async_stager=self._stager(),
                                     process_group=self.background_group, no_dist=self.dist is None)
        except (OSError, RuntimeError, CheckpointException) as exc:
            self._abandon(tmp)
            raise _not_written(target, _reason(exc)) from exc
        return BackgroundSave(target, tmp, written, self._rank())

    def finish(self, pending: "BackgroundSave", wait: bool) -> dict | None:
        """Commit a background save once every rank's shards are on disk: its fingerprint (rank 0;
        {} elsewhere), or None while any rank is still writing (only when not ``wait``). Every rank
        calls it at the same step and all reach the same answer. A failed write raises
        CheckpointError on every rank, and leaves no trace but the earlier checkpoints."""
        import torch
        import torch.distributed as td

        if wait:
            pending.wait()
        status = torch.tensor([0 if pending.files.done() else 1, 1 if pending.failed() else 0])
        if self.dist is not None:  # the same decision on every rank, on the same step
            td.all_reduce(status, op=td.ReduceOp.MAX, group=self._group())
        not_done, failed = status.tolist()
        if failed and not not_done:
            self._abandon(pending.tmp)
            reason = _reason(pending.files.exception()) if pending.failed() else "another rank could not write its shards"
            raise _not_written(pending.target, reason)
        if not_done:
            return None
        try:
            return self._commit(pending.target, pending.tmp, self._pieces(pending.files.result()))
        except (OSError, RuntimeError) as exc:
            self._abandon(pending.tmp)
            raise _not_written(pending.target, os_reason(exc)) from exc

    def _stager(self):
        """DCP's stager, kept for the run: it keeps the host copy of every tensor between saves
        and copies into it, rather than allocating the state's size again each time (at most
        one background save is in flight, so the copy is free when the next one begins)."""
        if self.stager is None:
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            self.stager = DefaultStager(StagingOptions(use_pinned_memory=False, use_shared_memory=False,
                                                       use_async_staging=False, use_non_blocking_copy=False))
        return self.stager

    # the steps of a save, shared by the blocking and the background one
    def _begin(self, name: str, state: dict) -> tuple[Path, Path]:
        """(target, the partial directory to write into), clean, with rank 0's rest.pt in it already."""
        import torch
        import torch.distributed as td

        target = self.path(name)
        tmp = target.with_name(f".{target.name}.partial")
        main = self._rank() == 0
        try:
            if main:
                self.dir.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)  # a crashed attempt's leftovers
                tmp.mkdir()
                with open(tmp / REST, "wb") as fh:  # small, and written now: the live objects move on
                    torch.save(split_state(state)[1], fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            if self.dist is not None:
                td.barrier(group=self._group())  # nobody writes into it before it is clean
        except (OSError, RuntimeError) as exc:
            self._abandon(tmp)
            raise _not_written(target, os_reason(exc)) from exc
        return target, tmp

    def _pieces(self, own: dict) -> list[dict]:
        """Every rank's files (name -> size and CRC-32), gathered: the manifest's parts."""
        import torch.distributed as td

        if self.dist is None:
            return [own]
        pieces = [None] * self.dist.world_size
        td.all_gather_object(pieces, own, group=self._group())
        return pieces

    def _commit(self, target: Path, tmp: Path, pieces: list[dict]) -> dict:
        """Rank 0 adds the manifest and renames the directory into place."""
        if self._rank() != 0:
            return {}
        files = {n: f for piece in pieces for n, f in piece.items()}
        for extra in (METADATA, REST):
            files[extra] = {"bytes": (tmp / extra).stat().st_size, "crc32": file_crc32(tmp / extra)}
        write_json_atomic(tmp / MANIFEST, {"files": files, "world_size": len(pieces)})
        fsync_dir(tmp)
        self._replace(tmp, target)
        return self.fingerprint(target.name)

    def _abandon(self, tmp: Path) -> None:
        if self._rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)

    def _replace(self, tmp: Path, target: Path) -> None:
        """Put the finished directory in place; an older one of the same name goes only after."""
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(self.dir)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, name: str, fingerprint: dict | None = None) -> dict:
        import torch
        import torch.distributed as td
        import torch.distributed.checkpoint as dcp

        path = self.path(name)
        if path.is_symlink():
            raise CheckpointError(f"{name} is a symbolic link, not a checkpoint in {self.dir}")
        if path.is_file():
            return self.files.load(name, fingerprint)  # a full checkpoint file
        problem = None
        try:
            manifest = _read_manifest(path)
            if fingerprint is not None and "crc32" in fingerprint and \
                    file_crc32(path / MANIFEST) != fingerprint["crc32"]:
                raise CheckpointError(f"{name}/{MANIFEST} changed since it was written (CRC-32 mismatch)")
            world = self.dist.world_size if self.dist is not None else 1
            _verify(path, manifest, (self._rank(), world) if self.template is not None else None)
        except (CheckpointError, OSError) as exc:
            problem = str(exc)
        if self.dist is not None and self.template is not None:  # every rank checked its share: agree
            bad = torch.tensor([1 if problem else 0])
            td.all_reduce(bad, op=td.ReduceOp.MAX, group=self._group())
            if bad.item() and not problem:
                problem = f"{name}: another rank found a damaged file"
        if problem:
            raise CheckpointError(problem)
        if self.whole:
            return _joined(path)
        rest = load_file(path / REST)
        if self.template is None:
            return rest  # what it is and where it was: enough to list and choose
        metadata = read_metadata(path)
        _only_tensors(metadata, path)
        tensors = self.template()
        saved = set(metadata.state_dict_metadata)
        if not any(k.startswith("optim.") for k in saved) or not _all_keys_in(tensors["optim"], "optim", saved):
            tensors["optim"] = {}  # another optimizer, or none saved: restore() starts it fresh
        try:
            with _quiet_single_process():
                dcp.load(tensors, storage_reader=_reader(path), no_dist=self.dist is None)
        except Exception as exc:  # DCP wraps every rank's failure in its own error types
            raise CheckpointError(f"{name} does not load into this model: {str(exc).splitlines()[0]}") from None
        state = join_state(tensors, rest)
        if not tensors["optim"]:
            state["optimizer"] = {}
        return state

    def list(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        dirs = [p.name for p in self.dir.iterdir() if p.is_dir() and not p.is_symlink()
                and not p.name.startswith(".") and (p / MANIFEST).is_file()]
        return sorted(set(dirs) | set(self.files.list()))

    def delete(self, name: str) -> bool:
        path = self.path(name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            return True
        return self.files.delete(name)

    def set_aside(self, name: str) -> str | None:
        path = self.path(name)
        if path.is_dir() and not path.is_symlink():
            aside = path.with_name(path.name + ".damaged")
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
            return aside.name
        return self.files.set_aside(name)

    def fingerprint(self, name: str) -> dict:
        path = self.path(name)
        if path.is_file():
            return self.files.fingerprint(name)
        manifest = _read_manifest(path)
        return {"bytes": sum(f["bytes"] for f in manifest["files"].values()), "crc32": file_crc32(path / MANIFEST)}


class BackgroundSave:
    """A save whose shards are being written on DCP's thread. ``files`` becomes this rank's
    part of the manifest (its shard files' sizes and CRC-32s) once they are on disk, or the
    write's error."""

    def __init__(self, target: Path, tmp: Path, written, rank: int):
        self.target, self.tmp = target, tmp
        self.files: Future = Future()
        written.add_done_callback(lambda done: self._written(done, rank))

    def _written(self, done, rank: int) -> None:  # on the writing thread
        try:
            done.result()
            self.files.set_result(_own_files(self.tmp, rank))
        except BaseException as exc:  # kept for finish(), which raises it on the training thread
            self.files.set_exception(exc)

    def failed(self) -> bool:
        return self.files.done() and self.files.exception() is not None

    def wait(self) -> None:
        """Until this rank's part has ended, written or failed."""
        self.files.exception()


def _not_written(target: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"could not write checkpoint {target}: {reason}; earlier checkpoints are intact")


def _reason(exc: BaseException) -> str:
    """What went wrong in a write, in the OS's words where it has some: DCP gathers every rank's
    error into one CheckpointException, whose own text is a traceback per rank."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        first = next(iter(failures.values()))
        return os_reason(first[0] if isinstance(first, tuple) else first)
    return os_reason(exc)


def _own_files(tmp: Path, rank: int) -> dict:
    """This rank's shard files in a partial checkpoint: name -> size and CRC-32."""
    return {p.name: {"bytes": p.stat().st_size, "crc32": file_crc32(p)} for p in tmp.glob(f"__{rank}_*.distcp")}


def _all_keys_in(tree: dict, prefix: str, saved: set) -> bool:
    for key, value in tree.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict):
            if not _all_keys_in(value, dotted, saved):
                return False
        elif dotted not in saved:
            return False
    return True
