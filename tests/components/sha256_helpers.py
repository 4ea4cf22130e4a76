"""What the sha256_trace producer tests share (test_sha256_producers, test_sha256_shutdown)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

needs_shm = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory in /dev/shm")


def alive(pids) -> list[int]:
    """The ``pids`` still running (a zombie counts as ended)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out
