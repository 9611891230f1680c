"""The zones we are authoritative for, and what a name under them means.

``d.c.b.a.<zone>`` and 32 reversed nibbles are addresses; shorter runs of valid labels are
empty non-terminals (QNAME-minimising resolvers ask for them); anything else is malformed.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from s25rbl.lists.values import IPAddress


class ZoneKind(enum.Enum):
    """What a zone answers about: addresses (block or white list) or hostnames."""

    BLOCKLIST = "blocklist"
    WHITELIST = "whitelist"
    HOSTNAME = "hostname"


@dataclass(frozen=True, slots=True)
class Zone:
    """One zone we are authoritative for."""

    name: str
    kind: ZoneKind
    labels: tuple[bytes, ...]  # lower-case wire labels, for suffix matching


class Partial:
    """An empty non-terminal: a prefix of some address name."""


class Malformed:
    """Under the zone, but no address name can ever be here."""


PARTIAL = Partial()
MALFORMED = Malformed()

_NIBBLES = frozenset(b"0123456789abcdef")
_OCTETS = {str(n).encode(): n for n in range(256)}


class ZoneTable:
    """The configured zones, found by suffix."""

    def __init__(self, zones: list[tuple[str, ZoneKind]]) -> None:
        self.zones = [Zone(name, kind, tuple(name.encode().split(b"."))) for name, kind in zones]

    def find(self, labels: list[bytes]) -> tuple[Zone, list[bytes]] | None:
        """The zone holding a name (labels lower-cased here) and the labels left of the apex."""
        lowered = [label.lower() for label in labels]
        for zone in self.zones:
            n = len(zone.labels)
            if len(lowered) >= n and tuple(lowered[len(lowered) - n :]) == zone.labels:
                return zone, lowered[: len(lowered) - n]
        return None


def parse_reversed(labels: list[bytes]) -> IPAddress | Partial | Malformed:
    """The address named by reversed labels (lower-case), or PARTIAL, or MALFORMED."""
    count = len(labels)
    if count <= 4 and all(label in _OCTETS for label in labels):
        if count < 4:
            return PARTIAL
        a, b, c, d = (_OCTETS[label] for label in reversed(labels))
        return ipaddress.IPv4Address((a << 24) | (b << 16) | (c << 8) | d)
    if count <= 32 and all(len(label) == 1 and label[0] in _NIBBLES for label in labels):
        if count < 32:
            return PARTIAL
        value = int(b"".join(reversed(labels)), 16)
        v6 = ipaddress.IPv6Address(value)
        return v6.ipv4_mapped or v6
    return MALFORMED


_LDH = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_[]:")


def relative_name(labels: list[bytes]) -> str | None:
    """The hostname asked under the hostname zone (lower-case), or None if no hostname can
    be spelled so (bytes outside letters, digits, hyphen, underscore; or an address literal's
    brackets and colons, which the verdict recognises)."""
    for label in labels:
        if not _LDH.issuperset(label):
            return None
    return b".".join(labels).decode("ascii")
