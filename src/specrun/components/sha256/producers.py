"""SharedMemoryLoader: CPU producer processes filling a ring of shared-memory slots.

The consumer (the training process) owns everything: it creates one POSIX
shared-memory segment cut into ``ring`` equal slots, spawns ``producers``
worker processes (``spawn`` context: torch and ``fork`` do not mix), and hands
each worker work items ``(slot, index, version)`` over its own pipe. A worker
computes micro-batch ``index`` straight into the slot and answers
``(slot, index, version)``. The consumer keeps a reorder buffer so that batches
come out in index order, whatever worker finished first.

Handover: a slot is *free* (consumer's free list), *assigned* (a worker fills
it), *done* (waiting in the reorder buffer) or *held* (the consumer handed a
zero-copy view of it to the engine). Per-worker pipes instead of shared
``multiprocessing.Queue``s: a queue has a lock shared by every writer, and a
producer killed while holding it would wedge the others; a pipe has one writer,
and each worker's process sentinel tells the consumer the moment it dies.

Determinism: batch ``index`` depends on (seed, rank, index, params) only
(see :func:`trace.random_blocks`), so neither the number of producers nor which
worker computed it matters. Work is dealt round-robin (index % producers).

Curriculum: every ``restart(start, params)`` bumps a version number. Workers
get the new params (pipes are FIFO, so before any work item of the new
version); the consumer forgets its reorder buffer and recycles every slot that
comes back under an old version, so nothing of the old params is served after
``restart`` returns. A segment too small for the new rounds is replaced
(workers restarted) instead.

Lifetime: ``close()`` stops and joins the workers (terminate, then kill, if
they do not answer) and unlinks the segment. A ``weakref.finalize`` runs the
same cleanup at interpreter exit or garbage collection, and SIGTERM is turned
into ``SystemExit`` while the loader lives (only where nobody else installed a
handler), so an exception, Ctrl-C or a polite kill all unwind through it.
Workers ignore SIGINT (the consumer decides) and exit by themselves when the
consumer's end of their pipe closes, i.e. when the consumer dies, even by
SIGKILL; the multiprocessing resource tracker then unlinks the segment.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
import time
import traceback
import weakref
from collections import deque
from multiprocessing import connection as mp_connection
from multiprocessing import get_context
from multiprocessing import shared_memory

import numpy as np

from specrun.components.sha256 import trace

SEGMENT_PREFIX = "specrun_sha256_"
SLOT_ALIGN = 4096
STALL_TIMEOUT_S = 120.0  # no batch and no message for this long: raise, never hang
STOP_TIMEOUT_S = 5.0


class ProducerError(RuntimeError):
    """A producer process died or raised; the message says which and how."""


def slot_bytes(batch_size: int, rounds: int) -> int:
    raw = batch_size * rounds * (trace.INPUT_BITS + trace.STATE_BITS)
    return -(-raw // SLOT_ALIGN) * SLOT_ALIGN


def slot_arrays(buf, offset: int, batch_size: int, rounds: int):
    """Two numpy views onto one slot: inputs [B, R, 320] and targets [B, R, 256], uint8."""
    n_in = batch_size * rounds * trace.INPUT_BITS
    inputs = np.ndarray((batch_size, rounds, trace.INPUT_BITS), dtype=np.uint8,
                        buffer=buf, offset=offset)
    targets = np.ndarray((batch_size, rounds, trace.STATE_BITS), dtype=np.uint8,
                         buffer=buf, offset=offset + n_in)
    return inputs, targets


def compute_batch(seed: int, rank: int, index: int, batch_size: int, params: dict,
                  inputs: np.ndarray, targets: np.ndarray, stream: int = trace.TRAIN_STREAM) -> None:
    """Micro-batch ``index`` written in place: the single definition every transport shares."""
    rounds = int(params["rounds"])
    block, init = trace.random_blocks(seed, rank, index, batch_size, stream,
                                      random_init=params.get("init_state", "iv") == "random")
    trace.fill_batch_np(block, rounds, init, inputs, targets)


# ---------------------------------------------------------------------------------------------
# Worker process
# ---------------------------------------------------------------------------------------------

def _attach(name: str, size: int):
    """Map an existing segment: returns (memoryview, owner) without touching the resource tracker.

    Workers: ``SharedMemory(name)`` would register the segment again from the worker
    (Python < 3.13 has no ``track=False``); the consumer's unlink unregisters it once,
    and a late duplicate registration makes the tracker report a leak.

    Consumer: views handed to the engine must never outlive their mapping. NumPy
    releases a buffer export as soon as it has the pointer (it keeps a reference to
    the exporting object instead), so ``SharedMemory.close()`` would unmap memory
    under live tensors. A mapping of our own that nobody ever closes explicitly is
    unmapped by reference counting only, after the last view that uses it is gone.
    """
    import mmap

    try:
        import _posixshmem
    except ImportError:  # not POSIX: fall back to the public API
        shm = shared_memory.SharedMemory(name=name)
        return shm.buf, shm
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    try:
        mapped = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    return memoryview(mapped), mapped


def worker_main(worker: int, conn, segment: str, size: int, slot_size: int,
                seed: int, rank: int, batch_size: int) -> None:
    """Entry point of producer ``worker`` (runs in a spawned process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the consumer decides
    params_by_version: dict[int, dict] = {}
    try:
        buf, keep = _attach(segment, size)
        conn.send(("ready", worker))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return  # the consumer is gone
            kind = msg[0]
            if kind == "stop":
                return
            if kind == "params":
                _, version, params = msg
                params_by_version = {v: p for v, p in params_by_version.items() if v >= version - 1}
                params_by_version[version] = params
            elif kind == "work":
                _, slot, index, version = msg
                params = params_by_version[version]
                inputs, targets = slot_arrays(buf, slot * slot_size, batch_size, int(params["rounds"]))
                compute_batch(seed, rank, index, batch_size, params, inputs, targets)
                del inputs, targets
                conn.send(("done", slot, index, version))
    except (BrokenPipeError, EOFError):
        return
    except BaseException:  # noqa: BLE001 - report anything, then die
        try:
            conn.send(("error", worker, traceback.format_exc()))
        except Exception:
            pass
        raise


# ---------------------------------------------------------------------------------------------
# Consumer side
# ---------------------------------------------------------------------------------------------

class _Resources:
    """Everything that must be released; shared with the finaliser (no reference to the loader)."""

    def __init__(self):
        self.procs: list = []
        self.conns: list = []
        self.shm: shared_memory.SharedMemory | None = None
        self.sigterm = False  # this pool counts as a user of _sigterm_to_exit

    def release(self) -> None:
        # The last pool relying on our SIGTERM handler holds a SIGTERM that arrives
        # mid-cleanup back until the cleanup is done, then exits as it asked.
        pending: list[int] = []
        deferred = False
        if self.sigterm:
            self.sigterm = False
            deferred = _sigterm_release(pending)
        try:
            self._release()
        finally:
            if deferred:
                _sigterm_restore()
        if pending:
            raise SystemExit(128 + pending[0])

    def _release(self) -> None:
        conns, procs, shm = self.conns, self.procs, self.shm
        self.conns, self.procs, self.shm = [], [], None
        for conn in conns:
            try:
                conn.send(("stop",))
            except Exception:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass
        for proc in procs:
            try:
                proc.close()
            except Exception:
                pass
        if shm is not None:
            # Unlink the name; the consumer's own mapping (see _attach) is unmapped by
            # reference counting once the last view the engine holds is dropped.
            try:
                shm.unlink()
            except FileNotFoundError:
                pass


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)


# SIGTERM's default action kills the process without running any cleanup. While at
# least one pool lives, and only if nobody else has installed a handler, SIGTERM
# raises SystemExit instead so that close() and the finalisers run.
_sigterm_users = 0


def _sigterm_acquire() -> bool:
    global _sigterm_users
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is not _sigterm_to_exit:
            if current not in (signal.SIG_DFL, None):
                return False  # the engine (or someone) handles SIGTERM: leave it to them
            signal.signal(signal.SIGTERM, _sigterm_to_exit)
            _sigterm_users = 0
    except (ValueError, OSError):
        return False
    _sigterm_users += 1
    return True


def _sigterm_release(pending: list) -> bool:
    """Drop one user; the last one swaps the handler for a recorder. True: restore later."""
    global _sigterm_users
    _sigterm_users = max(0, _sigterm_users - 1)
    if _sigterm_users:
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not _sigterm_to_exit:
            return False  # replaced since: not ours to restore
        signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
        return True
    except (ValueError, OSError):  # not the main thread / interpreter shutting down
        return False


def _sigterm_restore() -> None:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def _shm_budget() -> int:
    """Bytes a ring may take up front: a quarter of /dev/shm's free space, at most 512 MiB."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        free = 1 << 30
    return min(512 << 20, free // 4)


class SharedMemoryLoader:
    """Ordered, resumable stream of SHA-256 trace batches from ``producers`` processes."""

    def __init__(self, *, seed: int, rank: int, batch_size: int, params: dict,
                 producers: int, ring: int | None = None, hold: int = 2):
        if producers < 1:
            raise ValueError("producers must be >= 1")
        self.seed, self.rank, self.batch_size = int(seed), int(rank), int(batch_size)
        self.producers = int(producers)
        self.hold = max(1, int(hold))
        # ring >= producers + hold + 1 so every worker has a slot while the engine holds its views
        self.ring = max(int(ring or 2 * self.producers + 2), self.producers + self.hold + 1)
        self.params = dict(params)
        self.version = 0
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, _Resources.release, self._res)
        self._capacity = 0
        self._reset_bookkeeping(0)
        self._start_pool(int(self.params["rounds"]))

    # -- pool lifecycle ---------------------------------------------------------------------

    def _reset_bookkeeping(self, start: int) -> None:
        self.free: deque[int] = deque(range(self.ring))
        self.assigned: dict[int, tuple[int, int]] = {}
        self.done: dict[int, int] = {}
        self.held: deque[int] = deque()
        self.next_assign = start
        self.next_yield = start
        self.started = False

    def _start_pool(self, rounds: int) -> None:
        cap = 64 if self.ring * slot_bytes(self.batch_size, 64) <= _shm_budget() else rounds
        self._capacity = cap
        self._slot_size = slot_bytes(self.batch_size, cap)
        size = self._slot_size * self.ring
        name = f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        res = self._res
        res.shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        self._install_sigterm()
        ctx = get_context("spawn")
        try:
            for w in range(self.producers):
                parent_end, child_end = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=worker_main,
                    args=(w, child_end, res.shm.name, size, self._slot_size,
                          self.seed, self.rank, self.batch_size),
                    name=f"specrun-sha256-producer-{w}",
                    daemon=True,
                )
                proc.start()
                child_end.close()
                res.procs.append(proc)
                res.conns.append(parent_end)
        except BaseException:
            res.release()
            raise
        self._buf, _ = _attach(res.shm.name, size)
        res.shm.close()  # its own mapping is not used: views come from _attach's
        self._ready = set()

    def _install_sigterm(self) -> None:
        if not self._res.sigterm:
            self._res.sigterm = _sigterm_acquire()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._res.procs]

    @property
    def segment_name(self) -> str | None:
        return self._res.shm.name if self._res.shm is not None else None

    def close(self) -> None:
        self._buf = None
        self.held.clear()
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    # -- protocol ---------------------------------------------------------------------------

    def restart(self, start: int, params: dict | None = None) -> None:
        """Serve from micro-batch ``start`` under ``params``; nothing older is served afterwards."""
        if self.closed:
            raise RuntimeError("sha256_trace loader is closed")
        if params is not None:
            self.params = dict(params)
        rounds = int(self.params["rounds"])
        held = list(self.held)
        if rounds > self._capacity:
            # The segment is too small for the new rounds: replace the pool. Views the engine
            # still holds stay mapped (the old segment is unlinked, not unmapped).
            self._res.release()
            self._res = _Resources()
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _Resources.release, self._res)
            self.version = 0
            self._reset_bookkeeping(start)
            self._start_pool(rounds)
            held = []
        else:
            self.version += 1
            in_flight = set(self.assigned)
            self.free = deque(s for s in range(self.ring) if s not in in_flight and s not in held)
            self.done = {}
            self.held = deque(held)
            self.next_assign = self.next_yield = start
        for conn in self._res.conns:
            self._send(conn, ("params", self.version, self.params))
        self.started = True
        self._assign()

    def _send(self, conn, msg) -> None:
        try:
            conn.send(msg)
        except (BrokenPipeError, OSError):
            self._check_alive()
            raise

    def _assign(self) -> None:
        conns = self._res.conns
        while self.free:
            slot = self.free.popleft()
            index = self.next_assign
            self.next_assign += 1
            self.assigned[slot] = (index, self.version)
            self._send(conns[index % self.producers], ("work", slot, index, self.version))

    def _check_alive(self) -> None:
        for w, proc in enumerate(self._res.procs):
            if not proc.is_alive():
                code = proc.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else "exited"
                raise ProducerError(
                    f"sha256_trace producer {w} died (exit code {code}, {how}); "
                    "the data stream cannot continue"
                )

    def _handle(self, msg) -> None:
        kind = msg[0]
        if kind == "done":
            _, slot, index, version = msg
            self.assigned.pop(slot, None)
            if version == self.version and index >= self.next_yield:
                self.done[index] = slot
            else:
                self.free.append(slot)  # filled under old params (or already skipped): recycle
        elif kind == "ready":
            self._ready.add(msg[1])
        elif kind == "error":
            raise ProducerError(f"sha256_trace producer {msg[1]} failed:\n{msg[2]}")

    def _pump(self, timeout: float) -> bool:
        """Read every pending message (waiting up to ``timeout``); True if any arrived."""
        res = self._res
        sentinels = {p.sentinel: w for w, p in enumerate(res.procs)}
        ready = mp_connection.wait(list(res.conns) + list(sentinels), timeout)
        got = False
        dead = False
        for obj in ready:
            if obj in sentinels:
                dead = True
                continue
            while True:
                try:
                    if not obj.poll():
                        break
                    msg = obj.recv()
                except (EOFError, OSError):
                    dead = True
                    break
                self._handle(msg)
                got = True
        if dead:
            # Drain what the dead worker managed to say (an "error" with its traceback wins).
            for conn in res.conns:
                try:
                    while conn.poll():
                        self._handle(conn.recv())
                except (EOFError, OSError):
                    pass
            self._check_alive()
        return got

    def next_slot(self) -> int:
        """Block until micro-batch ``next_yield`` is ready; return its slot."""
        if not self.started:
            raise RuntimeError("call restart(start) before taking batches")
        if self.closed:
            raise RuntimeError("sha256_trace loader is closed")
        # Release views the engine no longer holds (keep the last ``hold`` ones).
        while len(self.held) >= self.hold:
            self.free.append(self.held.popleft())
        self._assign()
        deadline = time.monotonic() + STALL_TIMEOUT_S
        while self.next_yield not in self.done:
            if self._pump(1.0):
                deadline = time.monotonic() + STALL_TIMEOUT_S
                self._assign()
            else:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise ProducerError(
                        f"sha256_trace producers sent nothing for {STALL_TIMEOUT_S:.0f} s "
                        f"(waiting for micro-batch {self.next_yield})"
                    )
        # Opportunistically collect other finished work without waiting.
        self._pump(0)
        slot = self.done.pop(self.next_yield)
        self.next_yield += 1
        self.held.append(slot)
        self._assign()
        return slot

    def arrays(self, slot: int):
        return slot_arrays(self._buf, slot * self._slot_size, self.batch_size, int(self.params["rounds"]))

    def release_held(self) -> None:
        """The engine promised to hold no view any more: every held slot may be refilled."""
        while self.held:
            self.free.append(self.held.popleft())
        if not self.closed and self.started:
            self._assign()
