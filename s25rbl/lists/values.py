"""What a list entry may be: its list, kind and source, and the validation and canonical form
of IPs, networks, names, regexes, reasons and expiry times.

Shared by the store, the list formats, the CLI, the API and the in-memory indexes, so that every
path refuses the same bad input with the same message.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import re2

from s25rbl.errors import InvalidEntry
from s25rbl.lists.breadth import broad_match
from s25rbl.lists.domains import is_public_suffix

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ListName(enum.StrEnum):
    """The two lists an entry can be on."""

    WHITE = "white"
    BLACK = "black"


class EntryKind(enum.StrEnum):
    """What an entry's value is, and so how it matches."""

    IP = "ip"
    CIDR = "cidr"
    HOSTNAME = "hostname"
    DOMAIN = "domain"
    REGEX = "regex"
    RULE = "rule"  # an operator-added S25R-style rule: a listing pattern at step 8


class EntrySource(enum.StrEnum):
    """Where an entry came from."""

    MANUAL = "manual"
    IMPORTED = "imported"
    BUILTIN = "builtin"
    LEARNED = "learned"


MIN_PREFIX = {4: 8, 6: 16}  # wider networks are almost certainly a typo
MAX_REGEX_LENGTH = 512
MAX_REASON_LENGTH = 255
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def parse_ip(text: str, field: str = "value") -> IPAddress:
    """An IPv4 or IPv6 address; ``::ffff:a.b.c.d`` becomes the IPv4 address."""
    if "%" in text:
        raise InvalidEntry(field, f"{text!r}: a scoped (link-local) address is not a client address")
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidEntry(field, f"{text!r} is not an IPv4 or IPv6 address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_address_literal(text: str) -> IPAddress | None:
    """An address where a name should be, as written in a HELO or a hostname-zone query:
    ``192.0.2.1``, ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (any case); None otherwise."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    if not inner or not (inner[0].isdigit() or ":" in inner):
        return None
    try:
        return ipaddress.ip_address(inner)
    except ValueError:
        return None


def parse_network(text: str, field: str = "value") -> IPNetwork:
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidEntry(field, f"{text!r} is not a network in CIDR notation (e.g. 192.0.2.0/24)") from None
    if (
        isinstance(net, ipaddress.IPv6Network)
        and net.network_address.ipv4_mapped is not None
        and net.prefixlen >= 96
    ):
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    if net.prefixlen < MIN_PREFIX[net.version]:
        raise InvalidEntry(
            field,
            f"{text!r}: a /{net.prefixlen} is too wide; the widest allowed is /{MIN_PREFIX[net.version]}",
        )
    return net


def parse_hostname(text: str, field: str = "value") -> str:
    """A DNS name, lower-case, without trailing dot (or leading dot, for domains)."""
    name = text.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if name.startswith("."):
        name = name[1:]
    if not name:
        raise InvalidEntry(field, "a host or domain name may not be empty")
    if len(name) > 253:
        raise InvalidEntry(field, f"{text[:40]!r}...: longer than 253 octets")
    for label in name.split("."):
        if not _HOST_LABEL.fullmatch(label):
            raise InvalidEntry(field, f"{text!r}: {label!r} is not a valid DNS label")
    return name


def parse_domain(text: str, field: str = "value") -> str:
    """A domain entry's name: a host name that is not a public suffix (``com``, ``jp``,
    ``co.jp``: anyone may register under it, so an entry for it would list a whole country or
    the world). Checked when an entry is written; entries already stored still load."""
    name = parse_hostname(text, field)
    if is_public_suffix(name):
        raise InvalidEntry(
            field,
            f"{name!r} is a public suffix (a top-level domain, or one like co.jp under which anyone "
            "may register): the entry would list every domain under it; give a domain someone "
            "owns (e.g. example.co.jp)",
        )
    return name


def re2_options(max_mem: int) -> Any:
    """How every operator regex is compiled: case-insensitive, quiet, memory bounded."""
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = max_mem
    return options


def compile_regex(pattern: str, field: str = "value") -> Any:
    """Compile an operator regex with RE2 (linear time: no catastrophic backtracking)."""
    if not pattern:
        raise InvalidEntry(field, "a regex may not be empty")
    if len(pattern) > MAX_REGEX_LENGTH:
        raise InvalidEntry(field, f"regex longer than {MAX_REGEX_LENGTH} characters")
    try:
        compiled = re2.compile(pattern, re2_options(1 << 20))  # a 1 MiB automaton is plenty
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InvalidEntry(
            field, f"regex {pattern!r} refused: {detail} (RE2 syntax; no backreferences or lookaround)"
        ) from None
    if compiled.search("") is not None:
        raise InvalidEntry(field, f"regex {pattern!r} matches the empty string, so it would match every name")
    return compiled


def canonical_value(kind: EntryKind, value: str, field: str = "value") -> str:
    """The stored form of ``value``: what duplicates are compared on."""
    if not isinstance(value, str):
        raise InvalidEntry(field, "must be a string")
    match kind:
        case EntryKind.IP:
            return str(parse_ip(value, field))
        case EntryKind.CIDR:
            return str(parse_network(value, field))
        case EntryKind.HOSTNAME:
            return parse_hostname(value, field)
        case EntryKind.DOMAIN:
            return parse_domain(value, field)
        case EntryKind.REGEX | EntryKind.RULE:
            compile_regex(value, field)
            why = broad_match(re2.compile(value.encode(), re2_options(1 << 20)))
            if why is not None:
                raise InvalidEntry(field, f"regex {value!r} refused: it {why}")
            return value
    raise InvalidEntry("kind", f"unknown kind {kind!r}")


def check_reason(reason: str, field: str = "reason") -> str:
    if not isinstance(reason, str):
        raise InvalidEntry(field, "must be a string")
    reason = reason.strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidEntry(field, f"longer than {MAX_REASON_LENGTH} characters")
    if any(ord(c) < 32 for c in reason):
        raise InvalidEntry(field, "control characters are not allowed")
    return reason


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_expiry(value: str, field: str, now: datetime) -> datetime:
    """When an entry expires: a lifetime (``30d``, ``12h``), or an ISO 8601 date (a whole day,
    read as UTC) or date-time with its time zone (without one it is ambiguous: refused).
    Must lie in the future."""
    when = _parse_when(value, field, now, 1)
    if when <= now:
        raise InvalidEntry(field, f"{value!r} is in the past; it must be in the future")
    return when


def parse_since(value: str, field: str, now: datetime) -> datetime:
    """Where a look back starts: an age (``24h``, ``7d``: that long ago), or an ISO 8601 date
    (from its start, UTC) or date-time with its time zone."""
    return _parse_when(value, field, now, -1)


def _parse_when(value: str, field: str, now: datetime, direction: int) -> datetime:
    text = value.strip()
    if text[:-1].isdigit() and text[-1:] in _DURATION_UNITS:
        try:
            return now + direction * timedelta(seconds=int(text[:-1]) * _DURATION_UNITS[text[-1]])
        except OverflowError:
            raise InvalidEntry(field, f"{value!r} is out of range") from None
    span = "a lifetime (30d, 12h)" if direction > 0 else "an age (24h, 7d)"
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            when = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEntry(field, f"{value!r} is not {span} or an ISO 8601 date or date-time") from None
    if when.tzinfo is None:
        raise InvalidEntry(field, "needs a time zone, e.g. 2027-01-01T00:00:00Z")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise InvalidEntry(field, f"{value!r} is out of range") from None


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """A validated entry to be written: what every input path (CLI, import, API) produces."""

    list: ListName
    kind: EntryKind
    value: str
    reason: str = ""

    @classmethod
    def build(cls, list_: str, kind: str, value: str, reason: str = "") -> EntrySpec:
        try:
            list_name = ListName(list_)
        except ValueError:
            raise InvalidEntry("list", f"{list_!r}: use white or black") from None
        try:
            entry_kind = EntryKind(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in EntryKind)
            raise InvalidEntry("kind", f"{kind!r}: use one of {kinds}") from None
        if entry_kind is EntryKind.RULE and list_name is not ListName.BLACK:
            raise InvalidEntry("kind", "an S25R rule lists names; it belongs to the black list")
        return cls(list_name, entry_kind, canonical_value(entry_kind, value), check_reason(reason))


def guess_kind(value: str) -> EntryKind:
    """The kind of a bare value as an operator would type it: IP, CIDR or domain."""
    text = value.strip()
    if "/" in text:
        return EntryKind.CIDR
    try:
        ipaddress.ip_address(text)
        return EntryKind.IP
    except ValueError:
        return EntryKind.DOMAIN


@dataclass(frozen=True, slots=True)
class EntryRow:
    """The columns of an entry the indexes need (no ORM object held in memory)."""

    id: int
    list: ListName
    kind: EntryKind
    value: str
    source: EntrySource
    expires_at: datetime | None = None
