"""The log reporter's view of a log file across rotation.

``LogFile`` reads complete lines with their end offsets and notices rotation: the path now
names another file (renamed away, ``create`` rotation) or the file shrank below the offset
(``copytruncate``). In both cases the old file is finished before the new one is read from 0.
"""

from __future__ import annotations

import logging
import os
import time
from typing import BinaryIO

from s25rbl.errors import StateError
from s25rbl.reporter.state import HEAD_BYTES, MAX_LINE, Position, head_digest, same_file

log = logging.getLogger("s25rbl.reporter")


def find_rotated(path: str, position: Position) -> str | None:
    """The file the state was recorded for, renamed in the same directory (``mail.log.1``,
    ``mail.log-20261124``), if it is still there uncompressed; None otherwise."""
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return None
    for entry in entries:
        if not entry.name.startswith(base) or entry.name == base:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (position.device, position.inode):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if same_file(fd, position):
                return entry.path
        finally:
            os.close(fd)
    return None


class LogFile:
    """Complete lines from a log path, with rotation handled as described in the module doc.

    ``offset`` is always the end of the last line returned by ``read_line``. A final line
    without its newline is held back while following (the logger may be writing it) and
    returned as a line when the file is finished (end of input, or rotated away and quiet).
    """

    def __init__(self, path: str, *, follow: bool, rotate_quiet: float = 1.0) -> None:
        self.path = path
        self.follow = follow
        self.rotate_quiet = rotate_quiet
        self.fh: BinaryIO | None = None
        self.device = 0
        self.inode = 0
        self.offset = 0
        self._switch_pending = False  # the open file is not (any more) the one at ``path``
        self._rotated_at: float | None = None
        self._skipping = False  # inside an overlong line: discard up to its newline
        self._missing = False  # said that the path does not exist (yet)

    # --- opening ------------------------------------------------------------------------

    def start(self, saved: Position | None, *, from_end: bool = False) -> None:
        """Open where the state says, finishing a file rotated while we were stopped.

        With nothing saved, read the log from its beginning, or with ``from_end`` from its
        current end (``--from-end``: a first start on a big, long-lived log); a log that does
        not exist yet is read whole when it appears, all of it being new. A saved position
        always wins over ``from_end``: ignoring it would skip lines that were never reported.
        """
        if saved is not None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = -1
            except OSError as exc:
                raise StateError(f"{self.path}: {exc.strerror or exc}") from None
            if fd >= 0:
                if same_file(fd, saved):
                    self._adopt(os.fdopen(fd, "rb"), saved.offset)
                    log.info("%s: resuming at offset %d", self.path, saved.offset)
                    return
                st = os.fstat(fd)
                os.close(fd)
                if (st.st_dev, st.st_ino) == (saved.device, saved.inode):
                    log.warning(
                        "%s: truncated or replaced since offset %d was saved: reading it from the start",
                        self.path,
                        saved.offset,
                    )
                    self._open_path()
                    return
            rotated = find_rotated(self.path, saved)
            if rotated is not None:
                log.info(
                    "%s: rotated while stopped: finishing %s from offset %d", self.path, rotated, saved.offset
                )
                self._adopt(open(rotated, "rb"), saved.offset, old=True)  # noqa: SIM115 - kept open
                return
            log.warning(
                "%s: rotated while stopped and the old file (inode %d) is gone or compressed: "
                "its lines after offset %d are not reported",
                self.path,
                saved.inode,
                saved.offset,
            )
        elif from_end:
            if self._open_path():
                self._skip_to_end()
            return
        self._open_path()

    def _skip_to_end(self) -> None:
        """Move to the end of the last complete line of the open file.

        While following, a last line without its newline is still being written: reading
        from its start reports it once it is complete, where reading from the end of the file
        would turn its rest into an unparsable fragment. Without following, the file will not
        grow, so the end is its end (as ``read_line`` treats such a line as complete).
        """
        assert self.fh is not None
        fd = self.fh.fileno()
        size = os.fstat(fd).st_size
        end, skipping = size, False
        if self.follow and size:
            tail_start = max(0, size - MAX_LINE)
            newline = os.pread(fd, size - tail_start, tail_start).rfind(b"\n")
            if newline >= 0:
                end = tail_start + newline + 1
            elif tail_start == 0:
                end = 0  # the file is one line, still being written
            else:
                skipping = True  # inside an overlong line: not a log line, discard its rest
        self.fh.seek(end)
        self.offset, self._skipping = end, skipping
        log.info("%s: no saved position: starting at its end (offset %d)", self.path, end)

    def _open_path(self) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open while reading
        except FileNotFoundError:
            if self.follow:
                if not self._missing:
                    log.info("%s: no such file yet; waiting for it", self.path)
                    self._missing = True
                return False
            raise StateError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise StateError(f"{self.path}: {exc.strerror or exc}") from None
        self._adopt(fh, 0)
        self._missing = False
        return True

    def _adopt(self, fh: BinaryIO, offset: int, *, old: bool = False) -> None:
        """Read ``fh`` from ``offset``; ``old``: a rotated file, to finish before the path's."""
        if self.fh is not None:
            self.fh.close()
        st = os.fstat(fh.fileno())
        fh.seek(offset)
        self.fh, self.device, self.inode, self.offset = fh, st.st_dev, st.st_ino, offset
        self._switch_pending = old
        # A file rotated while we were stopped has long been quiet.
        self._rotated_at = time.monotonic() - self.rotate_quiet if old else None
        self._skipping = False

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        self._switch_pending = False
        self._rotated_at = None

    # --- reading ------------------------------------------------------------------------

    def position(self) -> Position | None:
        if self.fh is None:
            return None
        length = min(self.offset, HEAD_BYTES)
        return Position(self.device, self.inode, self.offset, head_digest(self.fh, length), length)

    def read_line(self) -> bytes | None:
        """The next complete line (line end stripped), or None when there is none for now."""
        while True:
            if self.fh is None and not (self.follow and self._open_path()):
                return None
            assert self.fh is not None
            line = self.fh.readline(MAX_LINE)
            if len(line) >= MAX_LINE and not line.endswith(b"\n"):
                # Not a log line: hand its first part over once (counted unparsable), drop the rest.
                self.offset += len(line)
                if self._skipping:
                    continue
                self._skipping = True
                return line
            if line.endswith(b"\n") or (line and self._file_done()):
                # A complete line, or the last one of a file that will not grow any more.
                self.offset += len(line)
                if self._rotated_at is not None:
                    self._rotated_at = time.monotonic()  # the old file is still being written
                if self._skipping:
                    self._skipping = False
                    continue
                return line.rstrip(b"\r\n")
            if line:
                self.fh.seek(self.offset)  # a line being written: read it again when complete
            if not self._at_end():
                return None

    def _file_done(self) -> bool:
        """Whether the open file will not grow any more (so a partial last line is a line)."""
        if not self.follow:
            return True
        return self._rotated_at is not None and time.monotonic() - self._rotated_at >= self.rotate_quiet

    def _at_end(self) -> bool:
        """At the end of the open file: notice truncation and rotation (following), or move
        from a finished old file to the file now at the path. True: read again."""
        assert self.fh is not None
        if self.follow:
            if os.fstat(self.fh.fileno()).st_size < self.offset:
                log.warning(
                    "%s: truncated (offset %d is past its end): reading it from the start",
                    self.path,
                    self.offset,
                )
                self.fh.seek(0)
                self.offset = 0
                return True
            if not self._switch_pending:
                if not self._path_changed():
                    return False
                # Renamed away and replaced. The logger may still write to the old file until
                # it reopens: finish the old file once it has been quiet for a moment.
                self._switch_pending = True
                self._rotated_at = time.monotonic()
                return False
            if not self._file_done():
                return False
        elif not self._switch_pending:
            return False
        old = self.inode
        self.close()
        if self._open_path():
            log.info("%s: rotated: finished the old file (inode %d), reading the new one", self.path, old)
            return True
        return False

    def _path_changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # renamed away, new file not created yet: keep reading the old one
        return (st.st_dev, st.st_ino) != (self.device, self.inode)

    def finished(self) -> bool:
        """No more lines will come: without --follow, at the end of the last file."""
        return not self.follow and not self._switch_pending
