"""Regexes filed by the suffix they require: the same answers as trying every regex, for less."""

from __future__ import annotations

import random

import pytest
import re2

from s25rbl.lists.values import MAX_REGEX_LENGTH, EntryKind, EntryRow, EntrySource, ListName
from s25rbl.verdict import regexes
from s25rbl.verdict.regexes import RegexIndex, suffix_key


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        (r"\.dyn\.example\.net$", ".dyn.example.net"),
        (r"^[a-z]+[0-9-]*\.dyn\.isp\.example\.com$", ".dyn.isp.example.com"),
        (r"-pool\.dyn\.example\.net$", ".dyn.example.net"),
        (r"\.DYN\.Example\.NET$", ".dyn.example.net"),  # the sets ignore case
        (r"\.example\.net\z", ".example.net"),
        (r"(pool|dyn)\.example\.net$", ".example.net"),  # alternation inside a group
        (r"\bexample\.net$", ".net"),  # a suffix starts at a dot
        (r"[0-9]+-[0-9]+\.broad\.example\.jp$", ".broad.example.jp"),
        (r"[.]example\.net$", ".net"),
        (r"^(?:host|mail)[0-9]*\.corp\.example$", ".corp.example"),
        (r"^(?P<n>[a-z]+)\.example\.org$", ".example.org"),
        (r"x{2,3}\.example\.net$", ".example.net"),
        (r"[[:alpha:]]\.example\.net$", ".example.net"),
        (r"[]x]\.example\.net$", ".example.net"),
        (r"\x2e\.example\.net$", ".example.net"),  # the escape's digits are dropped
        (r"\x2eexample\.net$", ".net"),
        (r"\056\.example\.net$", ".example.net"),
        (r"\.\d\.example\.net$", ".example.net"),  # \d is any digit, not a d
        (r"\\-mail\.example\.net$", ".example.net"),  # a literal backslash, then -mail
        (r"\\.mail\.example\.net$", ".example.net"),  # a literal backslash, then any character
        (r"\\\.example\.net$", ".example.net"),  # an escaped backslash, then \.
        (r"\.co?m$", None),  # o? is optional: only the m after it is required, no dot
        (r"\.com+$", None),  # the m is repeated
        (r"\.com{2}$", None),
        (r"\.com?$", None),
        (r"(\.com)$", None),
        (r"\.example\.net", None),  # not anchored at the end
        (r"\.example\.net\$", None),  # an escaped dollar is a literal
        (r"\.example\.net\\$", None),  # a literal backslash last
        (r"foo|\.example\.net$", None),  # the first alternative matches anywhere
        (r"(a)|\.example\.net$", None),
        (r"[|]\.example\.net$", ".example.net"),  # a bar in a class is no alternative
        (r"(?m)\.example\.net$", None),  # flags may change what $ means
        (r"(?i)\.example\.net$", None),
        (r"\Q.example.net\E$", None),
        (r"\Qx\.example\.net$", None),  # quoted to the end: that $ is a literal
        (r"\.example\.net.$", None),  # any character last
        (r"\.net\\", None),
        (r"$", None),
        ("", None),
    ],
)
def test_suffix_key(pattern: str, key: str | None) -> None:
    assert suffix_key(pattern) == key


def rows(patterns: list[str]) -> list[EntryRow]:
    return [
        EntryRow(i + 1, ListName.BLACK, EntryKind.REGEX, p, EntrySource.MANUAL)
        for i, p in enumerate(patterns)
    ]


def brute_force(patterns: list[str], name: str) -> int | None:
    """The lowest id whose regex matches ``name``, trying every regex with RE2 itself."""
    options = re2.Options()
    options.case_sensitive = False
    for i, pattern in enumerate(patterns):
        if re2.compile(pattern, options).search(name) is not None:
            return i + 1
    return None


TRICKY = [
    r"\.dyn\.example\.net$",
    r"^mail[0-9]*\.example\.net$",
    r"foo|\.static\.example\.net$",
    r"(pool|dyn)[0-9]+\.example\.org$",
    r"\bexample\.org$",
    r"[.]isp\.example$",
    r"\.co?m$",
    r"\.ne+t$",
    r"(?i)^DHCP-",
    r"[0-9]+-[0-9]+-[0-9]+\.",
    r"\.example\.net\z",
    r"ppp\.",
    r"^[a-z]+\.dyn\.example\.net$",
    r"\.EXAMPLE\.COM$",
    r"\x2e\.sub\.example\.com$",
    r"\.\d\.example\.net$",
    r"[|]\.example\.org$",
    r"(a)|\.isp\.example$",
    r"x{2}\.example\.com$",
    r"\.sub\.example\.com$",
]
LABELS = ["dyn", "static", "example", "net", "org", "com", "isp", "sub", "mail7", "pool3", "dhcp-1",
          "1-2-3", "7", "ppp", "xx", "foo", "ne", "neet", "co", "cm", "host"]  # fmt: skip


def test_finds_the_same_lowest_id_as_trying_every_regex() -> None:
    rng = random.Random(5782)
    names = {"mail1.example.net", "a.dyn.example.net", "foo", "example.org", "xexample.org", "x.cm"}
    while len(names) < 3000:
        names.add(".".join(rng.choice(LABELS) for _ in range(rng.randint(1, 5))))
    for patterns in (TRICKY, list(reversed(TRICKY)), rng.sample(TRICKY, len(TRICKY))):
        index = RegexIndex()
        assert index.build(rows(patterns)) == []
        for name in sorted(names):
            for asked in (name, name.upper()):
                found = index.find(asked)
                assert (found.id if found else None) == brute_force(patterns, asked), (patterns, asked)


def test_regexes_naming_their_network_are_not_tried_on_every_name() -> None:
    patterns = [rf"^[a-z]+{i}[0-9-]*\.dyn\.isp{i % 97}\.example\.com$" for i in range(2000)]
    index = RegexIndex()
    index.build(rows([*patterns, r"^dhcp-[0-9]+\."]))
    assert index.unfiled == 1  # only the one without a suffix
    assert index.sets == 98
    found = index.find("host1234.dyn.isp70.example.com")
    assert found is not None and found.id == 1235
    assert index.find("host1234.dyn.isp71.example.com") is None
    found = index.find("dhcp-7.dyn.isp70.example.com")
    assert found is not None and found.id == 2001


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (r"(\.example\.net$", "missing )"),
        (r"(a{100}){100}\.example\.net$", "invalid repetition size"),
        (r"x*", "matches the empty string"),
        (r"(?:)\.example\.net$|", "matches the empty string"),
        ("a" * (MAX_REGEX_LENGTH + 1), "1 to 512 characters"),
        ("", "1 to 512 characters"),
    ],
)
def test_a_bad_row_is_refused_alone(bad: str, why: str) -> None:
    index = RegexIndex()
    patterns = [r"\.dyn\.example\.net$", bad, r"^mail\.example\.net$", r"\.pool\.example\.net$"]
    refused = index.build(rows(patterns))
    assert [(row.id, why in reason) for row, reason in refused] == [(2, True)]
    assert len(index) == 3
    assert index.find("mail.example.org") is None  # x* would have matched every name
    assert [getattr(index.find(n), "id", None) for n in ("a.dyn.example.net", "mail.example.net")] == [1, 3]
    assert getattr(index.find("b.pool.example.net"), "id", None) == 4


def test_an_empty_index_finds_nothing() -> None:
    index = RegexIndex()
    assert index.build([]) == []
    assert index.find("anything.example") is None
    assert len(index) == 0 and index.sets == 0


@pytest.mark.parametrize(("budget", "too_heavy"), [(1 << 16, set()), (1 << 14, {2, 3, 4, 5, 6, 7})])
def test_a_set_over_its_budget_is_split_until_only_what_cannot_fit_is_refused(
    monkeypatch: pytest.MonkeyPatch, budget: int, too_heavy: set[int]
) -> None:
    # Under a small budget the set of all these fails; halves of it build (64 KiB), or each
    # heavy regex fails even alone (16 KiB) and is refused alone: the light ones always stay.
    monkeypatch.setattr(regexes, "SET_MEMORY", budget)
    heavy = r"[a-z]{20}[0-9]{20}[a-z]{20}\.example\.net$"
    patterns = [r"\.dyn\.example\.net$", *[heavy.replace("[a-z]", f"x{i}[a-z]", 1) for i in range(6)]]
    patterns += [r"^mail\.example\.net$", r"(\.example\.net$"]
    index = RegexIndex()
    refused = dict((row.id, why) for row, why in index.build(rows(patterns)))
    assert set(refused) == {9, *too_heavy}
    assert "missing )" in refused[9]  # the broken one, for its own reason
    assert all("memory budget" in refused[i] for i in too_heavy)
    assert getattr(index.find("a.dyn.example.net"), "id", None) == 1
    assert getattr(index.find("mail.example.net"), "id", None) == 8
    assert len(index) + len(refused) == len(patterns)


def test_a_name_that_is_not_ascii_is_tried_against_every_set() -> None:
    # RE2 folds U+017F (long s) to s, str.lower() does not: the suffix probe alone would miss.
    index = RegexIndex()
    index.build(rows([r"\.spam\.example$"]))
    assert getattr(index.find("x.\u017fpam.example"), "id", None) == 1
    assert getattr(index.find("x.spam.example"), "id", None) == 1
