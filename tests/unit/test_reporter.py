"""``s25rbl report-maillog`` without a network: parsing real Postfix lines, keys, the state file
and rotation, and the send loop against an in-process fake client."""

from __future__ import annotations

import io
import os
import threading
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from s25rbl.reporter import (
    BadBatch,
    FileSource,
    Kind,
    LineParser,
    Options,
    Reporter,
    ReporterError,
    StdinSource,
    Unavailable,
    idempotency_key,
)
from s25rbl.reporter_state import MAX_LINE, LogFile, Position, StateError, StateFile

ZONES = ("bl.s25rbl.test", "hl.s25rbl.test")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def parser(now: datetime = NOW, tz: Any = UTC) -> LineParser:
    return LineParser(ZONES, tz=tz, now=lambda: now)


# Lines as Postfix writes them. The first four are verbatim from the repository's Postfix
# lab (tests/integration/test_postfix.py: Postfix 3.x with maillog_file and the shipped
# rbl_reply); the others follow the same smtpd log_whatsup() format.
R = "NOQUEUE: reject: RCPT from"
REAL_BL = (
    "Nov 23 22:00:29 mx postfix/smtpd[9806]: NOQUEUE: reject: RCPT from p1234-ipad12.tokyo.ocn.ne.jp"
    "[198.51.100.7]: 450 4.7.1 Service unavailable; Client host [198.51.100.7] blocked using "
    "bl.s25rbl.test; S25R check, be patient [r1]; from=<sender@example.org> to=<user@example.test> "
    "proto=SMTP helo=<p1234-ipad12.tokyo.ocn.ne.jp>"
)
REAL_REVERSE = (
    "Nov 23 22:00:36 mx postfix/smtpd[10261]: NOQUEUE: reject: RCPT from p1234-ipad12.tokyo.ocn.ne.jp"
    "[198.51.100.7]: 450 4.7.1 Service unavailable; Unverified Client host [p1234-ipad12.tokyo.ocn.ne.jp] "
    "blocked using hl.s25rbl.test; S25R check, be patient [r1]; from=<sender@example.org> "
    "to=<user@example.test> proto=SMTP helo=<relay.example.org>"
)
REAL_HELO = (
    "Nov 23 22:00:33 mx postfix/smtpd[9977]: NOQUEUE: reject: RCPT from mail.example.org[198.51.100.8]: "
    "450 4.7.1 Service unavailable; Helo command [dhcp1234.pool.example.net] blocked using hl.s25rbl.test; "
    "S25R check, be patient [r6]; from=<sender@example.org> to=<user@example.test> proto=SMTP "
    "helo=<dhcp1234.pool.example.net>"
)
REAL_UNKNOWN = (
    "Nov 23 22:00:36 mx postfix/smtpd[10264]: NOQUEUE: reject: RCPT from unknown[198.51.100.10]: 450 4.7.1 "
    "Service unavailable; Client host [198.51.100.10] blocked using bl.s25rbl.test; reverse lookup "
    "failure, be patient; from=<sender@example.org> to=<user@example.test> proto=SMTP helo=<mail.example.org>"
)

# (line, kind, expected fields: client_ip, client_name, helo, sender, recipient, time ISO UTC)
CASES: list[tuple[str, str, Kind, tuple[str | None, ...] | None]] = [
    (
        "real: reject_rbl_client with the shipped rbl_reply",
        REAL_BL,
        Kind.REPORT,
        (
            "198.51.100.7",
            "p1234-ipad12.tokyo.ocn.ne.jp",
            "p1234-ipad12.tokyo.ocn.ne.jp",
            "sender@example.org",
            "user@example.test",
            "2026-11-23T22:00:29+00:00",
        ),
    ),
    (
        "real: reject_rhsbl_reverse_client",
        REAL_REVERSE,
        Kind.REPORT,
        (
            "198.51.100.7",
            "p1234-ipad12.tokyo.ocn.ne.jp",
            "relay.example.org",
            "sender@example.org",
            "user@example.test",
            "2026-11-23T22:00:36+00:00",
        ),
    ),
    (
        "real: reject_rhsbl_helo",
        REAL_HELO,
        Kind.REPORT,
        (
            "198.51.100.8",
            "mail.example.org",
            "dhcp1234.pool.example.net",
            "sender@example.org",
            "user@example.test",
            "2026-11-23T22:00:33+00:00",
        ),
    ),
    (
        "real: no reverse name, unknown[IP]",
        REAL_UNKNOWN,
        Kind.REPORT,
        ("198.51.100.10", "unknown", "mail.example.org", "sender@example.org", "user@example.test", None),
    ),
    (
        "Postfix's default text without a TXT reason (maps_rbl_reject_code = 450)",
        f"Nov 23 21:50:01 mx1 postfix/smtpd[1234]: {R} p1234.example.net[192.0.2.7]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.7] blocked using bl.s25rbl.test; from=<a@b.example> "
        "to=<x@y.example> proto=ESMTP helo=<p1234.example.net>",
        Kind.REPORT,
        (
            "192.0.2.7",
            "p1234.example.net",
            "p1234.example.net",
            "a@b.example",
            "x@y.example",
            "2026-11-23T21:50:01+00:00",
        ),
    ),
    (
        "'Client host rejected' wording from a custom reply, hostname zone",
        f"Nov 23 21:50:02 mx1 postfix/smtpd[1235]: {R} p9.example.net[192.0.2.9]: 450 4.7.1 "
        "<p9.example.net>: Client host rejected: blocked using hl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p9.example.net>",
        Kind.REPORT,
        ("192.0.2.9", "p9.example.net", "p9.example.net", "a@b.example", "x@y.example", None),
    ),
    (
        "null sender from=<>",
        f"Nov 23 21:50:03 mx1 postfix/smtpd[1236]: {R} p1.example.net[192.0.2.1]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.1] blocked using bl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<> to=<postmaster@y.example> proto=ESMTP helo=<p1.example.net>",
        Kind.REPORT,
        ("192.0.2.1", "p1.example.net", "p1.example.net", "", "postmaster@y.example", None),
    ),
    (
        "IPv6 client",
        f"Nov 23 21:50:04 mx1 postfix/smtpd[1237]: {R} dhcp7.pool.example.net[2001:db8::7]: 450 4.7.1 "
        "Service unavailable; Client host [2001:db8::7] blocked using bl.s25rbl.test; S25R check, be patient "
        "[r6]; from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<dhcp7.pool.example.net>",
        Kind.REPORT,
        (
            "2001:db8::7",
            "dhcp7.pool.example.net",
            "dhcp7.pool.example.net",
            "a@b.example",
            "x@y.example",
            None,
        ),
    ),
    (
        "IPv6 written in full, client port logging on",
        f"Nov 23 21:50:05 mx1 postfix/smtpd[1238]: {R} unknown[2001:DB8:0:0:0:0:0:7]:50123: 450 4.7.1 "
        "Service unavailable; Client host [2001:DB8:0:0:0:0:0:7] blocked using bl.s25rbl.test; "
        "reverse lookup failure, be patient; from=<a@b.example> to=<x@y.example> proto=ESMTP "
        "helo=<[IPv6:2001:db8::7]>",
        Kind.REPORT,
        ("2001:db8::7", "unknown", "[IPv6:2001:db8::7]", "a@b.example", "x@y.example", None),
    ),
    (
        "RFC 3339 timestamp (rsyslog high precision) with a zone offset",
        f"2026-11-24T06:50:01.123456+09:00 mx1 postfix/smtpd[1239]: {R} p2.example.net[192.0.2.2]: 450 4.7.1 "
        "Service unavailable; Client host [192.0.2.2] blocked using bl.s25rbl.test; S25R check, be patient "
        "[r1]; from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p2.example.net>",
        Kind.REPORT,
        (
            "192.0.2.2",
            "p2.example.net",
            "p2.example.net",
            "a@b.example",
            "x@y.example",
            "2026-11-23T21:50:01.123456+00:00",
        ),
    ),
    (
        "classic timestamp with microseconds, single-digit day",
        f"Nov  3 21:50:01.250000 mx1 postfix/smtpd[1240]: {R} p3.example.net[192.0.2.3]: 451 4.7.1 Service "
        "unavailable; Client host [192.0.2.3] blocked using bl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p3.example.net>",
        Kind.REPORT,
        (
            "192.0.2.3",
            "p3.example.net",
            "p3.example.net",
            "a@b.example",
            "x@y.example",
            "2026-11-03T21:50:01.250000+00:00",
        ),
    ),
    (
        "a queue id (a later recipient of an accepted transaction), submission instance",
        "Nov 23 21:50:06 mx1 postfix/submission/smtpd[1241]: 4Xk2Lq0d3Kz9tP: reject: RCPT from "
        "p4.example.net[192.0.2.4]: 450 4.7.1 Service unavailable; Client host [192.0.2.4] blocked using "
        "bl.s25rbl.test; S25R check, be patient [r2]; from=<a@b.example> to=<second@y.example> proto=ESMTP "
        "helo=<p4.example.net>",
        Kind.REPORT,
        ("192.0.2.4", "p4.example.net", "p4.example.net", "a@b.example", "second@y.example", None),
    ),
    (
        "zone written in capitals with a trailing dot",
        f"Nov 23 21:50:07 mx1 postfix-out/smtpd[1242]: {R} p5.example.net[192.0.2.5]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.5] blocked using BL.S25RBL.TEST.; domain check, be patient; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p5.example.net>",
        Kind.REPORT,
        ("192.0.2.5", "p5.example.net", "p5.example.net", "a@b.example", "x@y.example", None),
    ),
    (
        "odd characters: quoted local part with '> to=<', UTF-8 recipient, escaped tab in HELO",
        f"Nov 23 21:50:08 mx1 postfix/smtpd[1243]: {R} p6.example.net[192.0.2.6]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.6] blocked using bl.s25rbl.test; S25R check, be patient [r1]; "
        'from=<"odd> to=<x"@b.example> to=<ユーザー@例え.jp> proto=ESMTP helo=<weird#011helo;x>',
        Kind.REPORT,
        (
            "192.0.2.6",
            "p6.example.net",
            "weird#011helo;x",
            '"odd> to=<x"@b.example',
            "ユーザー@例え.jp",
            None,
        ),
    ),
    (
        "no HELO given (smtpd_helo_required = no)",
        f"Nov 23 21:50:09 mx1 postfix/smtpd[1244]: {R} p7.example.net[192.0.2.77]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.77] blocked using bl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<a@b.example> to=<x@y.example> proto=SMTP",
        Kind.REPORT,
        ("192.0.2.77", "p7.example.net", "", "a@b.example", "x@y.example", None),
    ),
    # --- not reports -------------------------------------------------------------------
    (
        "5xx with our zone: someone configured a permanent rejection",
        f"Nov 23 21:51:00 mx1 postfix/smtpd[1300]: {R} p8.example.net[192.0.2.8]: 554 5.7.1 Service "
        "unavailable; Client host [192.0.2.8] blocked using bl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p8.example.net>",
        Kind.IGNORED_5XX,
        None,
    ),
    (
        "connect",
        "Nov 23 22:00:29 mx postfix/smtpd[9806]: connect from p1234-ipad12.tokyo.ocn.ne.jp[198.51.100.7]",
        Kind.NOT_REJECT,
        None,
    ),
    (
        "disconnect",
        "Nov 23 22:00:29 mx postfix/smtpd[9806]: disconnect from p1234-ipad12.tokyo.ocn.ne.jp[198.51.100.7] "
        "helo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
        Kind.NOT_REJECT,
        None,
    ),
    (
        "permit_dnswl_client",
        "Nov 23 22:00:31 mx postfix/smtpd[9934]: NOQUEUE: permit: RCPT from p5678-ipad34.osaka.ocn.ne.jp"
        "[198.51.100.9]: action=permit_dnswl_client for Client host=p5678-ipad34.osaka.ocn.ne.jp"
        "[198.51.100.9] ; from=<sender@example.org> to=<user@example.test> proto=SMTP "
        "helo=<p5678-ipad34.osaka.ocn.ne.jp>",
        Kind.NOT_REJECT,
        None,
    ),
    (
        "delivery by another program",
        "Nov 23 22:00:29 mx postfix/discard[9817]: E2B39170093: to=<user@example.test>, relay=none, "
        "delay=0.12, delays=0.1/0.02/0/0, dsn=2.0.0, status=sent (delivered to the lab)",
        Kind.NOT_REJECT,
        None,
    ),
    (
        "User unknown",
        f"Nov 23 21:52:00 mx1 postfix/smtpd[1301]: {R} mail.example.org[192.0.2.20]: 550 5.1.1 "
        "<nobody@y.example>: Recipient address rejected: User unknown in local recipient table; "
        "from=<a@b.example> to=<nobody@y.example> proto=ESMTP helo=<mail.example.org>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "Relay access denied",
        f"Nov 23 21:52:01 mx1 postfix/smtpd[1302]: {R} p9.example.net[192.0.2.21]: 454 4.7.1 "
        "<x@elsewhere.example>: Relay access denied; from=<a@b.example> to=<x@elsewhere.example> "
        "proto=ESMTP helo=<p9.example.net>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "another RBL: Spamhaus ZEN",
        f"Nov 23 21:52:02 mx1 postfix/smtpd[1303]: {R} unknown[192.0.2.22]: 554 5.7.1 Service unavailable; "
        "Client host [192.0.2.22] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/192.0.2.22; from=<a@b.example> to=<x@y.example> "
        "proto=ESMTP helo=<bot>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "another RBL answering 450, a zone that only ends like ours",
        f"Nov 23 21:52:03 mx1 postfix/smtpd[1304]: {R} unknown[192.0.2.23]: 450 4.7.1 Service unavailable; "
        "Client host [192.0.2.23] blocked using xbl.s25rbl.test; listed; from=<a@b.example> to=<x@y.example> "
        "proto=ESMTP helo=<bot>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "Helo command rejected by another check",
        f"Nov 23 21:52:04 mx1 postfix/smtpd[1305]: {R} unknown[192.0.2.24]: 450 4.7.1 <bot>: Helo command "
        "rejected: Host not found; from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<bot>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "postscreen rejection",
        "Nov 23 21:52:05 mx1 postfix/postscreen[999]: NOQUEUE: reject: RCPT from [192.0.2.25]:41234: "
        "450 4.7.1 Service unavailable; client [192.0.2.25] blocked using bl.s25rbl.test; "
        "from=<a@b.example>, to=<x@y.example>, proto=ESMTP, helo=<bot>",
        Kind.NOT_REJECT,
        None,
    ),
    (
        "postscreen DNSBL rank",
        "Nov 23 21:52:05 mx1 postfix/postscreen[999]: DNSBL rank 3 for [192.0.2.25]:41234",
        Kind.NOT_REJECT,
        None,
    ),
    (
        "warn_if_reject",
        "Nov 23 21:52:06 mx1 postfix/smtpd[1306]: NOQUEUE: reject_warning: RCPT from p1.example.net"
        "[192.0.2.26]: 450 4.7.1 Service unavailable; Client host [192.0.2.26] blocked using bl.s25rbl.test; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p1.example.net>",
        Kind.NOT_REJECT,
        None,
    ),
    ("kernel noise", "Nov 23 21:52:07 mx1 kernel: [12345.678] eth0: link up", Kind.NOT_REJECT, None),
    ("empty line", "", Kind.NOT_REJECT, None),
    ("garbage", "hello\tworld \x00\x01 \u00e9", Kind.UNPARSABLE, None),
    (
        "our zone, rejected at CONNECT (smtpd_delay_reject = no): no sender, no recipient",
        "Nov 23 21:52:08 mx1 postfix/smtpd[1307]: NOQUEUE: reject: CONNECT from p1.example.net[192.0.2.27]: "
        "450 4.7.1 Service unavailable; Client host [192.0.2.27] blocked using bl.s25rbl.test; proto=SMTP",
        Kind.UNPARSABLE,
        None,
    ),
    (
        "our zone, line cut short",
        f"Nov 23 21:52:09 mx1 postfix/smtpd[1308]: {R} p1.example.net[192.0.2.28]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.28] blocked using bl.s25rbl.test; S25R check, be pat",
        Kind.UNPARSABLE,
        None,
    ),
    (
        "our zone, impossible date",
        f"Feb 30 21:52:10 mx1 postfix/smtpd[1309]: {R} p1.example.net[192.0.2.29]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.29] blocked using bl.s25rbl.test; from=<a@b.example> "
        "to=<x@y.example> proto=ESMTP helo=<p1.example.net>",
        Kind.UNPARSABLE,
        None,
    ),
    (
        "our zone, not an address in the brackets",
        f"Nov 23 21:52:11 mx1 postfix/smtpd[1310]: {R} p1.example.net[192.0.2.300]: 450 4.7.1 Service "
        "unavailable; Client host [192.0.2.300] blocked using bl.s25rbl.test; from=<a@b.example> "
        "to=<x@y.example> proto=ESMTP helo=<p1.example.net>",
        Kind.UNPARSABLE,
        None,
    ),
]


@pytest.mark.parametrize(("line", "kind", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_postfix_lines_are_classified_and_fields_extracted(
    line: str, kind: Kind, expected: tuple[str | None, ...] | None
) -> None:
    parsed = parser().parse(line.encode())
    assert parsed.kind is kind, parsed.why
    if kind is not Kind.REPORT:
        assert parsed.rejection is None
        return
    assert parsed.rejection is not None
    report = parsed.rejection.report()
    ip, name, helo, sender, recipient, when = expected or ()
    assert report["client_ip"] == ip
    assert report["client_name"] == name
    assert report["helo"] == helo
    assert report["sender"] == sender
    assert report["recipient"] == recipient
    if when is not None:
        assert report["time"] == when
    assert set(report) == {
        "client_ip",
        "client_name",
        "helo",
        "sender",
        "recipient",
        "time",
        "idempotency_key",
    }
    assert datetime.fromisoformat(report["time"]).tzinfo is not None


def test_the_table_covers_every_kind_and_enough_reports() -> None:
    kinds = [c[2] for c in CASES]
    assert set(kinds) == set(Kind)
    assert kinds.count(Kind.REPORT) >= 15


def test_only_the_configured_zones_count() -> None:
    other = LineParser(["bl.example.org"], tz=UTC, now=lambda: NOW)
    assert other.parse(REAL_BL.encode()).kind is Kind.NOT_OURS
    assert (
        LineParser(["BL.S25RBL.TEST."], tz=UTC, now=lambda: NOW).parse(REAL_BL.encode()).kind is Kind.REPORT
    )


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    raw = REAL_BL.encode().replace(b"helo=<p1234", b"helo=<\xff\xfep1234")
    parsed = parser().parse(raw)
    assert parsed.rejection is not None
    assert parsed.rejection.helo.startswith("\ufffd\ufffdp1234")


def test_overlong_line_is_unparsable() -> None:
    assert parser().parse(b"x" * MAX_LINE).kind is Kind.UNPARSABLE


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "stamp", "expected"),
    [
        (NOW, "Nov 24 11:00:00", datetime(2026, 11, 24, 11, 0, tzinfo=UTC)),
        (NOW, "Nov 25 11:00:00", datetime(2026, 11, 25, 11, 0, tzinfo=UTC)),  # < 1 day ahead: clock skew
        (NOW, "Nov 26 12:00:01", datetime(2025, 11, 26, 12, 0, 1, tzinfo=UTC)),  # > 1 day ahead: last year
        (
            datetime(2027, 1, 1, 0, 5, tzinfo=UTC),
            "Dec 31 23:59:59",
            datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
        ),
        (datetime(2025, 3, 1, tzinfo=UTC), "Feb 29 10:00:00", datetime(2024, 2, 29, 10, 0, tzinfo=UTC)),
        (
            datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
            "Jan  1 00:30:00",
            datetime(2027, 1, 1, 0, 30, tzinfo=UTC),
        ),
    ],
)
def test_classic_timestamps_get_a_year(now: datetime, stamp: str, expected: datetime) -> None:
    line = REAL_BL.replace("Nov 23 22:00:29", stamp)
    parsed = parser(now=now).parse(line.encode())
    assert parsed.rejection is not None, parsed.why
    assert parsed.rejection.time == expected


def test_classic_timestamps_use_the_given_or_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    tokyo = timezone(timedelta(hours=9))
    parsed = parser(tz=tokyo).parse(REAL_BL.encode())
    assert parsed.rejection is not None
    assert parsed.rejection.report()["time"] == "2026-11-23T13:00:29+00:00"

    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    try:
        local = parser(tz=None).parse(REAL_BL.encode())
    finally:
        monkeypatch.undo()
        time.tzset()
    assert local.rejection is not None
    assert local.rejection.report()["time"] == "2026-11-23T13:00:29+00:00"


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-23T22:00:29Z",
        "2026-11-23T22:00:29+00:00",
        "2026-11-23T23:00:29+0100",
        "2026-11-23T17:00:29-05:00",
    ],
)
def test_rfc3339_timestamps(stamp: str) -> None:
    parsed = parser().parse(REAL_BL.replace("Nov 23 22:00:29", stamp).encode())
    assert parsed.rejection is not None, parsed.why
    assert parsed.rejection.time == datetime(2026, 11, 23, 22, 0, 29, tzinfo=UTC)


# --- idempotency keys -----------------------------------------------------------------------


def test_idempotency_key_is_a_function_of_the_line() -> None:
    key = idempotency_key(REAL_BL.encode())
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert idempotency_key(REAL_BL.encode() + b"\n") == key
    assert idempotency_key(REAL_BL.encode() + b"\r\n") == key
    parsed = parser().parse(REAL_BL.encode())
    assert parsed.rejection is not None and parsed.rejection.idempotency_key == key
    # Re-reading the line, even with another parser on another day, gives the same key.
    again = parser(now=NOW + timedelta(days=1)).parse(REAL_BL.encode())
    assert again.rejection is not None and again.rejection.idempotency_key == key


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("22:00:29", "22:00:30"),  # another second
        ("smtpd[9806]", "smtpd[9807]"),  # another process
        ("Nov 23", "Nov 22"),  # another day
        (" mx ", " mx2 "),  # another MTA
        ("NOQUEUE", "4Xk2Lq0d3Kz9tP"),  # another queue id
        ("user@example.test", "other@example.test"),  # another recipient
    ],
)
def test_different_rejections_get_different_keys(old: str, new: str) -> None:
    changed = REAL_BL.replace(old, new, 1)
    assert changed != REAL_BL
    assert idempotency_key(changed.encode()) != idempotency_key(REAL_BL.encode())


# --- the state file -------------------------------------------------------------------------


def test_state_file_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.state"
    state = StateFile(path)
    state.open()
    state.save("/var/log/mail.log", Position(1, 2, 300, "ab", 300))
    state.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.state", "report.state.lock"]
    again = StateFile(path)
    again.open()
    try:
        assert again.get("/var/log/mail.log") == Position(1, 2, 300, "ab", 300)
        assert again.get("/other") is None
    finally:
        again.close()


def test_state_file_is_locked_against_a_second_reporter(tmp_path: Path) -> None:
    first = StateFile(tmp_path / "s")
    first.open()
    try:
        with pytest.raises(StateError, match="in use"):
            StateFile(tmp_path / "s").open()
    finally:
        first.close()


@pytest.mark.parametrize("content", ["not json", '{"files": 3}', '{"files": {"/x": {"inode": -1}}}'])
def test_a_damaged_state_file_is_ignored(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "s").write_text(content)
    state = StateFile(tmp_path / "s")
    state.open()
    state.close()
    assert state.files == {}
    assert "state file" in caplog.text


def read_all(logfile: LogFile, limit: float = 5.0) -> list[bytes]:
    """Lines until the file has nothing for a moment (following) or is finished."""
    lines: list[bytes] = []
    deadline = time.monotonic() + limit
    idle_since: float | None = None
    while time.monotonic() < deadline:
        line = logfile.read_line()
        if line is not None:
            lines.append(line)
            idle_since = None
            continue
        if logfile.finished():
            break
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > 3 * logfile.rotate_quiet:
            break
        time.sleep(0.01)
    return lines


def test_lines_and_offsets_and_a_partial_last_line(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"one\ntwo\r\nthr")
    following = LogFile(str(log), follow=True, rotate_quiet=0.05)
    following.start(None)
    assert read_all(following, 0.5) == [b"one", b"two"]
    assert following.offset == len(b"one\ntwo\r\n")  # "thr" is being written: not yet a line
    with log.open("ab") as fh:
        fh.write(b"ee\n")
    assert read_all(following, 0.5) == [b"three"]
    following.close()

    log.write_bytes(b"one\nlast without newline")
    once = LogFile(str(log), follow=False)
    once.start(None)
    assert read_all(once) == [b"one", b"last without newline"]
    assert once.finished()
    once.close()


def test_an_overlong_line_is_handed_over_once_and_skipped(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"a\n" + b"x" * (3 * MAX_LINE) + b"\nb\n")
    logfile = LogFile(str(log), follow=False)
    logfile.start(None)
    lines = read_all(logfile)
    logfile.close()
    assert [len(x) for x in lines] == [1, MAX_LINE, 1]
    assert lines[0] == b"a" and lines[2] == b"b"


def test_rotation_by_rename_finishes_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n")
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.2)
    logfile.start(None)
    assert read_all(logfile, 0.3) == [b"1", b"2"]
    old_inode = logfile.inode
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(b"new-1\n")
    # The logger writes to the old file until it reopens; those lines come first.
    with (tmp_path / "mail.log.1").open("ab") as fh:
        fh.write(b"3\n")
    assert read_all(logfile, 3) == [b"3", b"new-1"]
    assert logfile.inode != old_inode and logfile.offset == len(b"new-1\n")
    logfile.close()


def test_rotation_by_rename_before_the_new_file_exists(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n")
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.05)
    logfile.start(None)
    assert read_all(logfile, 0.2) == [b"1"]
    log.rename(tmp_path / "mail.log.1")
    assert read_all(logfile, 0.2) == []
    with (tmp_path / "mail.log.1").open("ab") as fh:
        fh.write(b"2\n")
    assert read_all(logfile, 0.2) == [b"2"]
    log.write_bytes(b"new\n")
    assert read_all(logfile, 1) == [b"new"]
    logfile.close()


def test_rotation_by_truncation_rereads_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"first line\nsecond line\n")
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.05)
    logfile.start(None)
    assert read_all(logfile, 0.2) == [b"first line", b"second line"]
    with log.open("r+b") as fh:  # copytruncate
        fh.truncate(0)
    with log.open("ab") as fh:
        fh.write(b"after\n")
    assert read_all(logfile, 0.5) == [b"after"]
    logfile.close()


def saved_position(log: Path, lines_done: int) -> Position:
    """The position a reporter would have saved after ``lines_done`` lines."""
    logfile = LogFile(str(log), follow=False)
    logfile.start(None)
    for _ in range(lines_done):
        assert logfile.read_line() is not None
    position = logfile.position()
    logfile.close()
    assert position is not None
    return position


def test_restart_resumes_at_the_saved_offset(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n3\n")
    position = saved_position(log, 2)
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"3"]
    logfile.close()


def test_restart_after_rotation_while_stopped_finishes_the_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n3\n")
    position = saved_position(log, 1)
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(b"new-1\nnew-2\n")
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"2", b"3", b"new-1", b"new-2"]
    logfile.close()


def test_restart_after_the_rotated_file_is_gone_starts_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n")
    position = saved_position(log, 1)
    log.rename(tmp_path / "mail.log.1")
    keep = (tmp_path / "mail.log.1").open("rb")  # keeps the inode from being reused
    try:
        (tmp_path / "mail.log.1").unlink()
        log.write_bytes(b"new\n")
        logfile = LogFile(str(log), follow=False)
        logfile.start(position)
        assert read_all(logfile) == [b"new"]
        logfile.close()
    finally:
        keep.close()
    assert "not reported" in caplog.text


def test_restart_after_truncation_or_an_inode_reused_starts_over(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"aaaa\nbbbb\n")
    position = saved_position(log, 1)
    with log.open("r+b") as fh:  # same inode, same length, other content: another file
        fh.write(b"cccc\ndddd\n")
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"cccc", b"dddd"]
    logfile.close()

    log.write_bytes(b"x\n")  # truncated below the saved offset
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"x"]
    logfile.close()


def test_a_missing_log_without_follow_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no such file"):
        LogFile(str(tmp_path / "nope"), follow=False).start(None)


# --- --from-end -----------------------------------------------------------------------------


def test_from_end_reads_only_lines_written_after_the_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old-1\nold-2\n")
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as logfile:
        logfile.start(None, from_end=True)
        assert read_all(logfile, 0.2) == []
        position = logfile.position()
        assert position is not None and position.offset == log.stat().st_size
        with log.open("ab") as fh:
            fh.write(b"new-1\nnew-2\n")
        assert read_all(logfile, 0.2) == [b"new-1", b"new-2"]


def test_from_end_keeps_a_line_being_written_whole(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old\nhalf a li")
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as following:
        following.start(None, from_end=True)
        assert following.offset == len(b"old\n")  # the logger is still writing the last line
        assert read_all(following, 0.2) == []
        with log.open("ab") as fh:
            fh.write(b"ne\n")
        assert read_all(following, 0.2) == [b"half a line"]  # not the fragment "ne"

    log.write_bytes(b"old\nlast without newline")
    with closing(LogFile(str(log), follow=False)) as once:  # it will not grow: its last line is complete
        once.start(None, from_end=True)
        assert read_all(once) == []
        assert once.finished() and once.offset == log.stat().st_size


def test_from_end_inside_an_overlong_line_skips_its_rest(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old\n" + b"x" * (2 * MAX_LINE))
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as logfile:
        logfile.start(None, from_end=True)
        assert read_all(logfile, 0.2) == []
        with log.open("ab") as fh:
            fh.write(b"xxx\nnew\n")
        assert read_all(logfile, 0.2) == [b"new"]


def test_from_end_reads_a_log_created_after_the_start_whole(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as logfile:
        logfile.start(None, from_end=True)
        assert read_all(logfile, 0.2) == []
        log.write_bytes(b"1\n2\n")  # every line of it was written after the start
        assert read_all(logfile, 0.2) == [b"1", b"2"]


@pytest.mark.parametrize("follow", [False, True])
def test_a_saved_position_wins_over_from_end(tmp_path: Path, follow: bool) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n3\n")
    position = saved_position(log, 1)
    with closing(LogFile(str(log), follow=follow, rotate_quiet=0.05)) as logfile:
        logfile.start(position, from_end=True)
        assert read_all(logfile, 0.2) == [b"2", b"3"]


# --- the send loop --------------------------------------------------------------------------


class FakeClient:
    """Answers like the API; ``script`` items are raised (an exception) before answering."""

    timeout = 1.0

    def __init__(self, script: list[Exception] | None = None) -> None:
        self.script = list(script or [])
        self.keys: list[str] = []
        self.batches: list[int] = []
        self.on_send: Any = None

    def send(self, reports: list[dict[str, str]], timeout: float | None = None) -> dict[str, Any]:
        if self.on_send is not None:
            self.on_send()
        if self.script:
            raise self.script.pop(0)
        self.batches.append(len(reports))
        new = [r["idempotency_key"] for r in reports if r["idempotency_key"] not in self.keys]
        self.keys.extend(new)
        return {"accepted": len(new), "duplicate": len(reports) - len(new), "refused": 0, "errors": []}


def reject_line(n: int) -> str:
    return REAL_BL.replace("smtpd[9806]", f"smtpd[{n}]")


def run_reporter(
    tmp_path: Path,
    client: Any,
    lines: list[str],
    *,
    batch: int = 500,
    state: StateFile | None = None,
    from_end: bool = False,
) -> tuple[Reporter, str]:
    log = tmp_path / "mail.log"
    if not log.exists():
        log.write_text("".join(line + "\n" for line in lines))
    own_state = state is None
    state = state or StateFile(tmp_path / "state")
    if own_state:
        state.open()
    logfile = LogFile(str(log), follow=False)
    logfile.start(state.get(str(log)), from_end=from_end)
    out = io.StringIO()
    reporter = Reporter(
        parser(),
        client,
        FileSource(logfile),
        state,
        str(log),
        Options(batch=batch, backoff_min=0.01, backoff_max=0.02, interval=60),
        threading.Event(),
        out,
    )
    try:
        assert reporter.run() == 0
    finally:
        logfile.close()
        if own_state:
            state.close()
    return reporter, out.getvalue()


def test_batches_counts_and_summary(tmp_path: Path) -> None:
    lines = [reject_line(n) for n in range(7)] + [
        "Nov 23 22:00:29 mx postfix/smtpd[1]: connect from x[192.0.2.1]"
    ]
    client = FakeClient()
    _, out = run_reporter(tmp_path, client, lines, batch=3)
    assert client.batches == [3, 3, 1]
    assert len(set(client.keys)) == 7
    assert "8 lines: 7 rejections reported (7 accepted, 0 duplicate, 0 refused)" in out
    assert "1 not rejections" in out


def test_outage_retries_the_same_batch_until_accepted(tmp_path: Path) -> None:
    client = FakeClient([Unavailable("503"), Unavailable("refused"), Unavailable("503", retry_after=0.01)])
    reporter, _ = run_reporter(tmp_path, client, [reject_line(n) for n in range(4)], batch=10)
    assert client.batches == [4] and len(client.keys) == 4
    assert reporter.counts.accepted == 4


def test_a_malformed_batch_is_logged_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient([BadBatch("422 time: bad")])
    reporter, out = run_reporter(tmp_path, client, [reject_line(n) for n in range(3)], batch=2)
    assert client.batches == [1]  # the first batch of 2 was skipped, the rest sent
    assert reporter.counts.dropped == 2
    assert "2 dropped" in out and "this is a bug" in caplog.text


def test_a_bad_token_is_fatal(tmp_path: Path) -> None:
    client = FakeClient([ReporterError("401 bad token")])
    with pytest.raises(ReporterError):
        run_reporter(tmp_path, client, [reject_line(1)])


def test_the_state_advances_only_past_accepted_reports(tmp_path: Path) -> None:
    lines = [reject_line(n) for n in range(6)]
    state = StateFile(tmp_path / "state")
    state.open()
    saved: list[int] = []
    client = FakeClient()
    log = tmp_path / "mail.log"

    def record() -> None:
        position = state.get(str(log))
        saved.append(position.offset if position else 0)

    client.on_send = record
    try:
        run_reporter(tmp_path, client, lines, batch=2, state=state)
        # Before each send the state is where the previous batch ended.
        line_length = len(lines[0]) + 1
        assert saved == [0, 2 * line_length, 4 * line_length]
        final = state.get(str(log))
        assert final is not None and final.offset == log.stat().st_size
        # A second run over the same file sends nothing.
        again = FakeClient()
        run_reporter(tmp_path, again, lines, state=state)
        assert again.batches == []
    finally:
        state.close()


def test_from_end_then_a_reporter_saves_the_end_and_a_later_run_resumes_there(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    old = [reject_line(n) for n in range(3)]
    log.write_text("".join(line + "\n" for line in old))
    state = StateFile(tmp_path / "state")
    state.open()
    try:
        client = FakeClient()
        reporter, _ = run_reporter(tmp_path, client, [], state=state, from_end=True)
        assert client.batches == [] and reporter.counts.lines == 0
        saved = state.get(str(log))
        assert saved is not None and saved.offset == log.stat().st_size
        new = [reject_line(n) for n in range(10, 12)]
        with log.open("a") as fh:
            fh.write("".join(line + "\n" for line in new))
        later = FakeClient()
        run_reporter(tmp_path, later, [], state=state)  # without from_end: resumes at the end
        assert later.keys == [idempotency_key(line.encode()) for line in new]
    finally:
        state.close()


def test_stop_during_an_outage_keeps_the_state_before_the_batch(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(reject_line(n) + "\n" for n in range(3)))
    state = StateFile(tmp_path / "state")
    state.open()
    stop = threading.Event()
    client = FakeClient([Unavailable("down")] * 1000)
    client.on_send = lambda: stop.set() if len(client.script) < 995 else None
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.05)
    logfile.start(None)
    out = io.StringIO()
    options = Options(
        batch=500, interval=0.05, poll=0.01, follow=True, backoff_min=0.01, backoff_max=0.02, grace=0.2
    )
    reporter = Reporter(parser(), client, FileSource(logfile), state, str(log), options, stop, out)
    started = time.monotonic()
    try:
        assert reporter.run() == 0
    finally:
        logfile.close()
        state.close()
    assert time.monotonic() - started < 5
    assert "3 unsent" in out.getvalue()
    assert state.get(str(log)) is None  # nothing was accepted: nothing recorded as done


def test_stdin_source_reads_lines_and_ends(tmp_path: Path) -> None:
    data = io.BytesIO(("\n".join(reject_line(n) for n in range(3)) + "\nlast-no-newline").encode())
    source = StdinSource(data)
    client = FakeClient()
    reporter = Reporter(
        parser(), client, source, None, "-", Options(poll=0.01), threading.Event(), io.StringIO()
    )
    assert reporter.run() == 0
    assert len(client.keys) == 3
    assert reporter.counts.lines == 4 and reporter.counts.kinds[Kind.UNPARSABLE] == 1


def test_os_level_offsets_match_the_file(tmp_path: Path) -> None:
    # The saved position names the file by device and inode, as os.stat does.
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n")
    position = saved_position(log, 1)
    st = os.stat(log)
    assert (position.device, position.inode, position.offset) == (st.st_dev, st.st_ino, 2)


@pytest.mark.parametrize("filler", ["; from=<", "> to=<", "; from=<a> to=<", "> proto=X", "> proto=X helo=<"])
def test_crafted_addresses_parse_in_linear_time(filler: str) -> None:
    head = REAL_BL.split("; from=<")[0]
    line = f"{head}; from=<{filler * 800}> to=<{filler * 800}> proto=ESMTP helo=<{filler * 800}>"
    started = time.perf_counter()
    parsed = parser().parse(line.encode())
    assert time.perf_counter() - started < 0.05
    assert parsed.kind in (Kind.REPORT, Kind.UNPARSABLE)
