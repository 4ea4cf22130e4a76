"""A sink on a thread of its own: the training thread only queues, never waits, never fails.

A sink that does real work per row (TensorBoard's protobufs; ``process.py`` for
the trackers, which talk to a database or a server) must neither slow nor stop
training. Its calls go on a bounded queue; a worker opens the sink, takes what
the queue holds in one go and hands it over, then calls ``flush()`` (one batched
write). The first error -- opening or writing -- becomes one ``warning`` event
and the sink goes quiet for the rest of the run; metrics.csv is written on the
training thread and stays complete whatever happens here.

Rows and event records are handed over as they are: the loop builds a new dict
for each and does not touch it afterwards.
"""

from __future__ import annotations

import queue
import threading

from specrun.engine.sinks.base import Sink

CAPACITY = 100_000  # rows and events waiting; past this they are dropped (with one warning), not waited for
CLOSE_TIMEOUT_S = 60.0  # how long the end of a run waits for a sink to send what it holds
STOP = None  # the last item a worker gets (None: the same in every process)


class Background(Sink):
    def __init__(self, name: str, opener, warn, capacity: int = CAPACITY, close_timeout: float = CLOSE_TIMEOUT_S):
        """``opener()`` builds the real sink, on the worker thread; ``warn(message, **fields)`` is thread-safe."""
        self._init(name, warn, queue.Queue(capacity), capacity, close_timeout)
        self._worker = threading.Thread(target=drive, args=(name, opener, self._queue, self._fail),
                                        name=f"specrun-sink-{name}", daemon=True)
        self._worker.start()

    def _init(self, name: str, warn, items, capacity: int, close_timeout: float) -> None:
        self.name = name
        self._warn = warn
        self._queue = items
        self._capacity = capacity
        self._close_timeout = close_timeout
        self._failed = False
        self._closed = False
        self._dropped = 0

    def row(self, row: dict) -> None:
        self._put(("row", row))

    def event(self, record: dict) -> None:
        self._put(("event", record))

    def close(self) -> None:
        """Let the worker send what is queued and close the sink; wait at most ``close_timeout``."""
        self._closed = True
        try:
            self._queue.put(STOP, timeout=self._close_timeout)
        except queue.Full:
            pass
        self._worker.join(self._close_timeout)
        if self._worker.is_alive() and not self._failed:
            self._warn(f"{self.name} did not finish within {self._close_timeout:g}s after the run ended; "
                       "what it had not sent yet is lost (metrics.csv is complete)", sink=self.name)

    def _put(self, item) -> None:
        if self._failed or self._closed:  # a warning written after close comes here too
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                self._warn(f"{self.name} falls behind the training ({self._capacity} rows and events "
                           "waiting): dropping what it cannot take rather than slowing the run", sink=self.name)

    def _fail(self, message: str) -> None:
        self._failed = True
        self._warn(message, sink=self.name)


def drive(name: str, opener, items, fail, get=None) -> None:
    """The worker's loop: open, then batches of ``(method, payload)`` until STOP, then close.

    ``fail(message)`` is called once, on the first error; after it the queue is emptied
    until STOP so that whoever closes never waits long. ``get`` takes the next item
    (default: ``items.get()``).
    """
    get = get or items.get
    try:
        sink = opener()
    except Exception as exc:
        fail(_failure(name, "could not start", exc))
        return _discard(get)
    while True:
        batch = [get()]
        while batch[-1] is not STOP:  # everything already waiting goes out as one batch
            try:
                batch.append(items.get_nowait())
            except queue.Empty:
                break
        try:
            for item in batch:
                if item is not STOP:
                    getattr(sink, item[0])(item[1])
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()
            if batch[-1] is STOP:
                sink.close()
                return
        except Exception as exc:
            fail(_failure(name, "failed", exc))
            return None if batch[-1] is STOP else _discard(get)


def _failure(name: str, what: str, exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0][:500] if text else "(no message)"
    return (f"{name} {what}: {type(exc).__name__}: {first}; it records nothing more for this run "
            "(training goes on; metrics.csv is complete)")


def _discard(get) -> None:
    while get() is not STOP:
        pass
