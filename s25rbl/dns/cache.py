"""Whole answers kept by question: a repeated question is answered by copying bytes.

The key is the request without its ID, with the question *name* lower-cased (names compare
case-insensitively) and every other octet verbatim: flags, counts, type, class and the EDNS
OPT record (so the payload size, version and DO bit are part of it), plus the transport. Two
requests with one key differ at most in the case of their question name, and get the same
answer but for the ID and the echoed question, which a hit copies from the request: the
client's own spelling comes back byte for byte (DNS 0x20).

The value is the reply minus ID and question, kept as a shared *template* (its 10 header
octets, the records after the question, and the counter to bump on a hit: few distinct ones
exist, since a record's owner is a pointer into the question, by offset only), when the
answer stops being valid, and the list entry to count a hit for. Values that do not carry
an expiry of their own are shared too, so most entries cost their key and a dict slot.

Validity: every answer is built from one list snapshot; when ``lists()`` returns another
object the whole cache is dropped (list changes are rare, answers rebuild in microseconds).
An answer built from a cached reverse lookup carries that lookup's expiry. Only NOERROR and
NXDOMAIN answers to well-formed, single-question queries are stored: never an error.
Size is bounded; when full, the oldest eighth is dropped (insertion order), which costs far
less memory per entry than an LRU's links.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
INF = float("inf")  # "valid until the lists change"; one shared object

CountKey = tuple[str, str, str]
Template = tuple[bytes, bytes, CountKey]  # header (flags + counts), records after the question
Entry = tuple[Template, float, int | None]  # template, expiry, the list entry that decided

_TCP = b"\xff"  # keys of TCP requests start with this; a UDP key starts with a query's flags
_SIMPLE_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # qdcount 1, no answer or authority records
_MAX_SHARED = 4096


class AnswerCache:
    """Whole answers by question, dropped when the lists change (see the module docstring)."""

    def __init__(
        self,
        max_entries: int,
        lists: Callable[[], object],
        monotonic: Callable[[], float],
        counts: Counter[CountKey],
        hit_entry: Callable[[int], None],
    ) -> None:
        if max_entries < 1:
            raise ValueError("an answer cache needs room for at least one entry")
        self.max_entries = max_entries
        self._lists = lists
        self._snapshot = lists()
        self._monotonic = monotonic
        self._counts = counts
        self._hit_entry = hit_entry
        self._entries: dict[bytes, Entry] = {}
        self._templates: dict[Template, Template] = {}
        self._values: dict[Entry, Entry] = {}
        self.hits = 0
        self.misses = 0
        self.expired = 0
        self.evicted = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, data: bytes, tcp: bool) -> bytes | None:
        """The stored reply to this request with its ID and question, or None."""
        end = data.find(0, 12)  # the root label ending the question name
        if end < 0:
            return None
        key = data[2:end].lower() + data[end:]
        if tcp:
            key = _TCP + key
        lists = self._lists()
        if lists is not self._snapshot:
            self.clear(lists)
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        (header, rest, count), expires, entry_id = entry
        if expires is not INF and expires <= self._monotonic():
            del self._entries[key]
            self.expired += 1
            return None
        self.hits += 1
        self._counts[count] += 1
        if entry_id is not None:
            self._hit_entry(entry_id)
        return data[:2] + header + data[12 : end + 5] + rest

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
        # Only plain queries: opcode 0, one question, no answer/authority records, at most
        # one additional (the OPT). Those header octets are then all below 0x41, so two
        # requests with one key are equal there; the second flags octet may differ in bit
        # 0x20 (AD), which no reply depends on.
        if data[4:10] != _SIMPLE_COUNTS or data[10] != 0 or data[11] > 1 or data[2] & 0xF8:
            return False
        end = data.find(0, 12)
        qend = end + 5
        # The first zero octet must really end the name (a label may hold a zero octet),
        # and the reply must echo exactly that question.
        if end < 0 or qend - 12 != question_length or reply[12:qend] != data[12:qend]:
            return False
        if reply[3] & 0x0F not in (0, 3) or reply[2] & 0x02:  # NOERROR/NXDOMAIN, not truncated
            return False
        if len(self._entries) >= self.max_entries:
            self._evict()
        key = data[2:end].lower() + data[end:]
        if tcp:
            key = _TCP + key
        template = _shared(self._templates, (reply[2:12], reply[qend:], count))
        if expires == INF:
            self._entries[key] = _shared(self._values, (template, INF, entry_id))
        else:
            self._entries[key] = (template, expires, entry_id)
        return True

    def clear(self, lists: object | None = None) -> None:
        """Forget every answer; ``lists`` (default: the current ones) is what new ones use."""
        self._entries = {}
        self._templates = {}
        self._values = {}
        self._snapshot = self._lists() if lists is None else lists
        self.invalidations += 1

    def _evict(self) -> None:
        drop = max(1, self.max_entries // 8)
        for key in list(islice(self._entries, drop)):
            del self._entries[key]
        self.evicted += drop


def _shared(table: dict[T, T], item: T) -> T:
    """One object for equal items (interning); the table stays small (few distinct exist)."""
    known = table.get(item)
    if known is not None:
        return known
    if len(table) >= _MAX_SHARED:  # e.g. one value per blacklisted IP: sharing stops paying
        table.clear()
    table[item] = item
    return item
