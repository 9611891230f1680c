"""The log reporter's memory: for each log path, which file it was reading (device and inode,
plus a fingerprint of the file's first bytes, since a deleted file's inode can be reused) and
the byte offset just after the last line that is done: its report accepted by the API, or the
line ignored. It is written atomically (temporary file, fsync, rename), so a crash leaves
either the old state or the new one; the lines after the offset are read again on restart, and
the idempotency key of each report absorbs the overlap of a crash between a send and the write.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from s25rbl.errors import StateError

log = logging.getLogger("s25rbl.reporter")

HEAD_BYTES = 1024  # the fingerprint covers at most this many bytes from the file's start
MAX_LINE = 64 * 1024  # a longer "line" is not a Postfix log line: skipped, counted unparsable


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading stands: the file (device, inode) and the offset after the last line done."""

    device: int
    inode: int
    offset: int
    head: str = ""  # sha256 of the first min(offset, HEAD_BYTES) bytes
    head_length: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "inode": self.inode,
            "offset": self.offset,
            "head": self.head,
            "head_length": self.head_length,
        }

    @classmethod
    def from_json(cls, data: Any) -> Position:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        values = [data.get(k) for k in ("device", "inode", "offset", "head_length")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError("device, inode, offset, head_length must be non-negative integers")
        head = data.get("head", "")
        if not isinstance(head, str):
            raise ValueError("head must be a string")
        return cls(values[0], values[1], values[2], head, values[3])  # type: ignore[arg-type]


def head_digest(fh: BinaryIO | int, length: int) -> str:
    """The fingerprint of a file's first ``length`` bytes (read without moving the offset)."""
    fd = fh if isinstance(fh, int) else fh.fileno()
    data = os.pread(fd, length, 0) if length else b""
    return hashlib.sha256(data).hexdigest() if len(data) == length else ""


def same_file(fd: int, position: Position) -> bool:
    """Whether the open file is the one ``position`` was recorded for (inode and fingerprint)."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (position.device, position.inode):
        return False
    if st.st_size < position.offset:
        return False  # truncated (or another file that reuses the inode): not where we were
    if position.head_length:
        return head_digest(fd, position.head_length) == position.head
    return True


class StateFile:
    """The JSON state file: ``{"version": 1, "files": {path: Position}}``, with an exclusive lock."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self.files: dict[str, Position] = {}

    def open(self) -> None:
        """Lock (one reporter per state file) and load; a damaged file is reported and ignored."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"state file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StateError(
                f"state file {self.path} is in use by another report-maillog (use --state)"
            ) from None
        self._lock_fd = fd
        self.files = self._load()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self) -> dict[str, Position]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("state file %s unreadable (%s): starting without it", self.path, exc)
            return {}
        files: dict[str, Position] = {}
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            log.warning("state file %s has no 'files' object: starting without it", self.path)
            return {}
        for name, item in data["files"].items():
            try:
                files[name] = Position.from_json(item)
            except ValueError as exc:
                log.warning("state file %s: entry for %s ignored (%s)", self.path, name, exc)
        return files

    def get(self, log_path: str) -> Position | None:
        return self.files.get(log_path)

    def save(self, log_path: str, position: Position) -> None:
        """Record ``position`` for ``log_path`` and write the file atomically."""
        self.files[log_path] = position
        payload = {
            "version": self.VERSION,
            "saved_at": datetime.now(UTC).isoformat(),
            "files": {name: pos.as_json() for name, pos in sorted(self.files.items())},
        }
        text = json.dumps(payload, indent=1) + "\n"
        tmp = self.path.with_name(f"{self.path.name}.tmp.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(f"cannot write the state file {self.path}: {exc.strerror or exc}") from None
