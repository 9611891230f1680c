"""Entry validation: every input path refuses the same bad values with a message naming them."""

from __future__ import annotations

import pytest

from s25rbl.errors import InvalidEntry
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, EntrySpec, ListName
from s25rbl.verdict.lists import ListIndex


@pytest.mark.parametrize(
    ("kind", "value", "canonical"),
    [
        ("ip", " 192.0.2.1 ", "192.0.2.1"),
        ("ip", "2001:DB8:0::1", "2001:db8::1"),
        ("ip", "::ffff:192.0.2.1", "192.0.2.1"),
        ("cidr", "192.0.2.7/24", "192.0.2.0/24"),
        ("cidr", "2001:db8::/32", "2001:db8::/32"),
        ("hostname", "MAIL.Example.ORG.", "mail.example.org"),
        ("domain", ".hotmail.com", "hotmail.com"),
        ("regex", r"\.dip\.t-dialin\.net$", r"\.dip\.t-dialin\.net$"),
    ],
    ids=[
        "ip",
        "ipv6-compressed",
        "mapped-v4",
        "cidr-host-bits",
        "cidr6",
        "hostname-case-dot",
        "domain-leading-dot",
        "regex",
    ],
)
def test_values_are_stored_in_canonical_form(kind: str, value: str, canonical: str) -> None:
    assert EntrySpec.build("black", kind, value).value == canonical


@pytest.mark.parametrize(
    ("list_", "kind", "value", "reason", "field", "says"),
    [
        ("grey", "ip", "192.0.2.1", "", "list", "white or black"),
        ("white", "asn", "64496", "", "kind", "one of"),
        ("white", "ip", "192.0.2.256", "", "value", "not an IPv4 or IPv6 address"),
        ("white", "ip", "192.0.2.0/24", "", "value", "not an IPv4"),
        ("white", "cidr", "0.0.0.0/0", "", "value", "too wide"),
        ("white", "cidr", "2000::/3", "", "value", "too wide"),
        ("white", "cidr", "192.0.2.0/33", "", "value", "CIDR"),
        ("white", "hostname", "exa mple.com", "", "value", "not a valid DNS label"),
        ("white", "hostname", "a\n.example.com", "", "value", "not a valid DNS label"),
        ("white", "ip", "fe80::1%eth0", "", "value", "scoped"),
        ("white", "domain", "-bad-.com", "", "value", "not a valid DNS label"),
        ("white", "domain", "a" * 64 + ".com", "", "value", "not a valid DNS label"),
        ("white", "domain", ("a" * 60 + ".") * 5, "", "value", "longer than 253"),
        ("white", "regex", "(a)\\1", "", "value", "backreferences"),
        ("white", "regex", "(?=a)b", "", "value", "refused"),
        ("white", "regex", "(", "", "value", "refused"),
        ("white", "regex", ".*", "", "value", "empty string"),
        ("white", "regex", "x" * 600, "", "value", "longer than 512"),
        ("white", "regex", "(x+x+)+y{1000}{1000}", "", "value", "refused"),
        ("white", "rule", "^dyn[0-9]", "", "kind", "black list"),
        ("white", "ip", "192.0.2.1", "r" * 300, "reason", "longer than 255"),
        ("white", "ip", "192.0.2.1", "line\nbreak", "reason", "control characters"),
    ],
    ids=[
        "list",
        "kind",
        "bad-ip",
        "cidr-as-ip",
        "cidr-everything",
        "cidr6-too-wide",
        "prefix-33",
        "space-in-name",
        "newline-in-label",
        "scoped-ip",
        "hyphen-edges",
        "label-64",
        "name-254",
        "backreference",
        "lookahead",
        "unbalanced",
        "matches-all",
        "too-long",
        "huge-repetition",
        "rule-on-whitelist",
        "reason-long",
        "reason-control",
    ],
)
def test_bad_entries_are_refused_naming_field_and_problem(
    list_: str, kind: str, value: str, reason: str, field: str, says: str
) -> None:
    with pytest.raises(InvalidEntry) as info:
        EntrySpec.build(list_, kind, value, reason)
    assert info.value.field == field
    assert says in str(info.value)


def test_catastrophic_backtracking_pattern_is_safe_under_re2() -> None:
    # (a+)+$ backtracks exponentially in a backtracking engine; RE2 runs it in linear time,
    # so it is accepted and stays fast against a hostile name.
    spec = EntrySpec.build("black", "regex", "(a+)+$")
    assert spec.kind is EntryKind.REGEX
    idx = ListIndex.build([EntryRow(1, ListName.BLACK, EntryKind.REGEX, spec.value, EntrySource.MANUAL)])
    assert idx.black_name(["a" * 5000 + "!"]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", "2026-11-30T12:00:00+00:00"),
        ("7d", "2026-11-24T12:00:00+00:00"),
        ("2026-11-01", "2026-11-01T00:00:00+00:00"),
        ("2026-11-01T09:30:00+09:00", "2026-11-01T00:30:00+00:00"),
    ],
)
def test_since_is_an_age_or_an_iso_time(text: str, expected: str) -> None:
    from datetime import UTC, datetime

    from s25rbl.lists.values import parse_since

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since(text, "--since", now).isoformat() == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-11-01T00:00:00", "99999999999999999999d"])
def test_a_bad_since_names_its_field(text: str) -> None:
    from datetime import UTC, datetime

    from s25rbl.lists.values import parse_since

    with pytest.raises(InvalidEntry) as info:
        parse_since(text, "--since", datetime(2026, 12, 1, tzinfo=UTC))
    assert info.value.field == "--since"
