"""The stub resolver's UDP sockets and what its queries need at hand: unpredictable ids and
question case, the record of a query sent, and the socket protocol that takes only the answer
to an outstanding question."""

from __future__ import annotations

import asyncio
import os
import time
import typing
from collections.abc import Iterator

from s25rbl.resolve.codec import answers_question

# (the future the answer goes to, the question lower-cased, the question exactly as sent)
Pending: typing.TypeAlias = "tuple[asyncio.Future[bytes | None], bytes, bytes]"
# What an outstanding query's future gets for an answer that matched but for the case of the
# question's letters (DNS 0x20): not the answer.
CASE_CHANGED = b"\x00case changed"


class IdSource:
    """Unpredictable 16-bit query ids; os.urandom is called once per 4096 ids."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: Iterator[int] = iter(())

    def next(self) -> int:
        for qid in self._ids:
            return qid
        self._ids = iter(memoryview(os.urandom(8192)).cast("H").tolist())
        return next(self._ids)


class Noise:
    """Unpredictable octets for the question's case; os.urandom is called once per 4096."""

    __slots__ = ("_buffer", "_used")

    def __init__(self) -> None:
        self._buffer = b""
        self._used = 0

    def take(self, size: int) -> bytes:
        if self._used + size > len(self._buffer):
            self._buffer, self._used = os.urandom(4096), 0
        self._used += size
        return self._buffer[self._used - size : self._used]


class Sent:
    """One query of a lookup still registered on a socket: where, under which id, and which
    pending entry (they are re-pointed at the lookup's current future as attempts go on)."""

    __slots__ = ("entry", "pending", "qid")

    def __init__(self, pending: dict[int, Pending], qid: int, entry: Pending) -> None:
        self.pending = pending
        self.qid = qid
        self.entry = entry


class UdpSocket(asyncio.DatagramProtocol):
    """One connected UDP socket; the kernel already drops datagrams from other sources."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, Pending] = {}
        self.closed = False
        self.uses = 0  # queries sent
        self.born = 0.0  # loop time it was opened
        self.retiring = False  # a replacement is being opened
        self.refused_at = 0.0  # time.monotonic() of the last ICMP "port unreachable" (0: never)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | typing.Any, int]) -> None:
        # Anything that is not the answer to an outstanding question is dropped silently:
        # that is the anti-spoofing rule, and a hostile packet must never break the socket.
        try:
            if len(data) < 12:
                return
            qid = (data[0] << 8) | data[1]
            entry = self.pending.get(qid)
            if entry is None or not answers_question(data, qid, entry[1]):
                return
            del self.pending[qid]
            fut, _question, exact = entry
            if not fut.done():
                # Only an exact echo is the answer (0x20); one that changed the case is either
                # spoofed or from an upstream that does so: the lookup asks again either way.
                fut.set_result(data if data[12 : 12 + len(exact)] == exact else CASE_CHANGED)
        except Exception:
            return

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on a connected socket cannot be tied to one query; the per-attempt
        # timer moves the lookup on to the next upstream. A refusal (nothing listens there)
        # is remembered, so a lookup that times out can say why.
        if isinstance(exc, ConnectionRefusedError):
            self.refused_at = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail_all()

    def fail_all(self) -> None:
        pending, self.pending = self.pending, {}
        for fut, _question, _exact in pending.values():
            if not fut.done():
                fut.set_result(None)


def expire(fut: asyncio.Future[bytes | None]) -> None:
    if not fut.done():
        fut.set_result(None)
