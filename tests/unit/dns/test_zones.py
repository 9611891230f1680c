"""Which names under a zone are addresses, empty non-terminals or malformed (product §3)."""

from __future__ import annotations

import ipaddress

import pytest

from s25rbl.dns.zones import MALFORMED, PARTIAL, ZoneKind, ZoneTable, parse_reversed


def labels(name: str) -> list[bytes]:
    return [label.encode() for label in name.split(".")] if name else []


def nibbles(address: str) -> str:
    return ".".join(reversed(ipaddress.IPv6Address(address).exploded.replace(":", "")))


CASES = [
    ("2.0.0.127", ipaddress.IPv4Address("127.0.0.2")),
    ("7.113.0.203", ipaddress.IPv4Address("203.0.113.7")),
    ("0.0.0.0", ipaddress.IPv4Address("0.0.0.0")),
    ("255.255.255.255", ipaddress.IPv4Address("255.255.255.255")),
    ("1", PARTIAL),
    ("2.1", PARTIAL),
    ("3.2.1", PARTIAL),
    ("1.2.3.4.5", PARTIAL),  # a run of nibbles: a prefix of an IPv6 name
    ("a.b", PARTIAL),
    (nibbles("2001:db8::1"), ipaddress.IPv6Address("2001:db8::1")),
    (nibbles("::ffff:127.0.0.2"), ipaddress.IPv4Address("127.0.0.2")),
    (nibbles("2001:db8::1") + ".0", MALFORMED),  # 33 nibbles
    ("256.0.0.1", MALFORMED),
    ("01.0.0.127", MALFORMED),  # leading zero: not how anyone writes a reversed octet
    ("-1.0.0.127", MALFORMED),
    ("x.0.0.127", MALFORMED),
    ("www", MALFORMED),
    ("10.0.0.127.1", MALFORMED),
    ("ab.0.0.0", MALFORMED),
]


@pytest.mark.parametrize(("relative", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_reversed_labels_name_an_address_a_prefix_or_nothing(relative: str, expected: object) -> None:
    result = parse_reversed(labels(relative))
    if expected is PARTIAL or expected is MALFORMED:
        assert result is expected
    else:
        assert result == expected


def test_upper_case_nibbles_are_the_same_address() -> None:
    table = ZoneTable([("bl.example", ZoneKind.BLOCKLIST)])
    found = table.find(labels(nibbles("2001:db8::abcd").upper() + ".BL.Example"))
    assert found is not None
    zone, relative = found
    assert zone.kind is ZoneKind.BLOCKLIST
    assert parse_reversed(relative) == ipaddress.IPv6Address("2001:db8::abcd")


@pytest.mark.parametrize(
    ("name", "zone", "relative"),
    [
        ("2.0.0.127.bl.example", "bl.example", ["2", "0", "0", "127"]),
        ("BL.EXAMPLE", "bl.example", []),
        ("1.wl.example", "wl.example", ["1"]),
        ("x.notbl.example", None, None),
        ("example", None, None),
        ("bl.example.com", None, None),
    ],
    ids=["address", "apex-any-case", "whitelist", "lookalike-suffix", "parent", "longer-suffix"],
)
def test_zone_table_finds_the_zone_by_whole_labels(
    name: str, zone: str | None, relative: list[str] | None
) -> None:
    table = ZoneTable([("bl.example", ZoneKind.BLOCKLIST), ("wl.example", ZoneKind.WHITELIST)])
    found = table.find(labels(name))
    if zone is None:
        assert found is None
    else:
        assert found is not None
        assert found[0].name == zone
        assert found[1] == [r.encode() for r in relative or []]
