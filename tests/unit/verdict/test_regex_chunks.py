"""Regex entries are compiled in chunks: big lists build, and the lowest id still wins."""

from __future__ import annotations

import pytest

from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.verdict import regexes
from s25rbl.verdict.lists import ListIndex


def regex_rows(count: int) -> list[EntryRow]:
    return [
        EntryRow(i + 1, ListName.BLACK, EntryKind.REGEX, rf"^host{i}\.dyn\.example\.net$", EntrySource.MANUAL)
        for i in range(count)
    ] + [EntryRow(count + 1, ListName.BLACK, EntryKind.REGEX, r"\.dyn\.example\.net$", EntrySource.MANUAL)]


def test_regexes_beyond_one_set_build_and_match_in_id_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(regexes, "SET_SIZE", 7)
    index = ListIndex.build(regex_rows(30))
    assert index.black_names.regexes.sets == 5
    match = index.black_name(["host22.dyn.example.net"])
    assert match is not None and match.entry_id == 23  # not the catch-all (id 31) in a later set
    match = index.black_name(["other.dyn.example.net"])
    assert match is not None and match.entry_id == 31
    assert index.black_name(["mail.example.org"]) is None


def test_twenty_thousand_regexes_build() -> None:
    index = ListIndex.build(regex_rows(20_000))
    match = index.black_name(["host19999.dyn.example.net"])
    assert match is not None and match.entry_id == 20_000
