"""Clients' verdicts remembered by the listener, and requests answered before they are parsed:
those about a client s25rbl does not list.

A client's verdict is remembered by its ``client_address`` text, exactly as the MTA wrote it,
for as long as that verdict holds: until the lists change, and no longer than the TTL of the
reverse lookup it came from (a lookup the cache let go early, for space, is still good until
then). A listed client's next requests take their verdict from here instead of running the
lists and the rules again (``verdict``).

Every request about an unlisted client is answered DUNNO, whatever its stage (product §7). A
request about a client remembered as unlisted, read whole in one piece (as
Postfix writes them), is checked as the full path would check it (one request within
MAX_REQUEST, no empty attribute name, at most MAX_ATTRIBUTES lines, an
``smtpd_access_policy`` request, an instance of ordinary length) and answered at once,
counted as the full path counts it; any other request, and every request about any other
client, goes the full way. One check is left out, for its cost: a line without ``=`` in such
a request, which the full path would count as a malformed request, is not looked for (the
answer, DUNNO, is the same). Either way, the list entry behind a remembered verdict (the one
that whitelisted or blacklisted the client) is counted a hit each time, as the engine counts
it, and as a DNS answer kept whole is.

Bounded: at most MAX_CLIENTS unlisted and MAX_LISTED listed clients, kept apart (a flood of
listed addresses, a botnet's or a no-PTR IPv6 /64's, cannot push the unlisted ones out), the
oldest eighth let go when either is full; keys of at most MAX_KEY bytes. Each holds its
verdict and the lookup behind it: ~3 MiB in all, at worst ~20 MiB if every lookup carried
many long names.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

from s25rbl.policy.protocol import MAX_ATTRIBUTES, MAX_INSTANCE, one_request, stage_of
from s25rbl.verdict.model import Code, Match, Verdict

MAX_CLIENTS = 8192  # unlisted clients
MAX_LISTED = 2048  # listed ones: their next requests come within a session or two
MAX_KEY = 64

_CLIENT = b"client_address="
_REQUEST = b"request="
_INSTANCE = b"instance="
_STAGE = b"protocol_state="


def _value(data: bytes, name: bytes) -> bytes | None:
    """The value of the last ``name`` line of a well-formed request (a later duplicate wins,
    as in the full path), or None."""
    at = data.rfind(b"\n" + name)
    if at >= 0:
        start = at + 1 + len(name)
    elif data.startswith(name):
        start = len(name)
    else:
        return None
    return data[start : data.index(b"\n", start)]


class KnownClients:
    """Clients' verdicts, and until when each holds."""

    __slots__ = ("_hit", "_listed", "_lists", "_monotonic", "_snapshot", "_unlisted")

    def __init__(
        self,
        lists: Callable[[], object],
        monotonic: Callable[[], float],
        hit: Callable[[Match | None], None],
    ) -> None:
        self._lists = lists
        self._snapshot = lists()
        self._monotonic = monotonic
        self._hit = hit
        # client_address text -> (until, verdict), oldest first
        self._unlisted: dict[bytes, tuple[float, Verdict]] = {}
        self._listed: dict[bytes, tuple[float, Verdict]] = {}

    def __len__(self) -> int:
        return len(self._unlisted) + len(self._listed)

    def remembered(self) -> list[bytes]:
        """The clients remembered (for tests)."""
        return [*self._unlisted, *self._listed]

    def remember(self, raw: str, until: float | None, verdict: Verdict) -> None:
        """``raw`` (the request's ``client_address``) has ``verdict`` by the current lists until
        ``until`` (clock.monotonic() time; None: not to be reused)."""
        if until is None or len(raw) > MAX_KEY or not raw.isascii():
            return
        if not self._current():
            self._snapshot = self._lists()
        if verdict.code is Code.NOT_LISTED:
            clients, limit = self._unlisted, MAX_CLIENTS
        else:
            clients, limit = self._listed, MAX_LISTED
        if len(clients) >= limit:  # bounded: the oldest eighth go
            for key in list(islice(clients, max(1, limit // 8))):
                del clients[key]
        clients[raw.encode()] = (until, verdict)

    def verdict(self, raw: str) -> Verdict | None:
        """The verdict remembered for ``raw``, if it still holds (its list entry counted a hit)."""
        key = raw.encode()
        found = self._find(self._unlisted, key) or self._find(self._listed, key)
        if found is None:
            return None
        self._hit(found.match)
        return found

    def _current(self) -> bool:
        """Whether the lists are those the verdicts were made by (if not, they are forgotten)."""
        if self._lists() is self._snapshot:
            return True
        self._unlisted.clear()
        self._listed.clear()
        return False

    def _find(self, clients: dict[bytes, tuple[float, Verdict]], raw: bytes) -> Verdict | None:
        if not clients or not self._current():
            return None
        found = clients.get(raw)
        if found is None:
            return None
        if found[0] <= self._monotonic():
            del clients[raw]
            return None
        return found[1]

    def stage(self, data: bytes) -> str | None:
        """The stage of ``data``, one whole request about a remembered client, to be answered
        DUNNO; None: it goes the full way."""
        if not self._unlisted or not data.endswith(b"\n\n"):
            return None
        raw = _value(data, _CLIENT)
        if raw is None:
            return None
        found = self._find(self._unlisted, raw)
        if found is None:
            return None
        # As the framer's one-request shortcut takes it; no empty name; at most MAX_ATTRIBUTES.
        if not one_request(data) or data[0] == 61 or b"\n=" in data:
            return None
        if data.count(b"\n") > MAX_ATTRIBUTES + 1:
            return None
        kind = _value(data, _REQUEST)
        if kind is not None and kind != b"smtpd_access_policy":
            return None
        instance = _value(data, _INSTANCE)
        if instance is not None and len(instance) > MAX_INSTANCE:
            return None
        self._hit(found.match)
        stage = _value(data, _STAGE)
        return "" if stage is None else stage_of(stage.decode("utf-8", "replace"))
