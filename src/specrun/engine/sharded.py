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

    def __init__(self, directory: Path, template=None, dist=None, whole: bool = False):
        super().__init__(directory)
        self.template = template  # () -> tensors to load into (live_template); None: rest.pt only
        self.whole = whole  # load() joins every shard in this process (export, inspection)
        self.dist = dist  # engine.distributed.Dist, or None in a single process
        self.files = FileStore(directory)  # checkpoints written before the run was sharded

    # collectives over the host group: agreement and the manifest's pieces, never a GPU sync
    def _group(self):
        return self.dist.host_group if self.dist is not None else None

    def _rank(self) -> int:
        return self.dist.rank if self.dist is not None else 0

    def save(self, name: str, state: dict) -> dict:
        import torch
        import torch.distributed as td
        import torch.distributed.checkpoint as dcp

        target = self.path(name)
        tmp = target.with_name(f".{target.name}.partial")
        main = self._rank() == 0
        tensors, rest = split_state(state)
        try:
            if main:
                self.dir.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)  # a crashed attempt's leftovers
            if self.dist is not None:
                td.barrier(group=self._group())  # nobody writes into it before it is clean
            writer = dcp.FileSystemWriter(str(tmp), sync_files=True)
            with _quiet_single_process():
                dcp.save(tensors, storage_writer=writer, no_dist=self.dist is None)
            own = {p.name: {"bytes": p.stat().st_size, "crc32": file_crc32(p)}
                   for p in tmp.glob(f"__{self._rank()}_*.distcp")}
            pieces = [own]
            if self.dist is not None:
                pieces = [None] * self.dist.world_size
                td.all_gather_object(pieces, own, group=self._group())
            if not main:
                return {}
            with open(tmp / REST, "wb") as fh:
                torch.save(rest, fh)
                fh.flush()
                os.fsync(fh.fileno())
            files = {n: f for piece in pieces for n, f in piece.items()}
            for extra in (METADATA, REST):
                files[extra] = {"bytes": (tmp / extra).stat().st_size, "crc32": file_crc32(tmp / extra)}
            write_json_atomic(tmp / MANIFEST, {"files": files, "world_size": len(pieces)})
            fsync_dir(tmp)
            self._replace(tmp, target)
        except (OSError, RuntimeError) as exc:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"could not write checkpoint {target}: {os_reason(exc)}; "
                                  "earlier checkpoints are intact") from exc
        return self.fingerprint(name)

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


def _all_keys_in(tree: dict, prefix: str, saved: set) -> bool:
    for key, value in tree.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict):
            if not _all_keys_in(value, dotted, saved):
                return False
        elif dotted not in saved:
            return False
    return True
