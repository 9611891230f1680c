"""Operator regexes of one list, matched through RE2 sets filed by the suffix they require.

Most operator regexes name the network they are about at the end:
``^[a-z]+[0-9-]*\\.dyn\\.isp\\.example\\.com$``. Such a regex can only match names that end in
its literal tail (``.dyn.isp.example.com``), so it is filed under that tail from its first
dot and tried only on names that have the suffix: a name costs one dict probe per label, plus
the sets filed under its own suffixes. That keeps the cost per name flat however many
networks the list covers. Regexes without such a tail (``^dhcp-``, alternations at the top
level, ``(?m)``...) go into general sets tried on every name.

Each set holds at most ``SET_SIZE`` patterns: RE2 refuses to compile one set of ~20,000 or
more, and a refused build must not stop a list reload.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import re2

from s25rbl.errors import InvalidEntry
from s25rbl.lists.values import MAX_REGEX_LENGTH, EntryRow, compile_regex, re2_options

log = logging.getLogger(__name__)

SET_SIZE = 5_000  # patterns per RE2 set
SET_MEMORY = 64 << 20  # RE2 memory budget per set (program and DFA cache)

# Name characters and escaped . - _ running up to a $ or \z that ends the pattern.
_TAIL = re.compile(r"(?:\\[.\-_]|[A-Za-z0-9_-])+(?=(?:\$|\\z)\Z)")
_FLAG_GROUP = re.compile(r"\(\?(?!:|P<)")  # (?i) (?m) (?s:...): flags may change what $ means


def _escaped(pattern: str, at: int) -> bool:
    """Whether ``pattern[at]`` follows an odd run of backslashes (is escaped)."""
    run = 0
    while at - run > 0 and pattern[at - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def _top_level_bar(pattern: str) -> bool:
    """Whether ``pattern`` has an alternation outside every group (or is not read safely)."""
    depth = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # skip a class: a ']' right after '[' or '[^' is literal; [:alpha:] nests
            i += 2 if pattern.startswith("[^", i) else 1
            if i < n and pattern[i] == "]":
                i += 1
            while i < n and pattern[i] != "]":
                if pattern[i] == "\\":
                    i += 1
                elif pattern.startswith("[:", i):
                    end = pattern.find(":]", i + 2)
                    if end < 0:
                        return True
                    i = end + 1
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth <= 0:
            return True
        i += 1
    return False


def suffix_key(pattern: str) -> str | None:
    """The name suffix, from a dot, that every match of ``pattern`` ends with, lower-case;
    None if the pattern does not end with such literal text anchored by ``$`` or ``\\z``.
    ``^[a-z]+[0-9]*\\.dyn\\.example\\.net$`` → ``.dyn.example.net``.

    What is taken is the run of name characters and escaped ``.``, ``-``, ``_`` right before
    the anchor, up to anything else (a quantifier, a class, a group, an escape like ``\\d``):
    each character taken is followed by another taken or by the anchor, so none is optional.
    What was taken before its first dot is dropped: it may be the arguments of an escape that
    stopped the reading (``\\x2e``, ``\\123``, ``\\pN``), and a name suffix starts at a dot.
    """
    if "\\Q" in pattern or _FLAG_GROUP.search(pattern) or ("|" in pattern and _top_level_bar(pattern)):
        return None
    tail = _TAIL.search(pattern)
    if tail is None:
        return None
    start = tail.start()
    if _escaped(pattern, start):
        # The run began inside an escape: \d... (skip the d), or \\. read as \. (a literal
        # backslash, then '.' which is any character: skip both).
        start += 2 if pattern.startswith("\\.", start) else 1
    text = pattern[start : tail.end()].replace("\\", "").lower()
    dot = text.find(".")
    return text[dot:] if dot >= 0 else None


Chunk = tuple[list[EntryRow], Any]  # rows in id order, and their compiled RE2 set


class RegexIndex:
    """The regexes of one list: ``find(name)`` is the lowest-id regex that matches."""

    def __init__(self) -> None:
        self._general: list[Chunk] = []
        self._by_suffix: dict[str, list[Chunk]] = {}
        self._count = 0

    def build(self, rows: Iterable[EntryRow]) -> list[tuple[EntryRow, str]]:
        """Index ``rows``; returns the rows refused, with why (the rest are indexed)."""
        groups: dict[str | None, list[EntryRow]] = {}
        refused: list[tuple[EntryRow, str]] = []
        for row in sorted(rows, key=lambda r: r.id):
            if not row.value or len(row.value) > MAX_REGEX_LENGTH:
                refused.append((row, f"a regex must be 1 to {MAX_REGEX_LENGTH} characters"))
                continue
            groups.setdefault(suffix_key(row.value), []).append(row)
        for key, members in groups.items():
            chunks = self._general if key is None else self._by_suffix.setdefault(key, [])
            for start in range(0, len(members), SET_SIZE):
                for chunk in _compile(members[start : start + SET_SIZE], refused):
                    chunks.append(chunk)
                    self._count += len(chunk[0])
        return refused

    def find(self, name: str) -> EntryRow | None:
        best: EntryRow | None = None
        if self._by_suffix and not name.isascii():
            # RE2 folds case beyond what str.lower() does (U+017F matches s): try every set.
            # DNS names reach here in ASCII; this keeps the index right for any other caller.
            for filed in self._by_suffix.values():
                best = _first(filed, name, best)
        elif self._by_suffix:
            lower = name.lower()  # the sets ignore case; the suffix keys are lower-case
            dot = lower.find(".")
            while dot >= 0:
                chunks = self._by_suffix.get(lower[dot:])
                if chunks is not None:
                    best = _first(chunks, name, best)
                dot = lower.find(".", dot + 1)
        if self._general:
            best = _first(self._general, name, best)
        return best

    def __len__(self) -> int:
        return self._count

    @property
    def sets(self) -> int:
        """How many RE2 sets were built."""
        return len(self._general) + sum(len(c) for c in self._by_suffix.values())

    @property
    def unfiled(self) -> int:
        """How many regexes name no suffix, and so are tried on every name."""
        return sum(len(rows) for rows, _ in self._general)


def _first(chunks: list[Chunk], name: str, best: EntryRow | None) -> EntryRow | None:
    """The lower-id of ``best`` and the first hit among ``chunks`` (chunks are in id order)."""
    for rows, regex_set in chunks:
        hits = regex_set.Match(name)
        if hits:
            row = rows[min(hits)]
            return row if best is None or row.id < best.id else best
    return best


def _compile(rows: list[EntryRow], refused: list[tuple[EntryRow, str]]) -> list[Chunk]:
    """RE2 sets of ``rows``, in id order: one set unless it fails to build.

    Rows were validated when written, so a good list pays for no per-row compile. A row that
    is not valid any more (edited in the database by hand, say), or a set over its memory
    budget, makes the set fail: it is then split in halves, again and again, so that only
    the rows that cannot be compiled are refused, each with its reason.
    """
    if not rows:
        return []
    regex_set = _try_set(rows)
    if regex_set is None:
        if len(rows) == 1:
            (row,) = rows
            try:
                compile_regex(row.value)
            except InvalidEntry as exc:
                refused.append((row, exc.problem))
            else:
                refused.append((row, "RE2 cannot compile it within a set's memory budget"))
            return []
        half = len(rows) // 2
        return _compile(rows[:half], refused) + _compile(rows[half:], refused)
    empty = regex_set.Match("")
    if empty:  # a regex matching the empty string would match every name
        drop = {rows[i].id for i in empty}
        refused.extend((r, "matches the empty string") for r in rows if r.id in drop)
        return _compile([r for r in rows if r.id not in drop], refused)
    return [(rows, regex_set)]


def _try_set(rows: list[EntryRow]) -> Any | None:
    if not rows:
        return None
    regex_set = re2.Set.SearchSet(re2_options(SET_MEMORY))
    try:
        for row in rows:
            regex_set.Add(row.value)
        regex_set.Compile()
    except re2.error:
        return None
    return regex_set
