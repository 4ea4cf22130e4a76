"""A sink in a process of its own, for the experiment trackers.

A tracker's client is Python doing real work: importing MLflow or W&B takes
seconds, and W&B builds and sends a protobuf per row. On a thread of the training
process that work holds the GIL, and a training thread whose every torch call
releases and re-takes the GIL waits for it: measured, all three trackers on a
thread doubled the wall time of a small step. In a process of its own (spawned,
so nothing of the parent's threads or CUDA state is copied) it costs the training
thread one pickle per row.

The worker ignores Ctrl+C (a terminal sends it to the whole process group: the
parent decides what it means and closes the sink after its last event) and exits
by itself when the parent is gone. Warnings come back on a
second queue and are relayed by a thread that only waits.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import queue
import signal
import threading

from specrun.engine.sinks.background import CAPACITY, CLOSE_TIMEOUT_S, STOP, Background, drive


class Subprocess(Background):
    def __init__(self, name: str, factory: str, args: tuple, warn, capacity: int = CAPACITY,
                 close_timeout: float = CLOSE_TIMEOUT_S):
        """``factory``: ``"module:callable"``; in the worker, ``callable(*args, warn)`` builds the sink.

        ``args`` must pickle (plain data: the plan as JSON, paths, settings).
        """
        context = multiprocessing.get_context("spawn")
        self._init(name, warn, context.Queue(capacity), capacity, close_timeout)
        self._replies = context.Queue()
        self._worker = context.Process(target=_serve, args=(name, factory, args, self._queue, self._replies,
                                                            os.getpid()),
                                       name=f"specrun-sink-{name}", daemon=True)
        self._worker.start()
        self._relay = threading.Thread(target=self._listen, name=f"specrun-sink-{name}-replies", daemon=True)
        self._relay.start()

    def close(self) -> None:
        super().close()
        if self._worker.is_alive():
            self._worker.terminate()
            self._worker.join(5)
        elif self._worker.exitcode != 0 and not self._failed:
            # It died before it could say why (killed; a script that runs specrun at import time
            # without `if __name__ == "__main__":`, which a spawned process imports again).
            self._fail(f"{self.name}'s process ended with exit code {self._worker.exitcode}; what it had not "
                       "sent is lost (training went on; metrics.csv is complete)")
        self._replies.put(STOP)  # ends the relay after whatever the worker said last
        self._relay.join(5)
        self._queue.close()

    def _listen(self) -> None:
        while (reply := self._replies.get()) is not STOP:
            kind, message = reply
            if kind == "failed":
                self._fail(message)
            else:
                self._warn(message, sink=self.name)


def _serve(name: str, factory: str, args: tuple, items, replies, parent: int) -> None:
    # Ctrl+C reaches the whole process group: the training process decides what it means and
    # closes us after its last event; if it is gone, get() below notices. SIGTERM still ends us
    # (multiprocessing's exit handler and close() rely on it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    module, _, attr = factory.partition(":")

    def warn(message: str, **_) -> None:
        replies.put(("warning", message))

    def opener():
        return getattr(importlib.import_module(module), attr)(*args, warn)

    def get():
        while True:
            try:
                return items.get(timeout=2.0)
            except queue.Empty:
                if os.getppid() != parent:  # the training process is gone (killed): nobody will close us
                    return STOP

    drive(name, opener, items, lambda message: replies.put(("failed", message)), get)
    replies.close()
    replies.join_thread()
