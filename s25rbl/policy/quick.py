"""Clients' verdicts remembered by the listener, and requests answered before they are parsed:
those about a client s25rbl does not list.

A client's verdict is remembered by its ``client_address`` text, exactly as the MTA wrote it,
for as long as that verdict holds: until the lists change, and no longer than the reverse
lookup it came from stays cached. A listed client's next requests take their verdict from
here instead of running the lists and the rules again (``verdict``).

Every request about an unlisted client is answered DUNNO, whatever its stage (product §7). A
request about a client remembered as unlisted, read whole in one piece (as
Postfix writes them), is checked as the full path would check it (one request within
MAX_REQUEST, no empty attribute name, at most MAX_ATTRIBUTES lines, an
``smtpd_access_policy`` request, an instance of ordinary length) and answered at once,
counted as the full path counts it; any other request, and every request about any other
client, goes the full way. One check is left out, for its cost: a line without ``=`` in such
a request, which the full path would count as a malformed request, is not looked for (the
answer, DUNNO, is the same). The list entry that whitelisted the client is counted a hit
again, as a DNS answer kept whole is.

Bounded: at most MAX_CLIENTS clients (then it starts again), by keys of at most MAX_KEY bytes:
about 2 MiB.
"""

from __future__ import annotations

from collections.abc import Callable

from s25rbl.policy.protocol import MAX_ATTRIBUTES, MAX_INSTANCE, one_request, stage_of
from s25rbl.verdict.model import Code, Match, Verdict

MAX_CLIENTS = 8192
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

    __slots__ = ("_clients", "_hit", "_lists", "_monotonic", "_snapshot")

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
        self._clients: dict[bytes, tuple[float, Verdict]] = {}  # text -> (until, verdict)

    def __len__(self) -> int:
        return len(self._clients)

    def remember(self, raw: str, until: float | None, verdict: Verdict) -> None:
        """``raw`` (the request's ``client_address``) has ``verdict`` by the current lists until
        ``until`` (clock.monotonic() time; None: not to be reused)."""
        if until is None or len(raw) > MAX_KEY or not raw.isascii():
            return
        lists = self._lists()
        if lists is not self._snapshot:
            self._clients.clear()
            self._snapshot = lists
        elif len(self._clients) >= MAX_CLIENTS:
            self._clients.clear()  # bounded: start again rather than keep count of use
        self._clients[raw.encode()] = (until, verdict)

    def verdict(self, raw: str) -> Verdict | None:
        """The verdict remembered for ``raw``, if it still holds (its list entry counted a hit)."""
        found = self._find(raw.encode()) if self._clients else None
        if found is None:
            return None
        self._hit(found.match)
        return found

    def _find(self, raw: bytes) -> Verdict | None:
        clients = self._clients
        if self._lists() is not self._snapshot:
            clients.clear()
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
        if not self._clients or not data.endswith(b"\n\n"):
            return None
        raw = _value(data, _CLIENT)
        if raw is None:
            return None
        found = self._find(raw)
        if found is None or found.code is not Code.NOT_LISTED:
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
