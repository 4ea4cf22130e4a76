"""Console output: event lines for people, a live progress line on a terminal."""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _progress_text(step: int, total: int | None, phase: str, rate: float, loss: float | None,
                   key: tuple[str, float] | None) -> str:
    parts = [phase, f"step {step}" + (f"/{total}" if total else ""), f"{rate:.1f} steps/s"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if key is not None:
        parts.append(f"{key[0]} {key[1]:.4f}")
    if total and rate > 0:
        parts.append(f"ETA {_duration((total - step) / rate)}")
    return " | ".join(parts)


class Console:
    def __init__(self, quiet: bool = False, stream=None, enabled: bool = True, text_log=None,
                 plain_every: float = 30.0):
        self.stream = stream or sys.stderr
        self.quiet = quiet or not enabled
        self.live = not self.quiet and self.stream.isatty()
        self.text_log = text_log  # path of the spec's `log.text`, appended to
        # Without a terminal (CI, nohup, a cluster's log file) a plain line every this many
        # seconds instead of the redrawn one; 0: none.
        self.plain_every = plain_every
        self._line_open = False
        self._last_draw = 0.0
        self._last_plain = time.monotonic()

    def say(self, message: str) -> None:
        if self.text_log is not None:
            try:
                with open(self.text_log, "a", encoding="utf-8") as fh:
                    fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
            except OSError as exc:  # a full disk: the console goes on, and says why the log stopped
                self.text_log = None
                self.say(f"warning: the text log stopped: {exc.strerror or exc}")
        if self.quiet:
            return
        self._write(("\r\x1b[2K" if self._line_open else "") + message + "\n")
        self._line_open = False

    def progress(self, step: int, total: int | None, details) -> None:
        """The progress line at ``step`` of ``total``. ``details()`` gives (phase, steps/s, loss,
        key metric) and is asked only when a line is drawn: called on every step, this must
        cost next to nothing on the many steps that draw none."""
        if self.quiet:
            return
        now = time.monotonic()
        if self.live:
            if now - self._last_draw < 0.2:  # a terminal redraw per step would cost more than a tiny step
                return
            self._last_draw = now
            self._write("\r\x1b[2K" + _progress_text(step, total, *details()))
            self._line_open = True
        elif self.plain_every and now - self._last_plain >= self.plain_every:
            self._last_plain = now
            self._write(_progress_text(step, total, *details()) + "\n")

    def close(self) -> None:
        if self._line_open:
            self._write("\n")
            self._line_open = False

    def _write(self, text: str) -> None:
        """A console that went away (`specrun run ... 2>&1 | head`) must not stop the run."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):  # ValueError: the stream was closed
            self.quiet, self.live = True, False
