"""One writer per run directory: an OS lock on ``run.lock``, held for the life of the process.

``flock`` belongs to the open file: when the process ends — finished, crashed or
SIGKILLed — the kernel drops it, so there is never a stale lock to clean up. The file
also says who holds it (pid and host) so the second process can name the holder. On a
filesystem without ``flock`` (some network mounts) the run goes on unlocked, and says so.
"""

from __future__ import annotations

import json
import os
import socket
import weakref
from pathlib import Path

LOCK = "run.lock"


class RunLocked(RuntimeError):
    """Another live process writes this run directory."""


class RunLock:
    def __init__(self, path: Path, fd: int | None):
        self.path, self._fd = path, fd
        if fd is not None:
            _HELD.add(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


# A forked child (a DataLoader worker) shares the open file, hence the flock: the lock would
# outlive a SIGKILLed run until its workers noticed. Children close their copy at once.
_HELD: "weakref.WeakSet[RunLock]" = weakref.WeakSet()


def _drop_in_child() -> None:
    for lock in list(_HELD):
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = None


os.register_at_fork(after_in_child=_drop_in_child)


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        pid, host = int(info["pid"]), str(info.get("host", "?"))[:100]
        return f"process {pid}" + (f" on {host}" if host != socket.gethostname() else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_run_dir(run_dir: Path, warn=None) -> RunLock:
    """Take ``run_dir``'s lock, or raise RunLocked naming the process that has it."""
    import fcntl

    path = Path(run_dir) / LOCK
    if path.is_symlink():  # a planted link would make us truncate whatever it points at
        raise RunLocked(f"{path} is a symbolic link; a run directory's lock file is a plain file")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunLocked(f"{run_dir} is being written by {holder}: one run directory, one writer. "
                        "Wait for it to finish, or start a separate run (--new, or another --run-dir)") from None
    except OSError as exc:  # no flock on this filesystem
        if warn is not None:
            warn(f"cannot lock {path} ({exc.strerror}): nothing stops a second process writing this run")
        return RunLock(path, fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
    return RunLock(path, fd)
