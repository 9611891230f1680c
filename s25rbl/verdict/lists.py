"""In-memory indexes of the lists: one immutable snapshot, swapped whole when the lists change.

Lookup cost does not grow with the number of entries: addresses and networks are found by
probing one hash table per prefix length present, names by walking their labels, regexes
through RE2 sets filed by the name suffix they require (``regexes.py``; only regexes that
name no suffix cost more per lookup as they grow beyond one set: see bench/scaling.py).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from s25rbl.errors import InvalidEntry
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, IPAddress, ListName
from s25rbl.verdict.model import Match
from s25rbl.verdict.regexes import RegexIndex
from s25rbl.verdict.s25r import first_general_rule

log = logging.getLogger(__name__)


class AddressIndex:
    """Addresses and networks of one family: {prefix length: {network as int: entry}}."""

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._by_prefix: dict[int, dict[int, EntryRow]] = {}
        self._prefixes: tuple[int, ...] = ()

    def add(self, network: int, prefixlen: int, row: EntryRow) -> None:
        table = self._by_prefix.setdefault(prefixlen, {})
        table.setdefault(network, row)  # the first (lowest id) entry wins, deterministically
        # Most specific first, so a /32 whitelist hole inside a /24 is reported as the match.
        self._prefixes = tuple(sorted(self._by_prefix, reverse=True))

    def find(self, address: int) -> EntryRow | None:
        bits = self._bits
        for prefixlen in self._prefixes:
            row = self._by_prefix[prefixlen].get(address >> (bits - prefixlen) << (bits - prefixlen))
            if row is not None:
                return row
        return None

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_prefix.values())


class NameIndex:
    """Exact hostnames, domain suffixes and regexes of one list."""

    def __init__(self) -> None:
        self.hostnames: dict[str, EntryRow] = {}
        self.domains: dict[str, EntryRow] = {}
        self.regexes = RegexIndex()

    def find(self, name: str) -> tuple[EntryRow, str] | None:
        """The entry matching ``name`` (lower-case, no trailing dot): exact, suffix, then regex."""
        row = self.hostnames.get(name)
        if row is not None:
            return row, name
        if self.domains:
            suffix = name
            while True:
                row = self.domains.get(suffix)
                if row is not None:
                    return row, name
                dot = suffix.find(".")
                if dot < 0:
                    break
                suffix = suffix[dot + 1 :]
        row = self.regexes.find(name)
        return None if row is None else (row, name)

    def __len__(self) -> int:
        return len(self.hostnames) + len(self.domains) + len(self.regexes)


class RuleIndex:
    """The six general rules (``s25r``, verbatim) then operator rules (RE2)."""

    def __init__(self) -> None:
        self._operator = RegexIndex()

    def build(self, operator_rules: list[EntryRow]) -> list[tuple[EntryRow, str]]:
        return self._operator.build(operator_rules)

    def match(self, name: str) -> tuple[str, str, EntryRow | None] | None:
        """The first rule matching a normalised name: (label, pattern, operator row or None)."""
        general = first_general_rule(name)
        if general is not None:
            return general[0], general[1], None
        row = self._operator.find(name)
        if row is not None:
            return f"rule{row.id}", row.value, row
        return None


@dataclass(slots=True)
class ListIndex:
    """One consistent snapshot of every list, as of ``version``."""

    version: int = 0
    white_v4: AddressIndex = field(default_factory=lambda: AddressIndex(32))
    white_v6: AddressIndex = field(default_factory=lambda: AddressIndex(128))
    black_v4: AddressIndex = field(default_factory=lambda: AddressIndex(32))
    black_v6: AddressIndex = field(default_factory=lambda: AddressIndex(128))
    learned: dict[IPAddress, EntryRow] = field(default_factory=dict)
    white_names: NameIndex = field(default_factory=NameIndex)
    black_names: NameIndex = field(default_factory=NameIndex)
    rules: RuleIndex = field(default_factory=RuleIndex)
    next_expiry: datetime | None = None
    skipped: int = 0

    @classmethod
    def build(cls, rows: Iterable[EntryRow], version: int = 0) -> ListIndex:
        index = cls(version=version)
        regexes: dict[ListName, list[EntryRow]] = {ListName.WHITE: [], ListName.BLACK: []}
        rules: list[EntryRow] = []
        for row in rows:
            try:
                index._add(row, regexes, rules)
            except (InvalidEntry, ValueError) as exc:
                # A bad row (edited by hand in the database, say) is a warning, not an outage.
                index.skipped += 1
                log.warning(
                    "list entry %s (%s %s %r) skipped: %s", row.id, row.list, row.kind, row.value, exc
                )
                continue
            if row.expires_at is not None and (
                index.next_expiry is None or row.expires_at < index.next_expiry
            ):
                index.next_expiry = row.expires_at
        # Regexes are checked as their RE2 sets are built, not one compile per row first.
        refused = index.white_names.regexes.build(regexes[ListName.WHITE])
        refused += index.black_names.regexes.build(regexes[ListName.BLACK])
        refused += index.rules.build(rules)
        for row, why in refused:
            index.skipped += 1
            log.warning("list entry %s (%s %s %r) skipped: %s", row.id, row.list, row.kind, row.value, why)
        return index

    def _add(self, row: EntryRow, regexes: dict[ListName, list[EntryRow]], rules: list[EntryRow]) -> None:
        white = row.list is ListName.WHITE
        if row.kind in (EntryKind.IP, EntryKind.CIDR):
            net = ipaddress.ip_network(row.value, strict=False)
            if white and row.source is EntrySource.LEARNED and net.num_addresses == 1:
                self.learned.setdefault(net.network_address, row)
                return
            if net.version == 4:
                target = self.white_v4 if white else self.black_v4
            else:
                target = self.white_v6 if white else self.black_v6
            target.add(int(net.network_address), net.prefixlen, row)
        elif row.kind is EntryKind.HOSTNAME:
            (self.white_names if white else self.black_names).hostnames.setdefault(row.value, row)
        elif row.kind is EntryKind.DOMAIN:
            (self.white_names if white else self.black_names).domains.setdefault(row.value, row)
        elif row.kind is EntryKind.REGEX:
            regexes[row.list].append(row)
        elif row.kind is EntryKind.RULE:
            rules.append(row)

    # --- lookups used by the pipeline; each returns the deciding Match or None -------------

    # The matched text (str(ip)) is only built for a hit: most lookups find nothing.

    def white_address(self, ip: IPAddress) -> Match | None:
        row = (self.white_v4 if ip.version == 4 else self.white_v6).find(int(ip))
        return None if row is None else to_match(row, str(ip))

    def black_address(self, ip: IPAddress) -> Match | None:
        row = (self.black_v4 if ip.version == 4 else self.black_v6).find(int(ip))
        return None if row is None else to_match(row, str(ip))

    def learned_address(self, ip: IPAddress) -> Match | None:
        if not self.learned:
            return None
        row = self.learned.get(ip)
        return None if row is None else to_match(row, str(ip))

    def white_name(self, names: Iterable[str]) -> Match | None:
        return _first_name(self.white_names, names)

    def black_name(self, names: Iterable[str]) -> Match | None:
        return _first_name(self.black_names, names)

    def sizes(self) -> dict[str, int]:
        return {
            "white_address": len(self.white_v4) + len(self.white_v6),
            "black_address": len(self.black_v4) + len(self.black_v6),
            "learned": len(self.learned),
            "white_name": len(self.white_names),
            "black_name": len(self.black_names),
        }


def to_match(row: EntryRow | None, matched: str) -> Match | None:
    if row is None:
        return None
    return Match(row.id, row.list, row.kind, row.value, matched)


def _first_name(index: NameIndex, names: Iterable[str]) -> Match | None:
    for name in names:
        found = index.find(name)
        if found is not None:
            return to_match(found[0], found[1])
    return None
