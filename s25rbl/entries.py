"""What a list entry may be: validation and canonical form of IPs, networks, names and regexes.

Shared by the store, the importers, the CLI and the in-memory indexes, so that every path
refuses the same bad input with the same message.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import re2

from s25rbl.errors import InvalidEntry
from s25rbl.store.models import EntryKind, EntrySource, ListName

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def compile_regex(pattern: str, field: str = "value") -> Any:
    """Compile an operator regex with RE2 (linear time: no catastrophic backtracking)."""
    if not pattern:
        raise InvalidEntry(field, "a regex may not be empty")
    if len(pattern) > MAX_REGEX_LENGTH:
        raise InvalidEntry(field, f"regex longer than {MAX_REGEX_LENGTH} characters")
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = 1 << 20  # bounds the compiled program: a 1 MiB automaton is plenty
    try:
        compiled = re2.compile(pattern, options)
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
        case EntryKind.HOSTNAME | EntryKind.DOMAIN:
            return parse_hostname(value, field)
        case EntryKind.REGEX | EntryKind.RULE:
            compile_regex(value, field)
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
