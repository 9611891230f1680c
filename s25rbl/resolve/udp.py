"""The stub resolver's UDP sockets and what its queries need at hand: unpredictable ids and
question case, and the socket protocol that takes only the answer
to an outstanding question."""

from __future__ import annotations

import asyncio
import os
import time
import typing
from collections.abc import Iterator

from s25rbl.resolve.codec import answers_question


class Receiver(typing.Protocol):
    """The lookup a query belongs to: ``received`` its answer (or ``CASE_CHANGED``), told when
    the socket ``failed`` (closed with the query unanswered)."""

    def received(self, data: bytes) -> None: ...

    def failed(self) -> None: ...


# (the lookup the answer goes to, the question lower-cased, the question exactly as sent)
Pending: typing.TypeAlias = "tuple[Receiver, bytes, bytes]"
# What an outstanding query's lookup gets for an answer that matched but for the case of the
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


class UdpSocket(asyncio.DatagramProtocol):
    """One connected UDP socket; the kernel already drops datagrams from other sources."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, Pending] = {}
        self.outgoing: list[bytes] = []  # queries to send at the end of the loop's turn
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
            receiver, _question, exact = entry
            # Only an exact echo is the answer (0x20); one that changed the case is either
            # spoofed or from an upstream that does so: the lookup asks again either way.
            receiver.received(data if data[12 : 12 + len(exact)] == exact else CASE_CHANGED)
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
        for receiver in {id(entry[0]): entry[0] for entry in pending.values()}.values():
            receiver.failed()
