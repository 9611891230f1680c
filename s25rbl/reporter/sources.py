"""Where the reporter's lines come from: a log file, or standard input (read by a thread)."""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Protocol

from s25rbl.reporter.logfile import LogFile
from s25rbl.reporter.state import MAX_LINE, Position


class Source(Protocol):
    """Where lines come from: a log file (followed across rotation) or standard input."""

    def read_line(self) -> bytes | None: ...
    def finished(self) -> bool: ...
    def wait(self, seconds: float, stop: threading.Event) -> None: ...
    def where(self) -> tuple[int, int, int] | None: ...
    def position(self) -> Position | None: ...
    def close(self) -> None: ...


class FileSource:
    """Lines of a ``LogFile``."""

    def __init__(self, logfile: LogFile) -> None:
        self.logfile = logfile

    def read_line(self) -> bytes | None:
        return self.logfile.read_line()

    def finished(self) -> bool:
        return self.logfile.finished()

    def wait(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)

    def where(self) -> tuple[int, int, int] | None:
        f = self.logfile
        return (f.device, f.inode, f.offset) if f.fh is not None else None

    def position(self) -> Position | None:
        return self.logfile.position()

    def close(self) -> None:
        self.logfile.close()


class StdinSource:
    """Standard input, read by a thread so that a quiet pipe does not hold back a batch."""

    _EOF = b""

    def __init__(self, stream: Any) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=10_000)
        self._next: bytes | None = None
        self._eof = False
        thread = threading.Thread(target=self._pump, args=(stream,), daemon=True, name="stdin")
        thread.start()

    def _pump(self, stream: Any) -> None:
        try:
            while True:
                line = stream.readline(MAX_LINE)
                if not line:
                    break
                if not line.endswith(b"\n") and len(line) >= MAX_LINE:
                    self._queue.put(line)  # counted unparsable; drop the rest of the line
                    while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                        pass
                    continue
                self._queue.put(line.rstrip(b"\r\n") + b"\n")
        finally:
            self._queue.put(self._EOF)

    def read_line(self) -> bytes | None:
        if self._next is None:
            try:
                self._next = self._queue.get_nowait()
            except queue.Empty:
                return None
        item, self._next = self._next, None
        if item == self._EOF:
            self._eof = True
            return None
        return item.rstrip(b"\r\n") if item.endswith(b"\n") else item

    def finished(self) -> bool:
        return self._eof

    def wait(self, seconds: float, stop: threading.Event) -> None:
        if self._next is None and not self._eof:
            with contextlib.suppress(queue.Empty):
                self._next = self._queue.get(timeout=seconds)

    def where(self) -> None:
        return None

    def position(self) -> None:
        return None

    def close(self) -> None:
        pass
