"""Sender normalisation: one sender's retries compare equal whatever tags the MTA adds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from s25rbl.learning.retries import count_retries
from s25rbl.learning.senders import normalise_recipient, normalise_sender

SENDERS = [
    ("null-sender", "<>", ""),
    ("domain-case", "Alice@Example.COM", "Alice@example.com"),
    ("angle-brackets", "<bob@example.org>", "bob@example.org"),
    ("batv-prvs", "prvs=1234abcd=bob@example.org", "bob@example.org"),
    ("batv-prvs-upper", "PRVS=0123ABCD=bob@Example.org", "bob@example.org"),
    ("batv-msprvs", "msprvs1=17823abc=bounces@ses.example", "bounces@ses.example"),
    ("batv-old-suffix", "bob=prvs=1234abcd@example.org", "bob@example.org"),
    ("srs0", "SRS0=HHH=TT=orig.example=alice@fwd.example", "alice@orig.example"),
    ("srs1", "SRS1=HHH=fwd1.example==HHH=TT=orig.example=alice@fwd2.example", "alice@orig.example"),
    ("verp-mailman", "list-bounces+bob=example.org@lists.example.net", "list-bounces@lists.example.net"),
    ("verp-plain", "mailman-bounces-bob=example.org@lists.example", "mailman-bounces@lists.example"),
    ("subaddress", "user+tag@Example.com", "user@example.com"),
    ("bounce-number-hash", "bounce-4711-9f8e7d6c5b4a@mailer.example", "bounce-#-#@mailer.example"),
    ("plain-digits-kept", "info2024@example.com", "info2024@example.com"),
    ("no-at", "MAILER-DAEMON", "mailer-daemon"),
]


@pytest.mark.parametrize(("raw", "normal"), [s[1:] for s in SENDERS], ids=[s[0] for s in SENDERS])
def test_sender_normalisation(raw: str, normal: str) -> None:
    assert normalise_sender(raw) == normal


def test_batv_retries_with_fresh_tags_compare_equal() -> None:
    assert normalise_sender("prvs=1111aaaa=news@shop.example") == normalise_sender(
        "prvs=2222bbbb=news@SHOP.example"
    )


def test_recipient_is_lower_cased() -> None:
    assert normalise_recipient("<Postmaster@Example.ORG>") == "postmaster@example.org"


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offsets", "retries"),
    [
        ([0], 0),
        ([0, 300], 1),
        ([0, 300, 900], 2),
        ([0, 10, 20, 30], 0),  # hammering inside the minimum interval is one attempt
        ([0, 30, 61, 90, 130], 2),  # 0, 61 and 130 count
        ([900, 0, 300], 2),  # order of arrival does not matter
    ],
    ids=["one", "two-spaced", "three-spaced", "too-fast", "mixed", "unordered"],
)
def test_retry_counting(offsets: list[int], retries: int) -> None:
    times = [T0 + timedelta(seconds=s) for s in offsets]
    assert count_retries(times, timedelta(seconds=60)) == retries
