"""Progress of long CLI work on standard error: one line redrawn in place while stderr is a
terminal, nothing at all when it is not (a pipe, a file, the journal), so scripts and logs
see only the result."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

REDRAW = 0.2  # seconds between two drawings of the line


def _amount(n: float, unit: str) -> str:
    if unit == "bytes":
        for name, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if n >= size:
                return f"{n / size:.1f} {name}"
        return f"{int(n)} bytes"
    return f"{int(n):,} {unit}"


class Progress:
    """``with Progress("import", stream) as p:`` then ``p.step(text)`` for a phase of unknown
    length (the elapsed seconds tick while it runs) or ``p.count(done, total)`` for a count.
    On a stream that is not a terminal every call does nothing."""

    def __init__(self, what: str, stream: TextIO | None = None, unit: str = "lines") -> None:
        self.what = what
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self._lock = threading.Lock()
        self._text = ""
        self._started = time.monotonic()
        self._phase_started = self._started
        self._drawn = 0.0
        self._width = 0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._watched: Callable[[], str] | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def step(self, text: str) -> None:
        """A phase whose length is not known: its text, and the seconds it has taken so far."""
        if not self.enabled:
            return
        with self._lock:
            self._text = text
            self._phase_started = time.monotonic()
        self._draw(force=True)

    def count(self, done: float, total: float | None = None) -> None:
        """``done`` of ``total`` (in ``unit``), with the share done when the total is known."""
        if not self.enabled:
            return
        text = _amount(done, self.unit)
        if total:
            text += f" of {_amount(total, self.unit)} ({min(100.0, 100.0 * done / total):.0f}%)"
        with self._lock:
            self._text = text
            self._phase_started = 0.0
        self._draw()

    def watch(self, text: Callable[[], str]) -> None:
        """Work that counts for itself (in another thread): ``text()`` is drawn every second."""
        if not self.enabled:
            return
        with self._lock:
            self._watched = text
            self._phase_started = 0.0
        self._tick_once()

    def _tick_once(self) -> None:
        watched = self._watched
        if watched is not None:
            text = watched()
            with self._lock:
                self._text = text
        self._draw(force=True)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._tick_once()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._drawn < REDRAW:
                return
            self._drawn = now
            line = f"{self.what}: {self._text}"
            if self._phase_started:
                line += f" ({now - self._phase_started:.0f} s)"
            pad = " " * max(0, self._width - len(line))
            self._width = len(line)
            try:
                self.stream.write(f"\r{line}{pad}")
                self.stream.flush()
            except (OSError, ValueError):
                self.enabled = False

    def close(self) -> None:
        """Stop ticking and wipe the line, so what is printed next starts a clean line."""
        if not self.enabled:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2)
        with self._lock:
            try:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self.enabled = False
