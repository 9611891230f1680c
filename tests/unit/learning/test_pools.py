"""Pool suggestions: the narrowest domain that holds the names of addresses that retried together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from s25rbl.learning.pools import Pool, PoolView
from s25rbl.lists.domains import registrable_domain
from s25rbl.store.learning import PoolMember

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def members(*names: str) -> list[PoolMember]:
    """One attempt per name, from its own address, ten minutes apart."""
    return [PoolMember(f"198.51.100.{n}", name, T0 + n * 10 * MINUTE) for n, name in enumerate(names, 1)]


# (id, names that retried, the name just reported, the suggestion)
CASES = [
    (
        "one-isp-region-not-the-whole-isp",
        ["c-73-1-2-3.hsd1.ca.comcast.net", "c-73-1-2-4.hsd1.ca.comcast.net"],
        "c-73-1-2-4.hsd1.ca.comcast.net",
        "hsd1.ca.comcast.net",
    ),
    (
        "a-providers-outgoing-servers",
        ["a8-97.smtp-out.amazonses.com", "a8-98.smtp-out.amazonses.com", "a9-1.smtp-out.amazonses.com"],
        "a9-1.smtp-out.amazonses.com",
        "smtp-out.amazonses.com",
    ),
    (
        "the-narrowest-that-holds-two-addresses",
        ["p1-1.x.isp.example", "p2-2.x.isp.example", "p3-3.y.isp.example"],
        "p2-2.x.isp.example",
        "x.isp.example",
    ),
    (
        "names-sharing-only-the-registrable-domain",
        ["mc1-s3.bay6.hotmail.com", "mc2-s1.col0.hotmail.com"],
        "mc2-s1.col0.hotmail.com",
        "hotmail.com",
    ),
    ("one-address-is-no-pool", ["c-73-1-2-3.hsd1.ca.comcast.net"], "c-73-1-2-3.hsd1.ca.comcast.net", None),
]


@pytest.mark.parametrize(("names", "reported", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_suggestion_is_the_narrowest_domain_holding_the_retrying_names(
    names: list[str], reported: str, expected: str | None
) -> None:
    domain = registrable_domain(reported)
    assert domain is not None
    view = PoolView(Pool("news@shop.example", "alice@example.org", domain), members(*names), MINUTE, 1)
    found = view.narrowest(reported)
    assert (found[0] if found else None) == expected


def test_addresses_that_did_not_retry_together_are_no_pool() -> None:
    close = [
        PoolMember("198.51.100.1", "a1-1.smtp-out.bigmail.example", T0),
        PoolMember("198.51.100.2", "a2-2.smtp-out.bigmail.example", T0 + timedelta(seconds=10)),
    ]
    view = PoolView(Pool("s", "r", "bigmail.example"), close, MINUTE, 1)
    assert view.narrowest("a2-2.smtp-out.bigmail.example") is None


def test_a_suggestion_is_never_wider_than_the_registrable_domain() -> None:
    names = ["p1-2.example.co.jp", "p3-4.example.co.jp"]
    view = PoolView(Pool("s", "r", "example.co.jp"), members(*names), MINUTE, 1)
    found = view.narrowest("p3-4.example.co.jp")
    assert found is not None and found[0] == "example.co.jp"
    # Names of two registrable domains under one public suffix are two pools, never "co.jp".
    other = PoolView(
        Pool("s", "r", "other.co.jp"), members("p1-2.example.co.jp", "p3-4.other.co.jp"), MINUTE, 1
    )
    assert other.narrowest("p3-4.other.co.jp") is None


def test_a_pool_under_a_suffix_no_whitelist_entry_could_hold_makes_no_suggestion() -> None:
    # The names are s25rbl's confirmed PTR names: their holder chose them, octets and all. A
    # label with a space (escaped as \032) cannot be in a domain entry; the parent domain
    # would whitelist more than the retrying names share, so there is no suggestion at all.
    names = ["a1-1.smtp\\032out.bigmail.example", "a2-2.smtp\\032out.bigmail.example"]
    view = PoolView(Pool("s", "r", "bigmail.example"), members(*names), MINUTE, 1)
    assert view.narrowest(names[1]) is None
    # The same names without the odd octet make the suggestion they always did.
    plain = [name.replace("\\032", "-") for name in names]
    view = PoolView(Pool("s", "r", "bigmail.example"), members(*plain), MINUTE, 1)
    found = view.narrowest(plain[1])
    assert found is not None and found[0] == "smtp-out.bigmail.example"
