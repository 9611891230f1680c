"""List semantics: domain suffixes on label boundaries, CIDR containment, regexes, learned IPs."""

from __future__ import annotations

import ipaddress

import pytest

from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.verdict.lists import ListIndex

W, B = ListName.WHITE, ListName.BLACK


def index(*entries: tuple[ListName, EntryKind, str]) -> ListIndex:
    return ListIndex.build(
        EntryRow(n, li, k, v, EntrySource.MANUAL) for n, (li, k, v) in enumerate(entries, 1)
    )


@pytest.mark.parametrize(
    ("entry", "name", "hit"),
    [
        ("hotmail.com", "mc1-s3.bay6.hotmail.com", True),
        ("hotmail.com", "hotmail.com", True),
        ("hotmail.com", "nothotmail.com", False),
        ("hotmail.com", "hotmail.com.evil.example", False),
        ("bay6.hotmail.com", "mc1-s3.bay6.hotmail.com", True),
        ("bay6.hotmail.com", "mc1-s3.bay7.hotmail.com", False),
        ("jp", "web10902.mail.bbt.yahoo.co.jp", True),
    ],
    ids=["subdomain", "itself", "lookalike-prefix", "as-a-label-inside", "deeper", "sibling", "tld"],
)
def test_domain_entry_matches_the_name_and_its_subdomains_only(entry: str, name: str, hit: bool) -> None:
    assert (index((W, EntryKind.DOMAIN, entry)).white_name([name]) is not None) is hit


@pytest.mark.parametrize(
    ("entry", "name", "hit"),
    [("mail.example.org", "mail.example.org", True), ("mail.example.org", "x.mail.example.org", False)],
    ids=["exact", "not-subdomains"],
)
def test_hostname_entry_matches_exactly(entry: str, name: str, hit: bool) -> None:
    assert (index((B, EntryKind.HOSTNAME, entry)).black_name([name]) is not None) is hit


@pytest.mark.parametrize(
    ("entries", "address", "entry_id"),
    [
        ([(B, EntryKind.CIDR, "198.51.100.0/24")], "198.51.100.255", 1),
        ([(B, EntryKind.CIDR, "198.51.100.0/24")], "198.51.101.0", None),
        ([(B, EntryKind.CIDR, "198.51.0.0/16"), (B, EntryKind.IP, "198.51.100.7")], "198.51.100.7", 2),
        ([(B, EntryKind.CIDR, "2001:db8::/32")], "2001:db8:ffff::1", 1),
        ([(B, EntryKind.CIDR, "2001:db8::/32")], "2001:db9::1", None),
        ([(B, EntryKind.IP, "2001:db8::1")], "2001:db8::1", 1),
        ([(B, EntryKind.CIDR, "10.0.0.0/8")], "10.255.255.255", 1),
    ],
    ids=["in-24", "outside-24", "most-specific-reported", "v6-in-32", "v6-outside", "v6-ip", "v4-8"],
)
def test_addresses_and_networks(
    entries: list[tuple[ListName, EntryKind, str]], address: str, entry_id: int | None
) -> None:
    match = index(*entries).black_address(ipaddress.ip_address(address))
    assert (match.entry_id if match else None) == entry_id


def test_regexes_are_case_insensitive_and_all_checked_at_once() -> None:
    idx = index(
        (W, EntryKind.REGEX, r"\.bay[0-9]*\.hotmail\.com$"),
        (W, EntryKind.REGEX, r"^mail[0-9]*\.nifty\.com$"),
    )
    assert idx.white_name(["MC1-S3.BAY6.HOTMAIL.COM"]) is not None
    match = idx.white_name(["mail3.nifty.com"])
    assert match is not None and match.entry_id == 2
    assert idx.white_name(["mail3.nifty.com.example"]) is None


def test_learned_addresses_are_their_own_step() -> None:
    idx = ListIndex.build([EntryRow(1, W, EntryKind.IP, "192.0.2.20", EntrySource.LEARNED)])
    ip = ipaddress.ip_address("192.0.2.20")
    assert idx.white_address(ip) is None
    assert idx.learned_address(ip) is not None


def test_a_bad_row_is_skipped_with_a_warning_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    idx = ListIndex.build(
        [
            EntryRow(1, B, EntryKind.REGEX, "(a)\\1", EntrySource.MANUAL),
            EntryRow(2, B, EntryKind.IP, "not-an-ip", EntrySource.MANUAL),
            EntryRow(3, B, EntryKind.IP, "192.0.2.1", EntrySource.MANUAL),
        ]
    )
    assert idx.skipped == 2
    assert idx.black_address(ipaddress.ip_address("192.0.2.1")) is not None
    assert "skipped" in caplog.text


def test_operator_rules_come_after_the_general_rules() -> None:
    idx = ListIndex.build([EntryRow(5, B, EntryKind.RULE, r"^mx[0-9]+\.cheap-vps\.", EntrySource.MANUAL)])
    assert idx.rules.match("p1234-ipad12.tokyo.ocn.ne.jp") is not None
    hit = idx.rules.match("mx7.cheap-vps.example")
    assert hit is not None and hit[0] == "rule5"
    assert idx.rules.match("mail.example.org") is None
