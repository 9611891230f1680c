"""One address's reverse lookup with forward confirmation, driven by callbacks: the PTR
lookup, then the A/AAAA lookup of each name, then the result; ``rdns`` runs them.

Each step is started from the callback of the one before (with the stub resolver: from the
answer's datagram), and the verdict deadline is an entry in a shared timer (``timers``), so
a fresh verdict needs no task, future or timer handle of its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass

from s25rbl.clock import Clock
from s25rbl.lists.values import IPAddress
from s25rbl.resolve.codec import AAAA, PTR, A, LookupResult, LookupStatus, Resolver, reverse_name
from s25rbl.resolve.timers import Timers

_TEMPORARY = (LookupStatus.SERVFAIL, LookupStatus.TIMEOUT)

Answer = Callable[["LookupResult | Exception"], None]


@dataclass(frozen=True, slots=True)
class RdnsResult:
    """The reverse lookup of one address: PTR names and which of them are forward-confirmed."""

    names: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()
    tempfail: bool = False
    notes: tuple[str, ...] = ()
    ttl: int = 0

    def size(self) -> int:
        """Roughly what this result holds in memory, in bytes (its tuples and strings)."""
        strings = {id(text): text for part in (self.names, self.confirmed, self.notes) for text in part}
        tuples = sum(sys.getsizeof(part) for part in (self.names, self.confirmed, self.notes) if part)
        return tuples + sum(sys.getsizeof(text) for text in strings.values())


@dataclass(slots=True)
class LookupStats:
    """How reverse lookups ended, counted since start."""

    fresh: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    tempfail: int = 0
    overload: int = 0
    deadline: int = 0


class Asker:
    """A resolver's lookups as callbacks: the stub resolver's own ``ask`` and ``cancel``, or
    any ``Resolver``'s coroutine run as a task (the unit tests' dict resolver)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._ask = getattr(resolver, "ask", None)
        self._cancel = getattr(resolver, "cancel", None)

    def ask(self, name: str, rdtype: int, done: Answer) -> object:
        """Start a lookup; ``done`` gets its result, or the exception it raised (a
        ValueError for a name that cannot be asked: raised here, or given to ``done``)."""
        if self._ask is not None:
            return self._ask(name, rdtype, done)
        task = asyncio.get_running_loop().create_task(self.resolver.lookup(name, rdtype))
        task.add_done_callback(lambda task: _hand_on(task, done))
        return task

    def cancel(self, handle: object, done: Answer) -> None:
        if isinstance(handle, asyncio.Task):
            handle.cancel()
        elif handle is not None and self._cancel is not None:
            self._cancel(handle, done)


def _hand_on(task: asyncio.Task[LookupResult], done: Answer) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    done(task.result() if exc is None else typing.cast(Exception, exc))


def reverse_of(ip: IPAddress) -> str:
    if ip.version == 4:
        b = ip.packed
        return f"{b[3]}.{b[2]}.{b[1]}.{b[0]}.in-addr.arpa"
    return reverse_name(ip)


class Job:
    """The lookup of one address; ``finish(job, result, keep)`` is called once with its
    result and whether it may be cached, unless ``abort`` comes first."""

    def __init__(
        self,
        ip: IPAddress,
        asker: Asker,
        stats: LookupStats,
        clock: Clock,
        deadline: float,
        max_names: int,
        failure: Callable[[LookupResult], str],
        finish: Callable[[Job, RdnsResult, bool], None],
    ) -> None:
        self.ip = ip
        self._asker = asker
        self._stats = stats
        self._clock = clock
        self._deadline = deadline
        self._max_names = max_names
        self._failure = failure
        self._finish = finish
        self.start = clock.monotonic()
        self.done = False
        self._asked: list[tuple[object, Answer]] = []
        self._names: tuple[str, ...] = ()
        self._notes: list[str] = []
        self._forward: list[LookupResult | None] = []
        self._left = 0
        self._ttl = 0
        self.outcome = ""  # how it ended, for the latency histogram
        self.error: Exception | None = None  # a bug's exception, for whoever waits

    # --- the deadline (a Timers owner) ------------------------------------------------------

    def live(self, token: int) -> bool:
        return not self.done

    def expired(self, token: int) -> None:
        if self.done:
            return
        self._stats.deadline += 1
        self._stats.tempfail += 1
        elapsed = self._clock.monotonic() - self.start
        note = f"deadline of {self._deadline:g} s passed after {elapsed:.2f} s"
        self._end(RdnsResult(tempfail=True, notes=(note,)), True, "deadline")

    def arm(self, timers: Timers) -> None:
        timers.add(self._deadline, self, 0)

    # --- the steps ---------------------------------------------------------------------------

    def run(self) -> None:
        """The PTR lookup first (the job holds a lookup slot now)."""
        if self.done:
            return
        self._stats.fresh += 1
        try:
            self._ask(reverse_of(self.ip), PTR, self._ptr)
        except ValueError as exc:
            self._end(RdnsResult(notes=(f"PTR lookup impossible: {exc}",)), True)

    def _ask(self, name: str, rdtype: int, done: Answer) -> None:
        self._asked.append((self._asker.ask(name, rdtype, done), done))

    def _ptr(self, ptr: LookupResult | Exception) -> None:
        if self.done:
            return
        try:
            if isinstance(ptr, ValueError):
                self._end(RdnsResult(notes=(f"PTR lookup impossible: {ptr}",)), True)
                return
            if isinstance(ptr, Exception):
                raise ptr
            self._asked.clear()
            if ptr.status in _TEMPORARY:
                self._stats.tempfail += 1
                self._end(RdnsResult(tempfail=True, notes=(f"PTR lookup: {self._failure(ptr)}",)), True)
                return
            if ptr.status is not LookupStatus.OK or not ptr.values:
                self._end(RdnsResult(notes=(f"PTR lookup: {ptr.status.value}",), ttl=ptr.ttl), True)
                return
            names = tuple(dict.fromkeys(n.lower().rstrip(".") for n in ptr.values if n.strip(".")))
            if len(names) > self._max_names:
                self._notes.append(f"{len(names)} PTR names; only the first {self._max_names} were checked")
                names = names[: self._max_names]
            self._names, self._ttl = names, ptr.ttl
            self._forward = [None] * len(names)
            self._left = len(names)
            rdtype = A if self.ip.version == 4 else AAAA
            for i, name in enumerate(names):
                try:
                    self._ask(name, rdtype, _Forward(self, i))
                except ValueError:
                    self._left -= 1  # not a name that can be looked up: stays None
            if not self._left and not self.done:  # (every answer may already be in)
                self._confirm()
        except Exception as exc:
            self._crash(exc)

    def forward(self, i: int, result: LookupResult | Exception) -> None:
        if self.done:
            return
        if isinstance(result, Exception) and not isinstance(result, ValueError):
            self._crash(result)
            return
        if isinstance(result, LookupResult):
            self._forward[i] = result
        self._left -= 1
        if not self._left:
            try:
                self._confirm()
            except Exception as exc:
                self._crash(exc)

    def _confirm(self) -> None:
        ip, notes = self.ip, self._notes
        confirmed: list[str] = []
        ttl = self._ttl
        temporary = False
        text = socket.inet_ntoa(ip.packed) if ip.version == 4 else str(ip)
        for name, result in zip(self._names, self._forward, strict=True):
            if result is None:
                notes.append(f"{name}: not a name that can be looked up")
                continue
            if result.status in _TEMPORARY:
                temporary = True
                notes.append(f"{name}: forward lookup {self._failure(result)}")
                continue
            ttl = min(ttl, result.ttl)
            if result.status is LookupStatus.OK and (text in result.values or _contains(result, ip)):
                confirmed.append(name)
            else:
                notes.append(f"{name}: forward lookup does not give {ip} ({result.status.value})")
        self._asked.clear()
        if temporary and not confirmed:
            self._stats.tempfail += 1
            self._end(RdnsResult(names=self._names, tempfail=True, notes=tuple(notes)), True)
            return
        self._end(
            RdnsResult(names=self._names, confirmed=tuple(confirmed), notes=tuple(notes), ttl=ttl), True
        )

    # --- the end -------------------------------------------------------------------------------

    def abort(self) -> None:
        """Nobody wants the result any more: stop, without calling ``finish``."""
        if not self.done:
            self.done = True
            self._let_go()

    def _let_go(self) -> None:
        asked, self._asked = self._asked, []
        for handle, done in asked:
            self._asker.cancel(handle, done)

    def _end(self, result: RdnsResult, keep: bool, outcome: str | None = None) -> None:
        self.done = True
        self._let_go()
        self.outcome = outcome or (
            "tempfail" if result.tempfail else "confirmed" if result.confirmed else "unconfirmed"
        )
        self._finish(self, result, keep)

    def _crash(self, exc: Exception) -> None:
        self.done = True
        self._let_go()
        self.error = exc
        self._finish(self, RdnsResult(tempfail=True), False)


class _Forward:
    """The callback of one name's forward lookup."""

    __slots__ = ("i", "job")

    def __init__(self, job: Job, i: int) -> None:
        self.job = job
        self.i = i

    def __call__(self, result: LookupResult | Exception) -> None:
        self.job.forward(self.i, result)


def _contains(result: LookupResult, ip: IPAddress) -> bool:
    for value in result.values:
        try:
            if ipaddress.ip_address(value) == ip:
                return True
        except ValueError:
            continue
    return False
