"""Signed-in sessions of the operator's page, and the limit on failed sign-ins; both in memory,
both bounded in count.

Sessions live in the process, not in the store: a session stands for an API token's authority,
and kept in memory nothing of it is ever written to disk or to a database other nodes (and
their backups) share; viewing a page writes nothing; ending the process ends every session.
The price is that a restart signs operators out and each node has its own sessions (point a
browser at one node, not at a round-robin of them), which suits a page a few people use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 1_000  # the oldest idle session gives way beyond this
MAX_FLASHES = 5  # messages waiting to be shown on the next page, per session


def _key(cookie: str) -> str:
    # Sessions are filed under a digest of the cookie: a lookup compares digests, not secrets.
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Session:
    """One signed-in browser: the token it signed in with (kept in memory only, so each
    request checks it again and a revoked token ends the session) and its CSRF token."""

    key: str
    token: str
    name: str
    csrf: str
    created: float
    seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        """A message for the next page (``kind``: ok or error)."""
        self.flashes = [*self.flashes[-(MAX_FLASHES - 1) :], (kind, text[:500])]

    def take_flashes(self) -> list[tuple[str, str]]:
        shown, self.flashes = self.flashes, []
        return shown

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


class Sessions:
    """Sessions by cookie, ended after ``idle`` seconds without a request or ``lifetime``
    seconds after sign-in, whichever comes first; at most ``limit`` at once."""

    def __init__(
        self,
        idle: float,
        lifetime: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        limit: int = MAX_SESSIONS,
    ) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._clock = clock
        self._limit = limit
        self._by_key: OrderedDict[str, Session] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._by_key)

    def create(self, token: str, name: str) -> tuple[str, Session]:
        """A new session: the cookie value to send, and the session."""
        cookie = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(_key(cookie), token, name, secrets.token_urlsafe(32), now, now)
        self._by_key[session.key] = session
        while len(self._by_key) > self._limit:
            self._by_key.popitem(last=False)
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """The live session of ``cookie``, marked as seen now; None if none or ended."""
        if not cookie or len(cookie) > 100:
            return None
        key = _key(cookie)
        session = self._by_key.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > self.idle or now - session.created > self.lifetime:
            del self._by_key[key]
            return None
        session.seen = now
        self._by_key.move_to_end(key)
        return session

    def end(self, session: Session) -> None:
        self._by_key.pop(session.key, None)

    def end_all(self, token: str) -> None:
        """End every session signed in with ``token`` (it was found revoked)."""
        for key in [k for k, s in self._by_key.items() if s.token == token]:
            del self._by_key[key]


class SignInLimiter:
    """Failed sign-ins: at most ``per_address`` per client address and ``overall`` from all
    addresses together within ``window`` seconds; beyond that sign-ins wait. Tokens carry 256
    random bits, so nobody guesses one: this keeps a flood of attempts from costing the store
    a read each and from filling the log."""

    def __init__(
        self,
        *,
        per_address: int = 5,
        overall: int = 60,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self.per_address = per_address
        self.window = window
        self._clock = clock
        self._max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._overall: deque[float] = deque(maxlen=overall)

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        now = self._clock()
        waits = [0.0]
        recent = self._failures.get(address)
        if recent is not None and len(recent) >= self.per_address:
            waits.append(recent[0] + self.window - now)
        if self._overall.maxlen is not None and len(self._overall) >= self._overall.maxlen:
            waits.append(self._overall[0] + self.window - now)
        return max(waits)

    def failed(self, address: str) -> None:
        now = self._clock()
        recent = self._failures.pop(address, None)
        if recent is None:
            recent = deque(maxlen=self.per_address)
        recent.append(now)
        self._failures[address] = recent  # most recent last
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)
        self._overall.append(now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
