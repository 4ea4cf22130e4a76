"""Checkpoint stores: where a checkpoint's state lives, by name, inside one directory.

The checkpointer (``checkpoint.py``) decides *what* to keep — names, the index,
rotation, falling back past a damaged file — and a store decides *how* a state
is written and read back. ``FileStore`` is one ``torch.save`` file per
checkpoint; a sharded store (each rank writing its own part) can stand behind
the same four calls without the checkpointer changing.

A store only ever touches plain names directly inside its directory: a name
with a separator, ``..`` or a leading dot is refused before any file is opened,
so an index read back from disk can never make it delete, rename or load
something elsewhere.
"""

from __future__ import annotations

import os
import zlib
from abc import ABC, abstractmethod
from pathlib import Path

from specrun.engine.atomic import fsync_dir


class CheckpointError(RuntimeError):
    pass


def plain_name(name) -> bool:
    """A file name a checkpoint may have: one path component, not hidden, not a directory alias."""
    return (isinstance(name, str) and 0 < len(name) <= 255 and name not in (".", "..")
            and not name.startswith(".") and "/" not in name and "\\" not in name and "\0" not in name)


class CheckpointStore(ABC):
    """Save, load, list and delete checkpoint states by plain name."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def path(self, name: str) -> Path:
        if not plain_name(name):
            raise CheckpointError(f"{name!r} is not a plain checkpoint file name")
        return self.dir / name

    @abstractmethod
    def save(self, name: str, state: dict) -> dict:
        """Write ``state`` under ``name``, all or nothing. Returns its fingerprint (recorded in the index)."""

    @abstractmethod
    def load(self, name: str, fingerprint: dict | None = None) -> dict:
        """The state saved under ``name``; CheckpointError when it is missing, damaged, or unlike ``fingerprint``."""

    @abstractmethod
    def list(self) -> list[str]:
        """Names of the states present (complete or not), for rebuilding a lost index."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove ``name``; False when it was not there."""

    @abstractmethod
    def set_aside(self, name: str) -> str | None:
        """Keep a damaged state out of the way (renamed); its new name, or None when it was not there."""

    @abstractmethod
    def fingerprint(self, name: str) -> dict:
        """What ``save`` returned for ``name``, worked out again from what is stored (to rebuild an index)."""


class FileStore(CheckpointStore):
    """One ``torch.save`` file per checkpoint; read back with ``weights_only=True``.

    Written beside the target, flushed, fsynced, renamed over it, directory fsynced.
    The fingerprint is the size and CRC-32: torch's zip format does not check its
    records on load, so a flipped byte in a tensor would otherwise load silently.
    """

    SUFFIX = ".pt"

    def __init__(self, directory: Path, write=None):
        super().__init__(directory)
        self._write = write  # torch.save unless a test makes the writer fail

    def save(self, name: str, state: dict) -> dict:
        target = self.path(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial")
        try:
            with open(tmp, "wb") as fh:
                if self._write is None:
                    import torch

                    torch.save(state, fh)
                else:
                    self._write(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            fsync_dir(self.dir)
            return self.fingerprint(name)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"could not write checkpoint {target}: {os_reason(exc)}; "
                                  "earlier checkpoints are intact") from exc

    def load(self, name: str, fingerprint: dict | None = None) -> dict:
        path = self.path(name)
        if path.is_symlink():  # it may point anywhere: only files that live here are loaded
            raise CheckpointError(f"{name} is a symbolic link, not a checkpoint file in {self.dir}")
        if fingerprint is not None:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise CheckpointError(f"no checkpoint at {path}") from None
            if "bytes" in fingerprint and size != fingerprint["bytes"]:
                raise CheckpointError(f"{name} is truncated ({size} of {fingerprint['bytes']} bytes)")
            if "crc32" in fingerprint and file_crc32(path) != fingerprint["crc32"]:  # older indexes lack it
                raise CheckpointError(f"{name}'s contents changed since it was written (CRC-32 mismatch)")
        return load_file(path)

    def list(self) -> list[str]:
        return sorted(p.name for p in self.dir.glob(f"*{self.SUFFIX}") if plain_name(p.name) and p.is_file() and not p.is_symlink())

    def delete(self, name: str) -> bool:
        path = self.path(name)
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def set_aside(self, name: str) -> str | None:
        path = self.path(name)
        if not path.is_file() or path.is_symlink():
            return None
        aside = path.with_name(path.name + ".damaged")
        path.rename(aside)
        return aside.name

    def fingerprint(self, name: str) -> dict:
        path = self.path(name)
        return {"bytes": path.stat().st_size, "crc32": file_crc32(path)}


def os_reason(exc: BaseException) -> str:
    """The OS's words for a failed write, also when torch wrapped them in its own error."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def file_crc32(path: Path) -> int:
    """CRC-32 of a file, about 1 GB/s; a checkpoint was just written or is about to be read,
    so its pages are usually in the cache."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def load_file(path: Path) -> dict:
    """A ``torch.save`` file read with ``weights_only=True``: tensors and plain data, never code."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:  # pickle errors come in many types; all mean "unusable"
        raise CheckpointError(f"{path} is not a loadable checkpoint: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a loadable checkpoint: it holds a {type(state).__name__}, "
                              "not a training state")
    return state
