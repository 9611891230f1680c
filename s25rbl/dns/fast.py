"""Cached UDP answers without Python: the C extension ``_fastpath``, where it was built.

A cache hit in Python costs more than rbldnsd's whole answer (bench/README.md, issue 16):
the interpreter's work per datagram, not the cache, is the floor. Here one C call per
readiness event reads up to ``size`` datagrams (``recvmmsg``), answers each whose bytes past
the ID are a key of the answer cache's dict (read in place: the C side stores nothing) and
not expired, counts it, and hands the rest back to Python, which answers them as the
batched path does (the Python cache, then the handler); one ``sendmmsg`` sends every
answer. The answers are byte for byte those of the Python paths.

The hits counted in C are added to the responder's counters and the entries' hit counts by
a timer once a second (and when the reader closes, or ``drain`` is called), so metrics lag
by at most a second. Where the extension is missing (no compiler at install),
``dns.fast_path`` is false, or the cache's clock is not the system's, ``FastBatch.create``
returns None and the reader uses ``s25rbl.dns.batch``; an error at run time raises
``BatchUnsupported`` and the reader falls back to Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from types import ModuleType
from typing import Any

from s25rbl.dns.batch import BatchUnsupported, Handle, Later, address_of, client_text
from s25rbl.dns.cache import AnswerCache

log = logging.getLogger(__name__)

DRAIN_INTERVAL = 1.0  # seconds between adding the C counts to the Python counters


def _load() -> ModuleType | None:
    try:
        from s25rbl.dns import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fastpath  # type: ignore[no-any-return]


_EXT = _load()


def available() -> bool:
    """Whether the C extension was built and imports."""
    return _EXT is not None


class FastBatch:
    """``UdpBatch``'s work (same ``serve``, ``dropped`` and ``close``) with cache hits in C."""

    def __init__(self, sock: socket.socket, size: int, cache: AnswerCache) -> None:
        if _EXT is None:
            raise BatchUnsupported(errno.ENOSYS, "the C fast path was not built")
        self._sock = sock
        self._v6 = sock.family == socket.AF_INET6
        self._cache = cache
        hits = cache.attach(_EXT.Hits)
        if hits is None:
            raise BatchUnsupported(errno.ENOTSUP, "the answer cache does not use the system clock")
        self._udp: Any = _EXT.Udp(sock.fileno(), size, hits)
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        with contextlib.suppress(RuntimeError):  # no loop (a test calling serve itself)
            self._timer = asyncio.get_running_loop().call_later(DRAIN_INTERVAL, self._tick)

    @classmethod
    def create(cls, sock: socket.socket, size: int, cache: AnswerCache | None) -> FastBatch | None:
        """A C batch for ``sock``, or None where it cannot be used (the reason logged)."""
        if cache is None or size < 2:
            return None
        if _EXT is None:
            log.debug("the C fast path is not built")
            return None
        try:
            return cls(sock, size, cache)
        except (OSError, ValueError, MemoryError) as exc:
            log.warning("the C fast path not used (%s)", exc)
            return None

    @property
    def dropped(self) -> int:
        """Answers the socket did not take."""
        try:
            return int(self._udp.stats()["dropped"]) + self._dropped
        except Exception:  # a C path that failed: what it had counted is lost
            return self._dropped

    def stats(self) -> dict[str, int]:
        """The C loop's counters: calls, datagrams received, hits, dropped, truncated."""
        return dict(self._udp.stats())

    def drain(self) -> None:
        """Add what the C loop counted to the Python counters now."""
        self._cache.drain()

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(DRAIN_INTERVAL, self._tick)
        self._cache.drain()

    def serve(self, cached: Any, handle: Handle, later: Later) -> int:
        """Read what is waiting and answer it (see ``UdpBatch.serve``); how many were read."""
        self._cache.current()  # a list change empties the cache before anything is answered
        try:
            misses = self._udp.serve(self._cache.entries)
            if misses is None:
                return 0
            udp = self._udp
            for i, data in misses:
                answer = None if cached is None else cached(data, False)
                if answer is None:
                    result = handle(data, False, client_text(udp.name(i), self._v6))
                    if result is None:
                        continue
                    if not isinstance(result, bytes):
                        later(result, address_of(udp.name(i), self._v6))
                        continue
                    answer = result
                if not udp.queue(i, answer):
                    self._send_one(answer, address_of(udp.name(i), self._v6))
            udp.send()
        except Exception as exc:  # a failure of the C path: the caller falls back to Python's
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            raise BatchUnsupported(code, f"C fast path: {exc!r}") from exc
        return int(udp.last)

    def _send_one(self, response: bytes, address: Any) -> None:
        try:
            self._sock.sendto(response, address)
        except OSError:
            self._dropped += 1

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(Exception):  # closing after a failure of the C path
            self.drain()
            self._udp.close()
