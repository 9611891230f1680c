"""Whole answers kept by question: a repeated question is answered by copying bytes.

The key is made of the request's parsed fields, read straight from its bytes: the flags, the
question with its *name* lower-cased (names compare case-insensitively), type and class, and
of an OPT record the payload size and the DO bit; plus the transport. Only a plain query
has a key: one question, no answer or authority records, at most one additional record (an
OPT right after the question, version 0, its options well formed), and not one octet after
it. Anything else (trailing octets, an OPT elsewhere, odd flags) is parsed and answered in
full, never stored, so padding and EDNS options cannot make new keys. Two requests with one
key get the same answer but for the ID and the echoed question, which a hit copies from the
request: the client's own spelling comes back byte for byte (DNS 0x20).

The value is the reply minus ID and question, kept as a shared *template* (its 10 header
octets, the records after the question, and the counter to bump on a hit: few distinct ones
exist, since a record's owner is a pointer into the question, by offset only), when the
answer stops being valid, and the list entry to count a hit for. Values that do not carry
an expiry of their own are shared too, so most entries cost their key and a dict slot.

Validity: every answer is built from one list snapshot; when ``lists()`` returns another
object the whole cache is dropped (list changes are rare, answers rebuild in microseconds).
An answer built from a cached reverse lookup carries that lookup's expiry. Only NOERROR and
NXDOMAIN answers to well-formed, single-question queries are stored: never an error.

Size is bounded in bytes (and optionally in entries): every key, slot, value and template is
counted as it is added; when full, the oldest eighth is dropped (insertion order), which
costs far less memory per entry than an LRU's links.

The C loop of ``s25rbl.dns.fast`` reads the entries too (``entries``), for UDP hits answered
without Python; the hits it counts are added here by ``drain``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from s25rbl.clock import SystemClock

T = TypeVar("T")
INF = float("inf")  # "valid until the lists change"; one shared object

CountKey = tuple[str, str, str]
Template = tuple[bytes, bytes, CountKey]  # header (flags + counts), records after the question
Entry = tuple[Template, float, int | None]  # template, expiry, the list entry that decided

_TCP = b"\xff"  # keys of TCP requests start with this; a UDP key starts with a query's flags
_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # qdcount 1, no other records
_WITH_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # qdcount 1, one additional record
_OPT_HEAD = b"\x00\x00\x29"  # an OPT record's root owner and type
_MAX_SHARED = 4096

# What an entry costs besides its key and template, in bytes (CPython 3.11, 64-bit): a dict
# slot with its share of the index (up to ~100 bytes just after the table doubled), and a
# value tuple with its float expiry when it is not shared. Checked against tracemalloc by
# the tests.
SLOT_BYTES = 104
VALUE_BYTES = sys.getsizeof((None, None, None)) + sys.getsizeof(1.5)
_TEMPLATE_BYTES = sys.getsizeof((None, None, None)) + sys.getsizeof(b"") * 2
_INT_BYTES = sys.getsizeof(2**40)


def request_key(data: bytes) -> tuple[bytes, int] | None:
    """The cache key of a query that may be stored, and where its question ends; None for
    anything else, which is then answered in full and never stored.

    A plain query (no additional record) or one with an OPT record of no options is its own
    key, ID aside and name lower-cased; an OPT record's options are left out of the key (the
    same request without them). Only RD, AD and CD may be set among the flags, and only DO in
    the OPT record; its version and extended rcode are 0. ``AnswerCache.answer`` builds the
    same key with fewer checks: a request that fails these never has an entry to find.
    """
    end = data.find(0, 12)  # the root label ending the question name, if the name is valid
    if end < 0 or data[2] & 0xFE or data[3] & 0xCF:  # QR, opcode, AA, TC; RA, Z, rcode
        return None
    qend = end + 5
    size = len(data)
    if size == qend:
        return (data[2:end].lower() + data[end:], qend) if data[4:12] == _PLAIN else None
    if (
        size < qend + 11
        or data[4:12] != _WITH_OPT
        or data[qend : qend + 3] != _OPT_HEAD
        or data[qend + 5 : qend + 7] != b"\x00\x00"  # extended rcode, version
        or data[qend + 7] & 0x7F  # flags other than DO
        or data[qend + 8]
    ):
        return None
    key = _options_key(data, end, qend) if size > qend + 11 else data[2:end].lower() + data[end:]
    return None if key is None else (key, qend)


def _options_key(data: bytes, end: int, qend: int) -> bytes | None:
    """The key of a query with options in an OPT record right after the question: the same
    request's without them; None unless the options fill the record exactly and nothing
    follows it. (The counts and the OPT record's header are part of the key: a request
    whose header is not what ``request_key`` accepts has no entry to find.)"""
    size = len(data)
    option = qend + 11
    if size != option + ((data[qend + 9] << 8) | data[qend + 10]):
        return None
    while option + 4 <= size:
        option += 4 + ((data[option + 2] << 8) | data[option + 3])
    if option != size:
        return None
    return data[2:end].lower() + data[end : qend + 9] + b"\x00\x00"


class AnswerCache:
    """Whole answers by question, dropped when the lists change (see the module docstring)."""

    def __init__(
        self,
        max_bytes: int,
        lists: Callable[[], object],
        monotonic: Callable[[], float],
        counts: Counter[CountKey],
        hit_entry: Callable[[int], None],
        max_entries: int | None = None,
        hit_tables: Callable[[], tuple[dict[int, int], dict[int, float]]] | None = None,
    ) -> None:
        if max_bytes < 4096 or (max_entries is not None and max_entries < 1):
            raise ValueError("an answer cache needs room for at least one entry (4096 bytes)")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0  # what the entries, and the shared templates and values, cost now
        self._shared_bytes = 0  # the shared ones' part of it
        self._lists = lists
        self._snapshot = lists()
        self._monotonic = monotonic
        self._counts = counts
        self._hit_entry = hit_entry
        self._entries: dict[bytes, Entry] = {}
        self._templates: dict[Template, Template] = {}
        self._values: dict[Entry, Entry] = {}
        self._count_keys: dict[CountKey, CountKey] = {}
        self._hit_tables = hit_tables
        self._c_hits: Any = None  # what the C loop counted (s25rbl.dns._fastpath.Hits)
        self.hits = 0
        self.misses = 0
        self.expired = 0
        self.evicted = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, data: bytes, tcp: bool) -> bytes | None:
        """The stored reply to this request with its ID and question, or None."""
        lists = self._lists()
        if lists is not self._snapshot:
            self.clear(lists)
            return None
        entries = self._entries
        # Most questions come with a lower-case name and no EDNS options: then the request
        # past its ID is its key as it is. (A stored key's name is lower-case and ends at its
        # first zero octet, so a request equal to it past the ID has that key too.)
        # (QR, opcode, AA or TC set: never stored, and past the ID such a request could
        # spell a TCP key, whose first octet is 0xff.)
        entry = entries.get(data[2:]) if not tcp and data[2:3] < b"\x02" else None
        if entry is not None:
            key = None
        else:
            key = self._key(data, tcp)
            entry = None if key is None else entries.get(key)
            if entry is None:
                if key is not None:
                    self.misses += 1
                return None
        (header, rest, count), expires, entry_id = entry
        if expires is not INF and expires <= self._monotonic():
            self._drop(data[2:] if key is None else key)
            self.expired += 1
            return None
        self.hits += 1
        self._counts[count] += 1
        if entry_id is not None:
            self._hit_entry(entry_id)
        return b"".join((data[:2], header, data[12 : data.find(0, 12) + 5], rest))

    @staticmethod
    def _key(data: bytes, tcp: bool) -> bytes | None:
        """The key to look for: ``request_key``'s with fewer checks (a key is found only if
        a request equal to this one in every keyed octet was stored, and only requests that
        passed request_key's checks are); None if none can be."""
        end = data.find(0, 12)
        if end < 0 or data[2] & 0xFE:
            return None
        qend = end + 5
        if len(data) <= qend + 11:  # a plain query, or an OPT record without options
            key = data[2:end].lower() + data[end:]
        else:
            with_options = _options_key(data, end, qend)
            if with_options is None:
                return None
            key = with_options
        return _TCP + key if tcp else key

    def store(
        self,
        data: bytes,
        tcp: bool,
        reply: bytes,
        *,
        question_length: int,
        lists: object,
        expires: float,
        count: CountKey,
        entry_id: int | None,
    ) -> bool:
        """Keep ``reply`` to ``data``, built from the snapshot ``lists``; False if not kept."""
        if lists is not self._snapshot or lists is not self._lists():
            return False  # built from lists that are no longer current
        if expires is not INF and expires <= self._monotonic():
            return False
        found = request_key(data)
        if found is None:
            return False
        key, qend = found
        # The first zero octet must really end the name (a label may hold a zero octet),
        # and the reply must echo exactly that question.
        if qend - 12 != question_length or reply[12:qend] != data[12:qend]:
            return False
        if reply[3] & 0x0F not in (0, 3) or reply[2] & 0x02:  # NOERROR/NXDOMAIN, not truncated
            return False
        if tcp:
            key = _TCP + key
        if key in self._entries:
            self._drop(key)
        shared_count = self._count_keys.get(count) or self._intern_count(count)
        if shared_count is None:
            return False
        template = self._shared(self._templates, (reply[2:12], reply[qend:], shared_count), _template_bytes)
        value: Entry = (template, expires, entry_id)
        if expires == INF:
            value = self._shared(self._values, value, self._value_bytes)
        cost = self._cost(key, value)
        if self.bytes + cost > self.max_bytes or (
            self.max_entries is not None and len(self._entries) >= self.max_entries
        ):
            self._evict(cost)
            if self.bytes + cost > self.max_bytes:
                return False  # the shared templates and values fill it: nothing evictable left
        self._entries[key] = value
        self.bytes += cost
        return True

    def clear(self, lists: object | None = None) -> None:
        """Forget every answer; ``lists`` (default: the current ones) is what new ones use."""
        self._entries = {}
        self._templates = {}
        self._values = {}
        self._count_keys = {}
        self.bytes = 0
        self._shared_bytes = 0
        self._snapshot = self._lists() if lists is None else lists
        self.invalidations += 1

    # --- for the C loop (s25rbl.dns.fast) --------------------------------------------------

    @property
    def entries(self) -> dict[bytes, Entry]:
        """The entries by key (a new dict after each ``clear``): for reading only."""
        return self._entries

    def attach(self, make: Callable[[], Any]) -> Any:
        """Where the C loop is to count its hits (a ``_fastpath.Hits``, made by ``make`` the
        first time); None if it must not answer from here: a clock other than the system's
        (expiry is checked against CLOCK_MONOTONIC), or no way to add entry hits."""
        if self._hit_tables is None or not _system_monotonic(self._monotonic):
            return None
        if self._c_hits is None:
            self._c_hits = make()
        return self._c_hits

    def current(self) -> None:
        """Drop everything if the lists changed: ``answer`` does so on each call, the C loop
        once per batch."""
        lists = self._lists()
        if lists is not self._snapshot:
            self.clear(lists)

    def drain(self) -> None:
        """Add the hits the C loop counted to the counters here."""
        if self._c_hits is None:
            return
        assert self._hit_tables is not None
        counts, total = self._c_hits.drain(*self._hit_tables())
        tally = self._counts
        for count, number in counts:
            tally[count] += number
        self.hits += total

    # --- accounting ----------------------------------------------------------------------

    def _cost(self, key: bytes, value: Entry) -> int:
        """What one entry costs beyond what is shared: key, slot, and its value and template
        unless they are the shared ones (counted once, when they were first kept)."""
        cost = sys.getsizeof(key) + SLOT_BYTES
        if self._values.get(value) is not value:
            cost += self._value_bytes(value)
        return cost

    def _value_bytes(self, value: Entry) -> int:
        template, _expires, entry_id = value
        cost = VALUE_BYTES if entry_id is None else VALUE_BYTES + _INT_BYTES
        if self._templates.get(template) is template:
            return cost
        return cost + _template_bytes(template)

    def _drop(self, key: bytes) -> None:
        self.bytes -= self._cost(key, self._entries.pop(key))

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until an eighth of the room is free and ``room`` fits."""
        target = min(self.max_bytes - room, self.max_bytes - self.max_bytes // 8)
        limit = None if self.max_entries is None else self.max_entries - max(1, self.max_entries // 8)
        dropped = 0
        freed = 0
        keys: list[bytes] = []
        for key, value in self._entries.items():
            if self.bytes - freed <= target and (limit is None or len(self._entries) - dropped <= limit):
                break
            keys.append(key)
            freed += self._cost(key, value)
            dropped += 1
        for key in keys:
            del self._entries[key]
        self.bytes -= freed
        self.evicted += dropped

    def _shared(self, table: dict[T, T], item: T, size: Callable[[T], int]) -> T:
        """One object for equal items (interning), counted once; the table stays small (few
        distinct exist) and stops taking new items at _MAX_SHARED or an eighth of the bytes."""
        known = table.get(item)
        if known is not None:
            return known
        cost = size(item) + SLOT_BYTES
        if len(table) < _MAX_SHARED and self._shared_bytes + cost <= self.max_bytes // 8:
            table[item] = item
            self.bytes += cost
            self._shared_bytes += cost
        return item

    def _intern_count(self, count: CountKey) -> CountKey | None:
        # Counter keys: a few dozen exist (zone kind x result x step); a bound all the same.
        if len(self._count_keys) >= _MAX_SHARED:
            return None
        self._count_keys[count] = count
        self.bytes += sys.getsizeof(count) + sum(sys.getsizeof(part) for part in count) + SLOT_BYTES
        return count


def _system_monotonic(clock: Callable[[], float]) -> bool:
    """Whether ``clock`` reads ``time.monotonic`` (CLOCK_MONOTONIC, what the C loop reads)."""
    return clock is time.monotonic or getattr(clock, "__func__", None) is SystemClock.monotonic


def _template_bytes(template: Template) -> int:
    return _TEMPLATE_BYTES + len(template[0]) + len(template[1])
