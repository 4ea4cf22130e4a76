"""SHA-256 trace generation rate, per core, beside hashlib on the same machine in the same run.

    .venv/bin/python bench/sha256_tracegen.py [--seconds 2]

Rows:
- hashlib.sha256 on single-block messages (55 bytes: one compression each, C
  implementation, plus Python call overhead per message);
- trace_np: the 64-round NumPy trace (every intermediate state kept), for
  several batch sizes: per-ufunc overhead dominates small batches;
- trace_np + bits: what a producer does per batch: the trace plus unpacking
  inputs [B, 64, 320] and targets [B, 64, 256] to uint8 bits in place;
- trace_torch (CPU, 1 thread): the ``device`` transport's arithmetic, on the CPU.

Everything runs on one core (torch set to one thread; NumPy ufuncs are
single-threaded). Rates are compressions (64-round block traces) per CPU-second
of the benchmark process, so a machine busy with other work still gives fair
per-core figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from specrun.components.sha256 import trace as T  # noqa: E402


def rate(fn, items: int, seconds: float) -> float:
    """Items per CPU-second of this process (one thread): fair on a machine shared with others."""
    fn()  # warm up (allocations, caches)
    n, t0 = 0, time.process_time()
    while True:
        fn()
        n += 1
        elapsed = time.process_time() - t0
        if elapsed >= seconds:
            return n * items / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per row")
    args = ap.parse_args()
    rows = []

    msgs = [os.urandom(55) for _ in range(10_000)]

    def hash_all():
        for m in msgs:
            hashlib.sha256(m).digest()

    rows.append(("hashlib.sha256, 55-byte messages", "-", rate(hash_all, len(msgs), args.seconds)))

    for b in (64, 1024, 8192):
        block, _ = T.random_blocks(0, 0, 0, b)
        rows.append(("trace_np, 64 rounds", b, rate(lambda: T.trace_np(block, 64), b, args.seconds)))
    for b in (64, 1024):
        block, _ = T.random_blocks(0, 0, 0, b)
        x = np.empty((b, 64, T.INPUT_BITS), np.uint8)
        y = np.empty((b, 64, T.STATE_BITS), np.uint8)
        rows.append(("trace_np + bits (producer work)", b,
                     rate(lambda: T.fill_batch_np(block, 64, None, x, y), b, args.seconds)))
    try:
        import torch

        torch.set_num_threads(1)
        for b in (64, 1024):
            block, _ = T.random_blocks(0, 0, 0, b)
            bt = torch.from_numpy(block.astype(np.int64))
            rows.append(("trace_torch (cpu, 1 thread)", b,
                         rate(lambda: T.trace_torch(bt, 64), b, args.seconds)))
    except ImportError:
        pass

    ref = rows[0][2]
    print(f"{'what':<36} {'batch':>6} {'compressions/s':>15} {'vs hashlib':>11}")
    for name, b, r in rows:
        print(f"{name:<36} {b!s:>6} {r:>15,.0f} {r / ref:>10.3f}x")
    print(f"(one core; os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
