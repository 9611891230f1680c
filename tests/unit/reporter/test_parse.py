"""The log reporter reads Postfix lines: which are our temporary rejections, their fields, times and keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from s25rbl.reporter.parse import Kind, LineParser, idempotency_key
from s25rbl.reporter.state import MAX_LINE
from tests.unit.reporter.samples import REAL_BL, REAL_HELO, REAL_REVERSE, REAL_UNKNOWN, R

ZONES = ("bl.s25rbl.test", "hl.s25rbl.test")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def parser(now: datetime = NOW, tz: Any = UTC) -> LineParser:
    return LineParser(ZONES, tz=tz, now=lambda: now)


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
        "reject_rhsbl_client: the client's name in the brackets",
        f"Nov 23 21:50:02 mx1 postfix/smtpd[1235]: {R} p9.example.net[192.0.2.9]: 450 4.7.1 Service "
        "unavailable; Client host [p9.example.net] blocked using hl.s25rbl.test; S25R check, be patient "
        "[r1]; from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p9.example.net>",
        Kind.REPORT,
        ("192.0.2.9", "p9.example.net", "p9.example.net", "a@b.example", "x@y.example", None),
    ),
    (
        "reject_rhsbl_sender: the sender's domain in the brackets",
        f"Nov 23 21:50:02 mx1 postfix/smtpd[1236]: {R} p9.example.net[192.0.2.9]: 450 4.7.1 Service "
        "unavailable; Sender address [dsl12.example.net] blocked using hl.s25rbl.test; S25R check, be "
        "patient [r6]; from=<a@DSL12.example.net> to=<x@y.example> proto=ESMTP helo=<p9.example.net>",
        Kind.REPORT,
        ("192.0.2.9", "p9.example.net", "p9.example.net", "a@DSL12.example.net", "x@y.example", None),
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
        "a custom reply text: only Postfix's DNSBL reply format counts",
        f"Nov 23 21:50:02 mx1 postfix/smtpd[1235]: {R} p9.example.net[192.0.2.9]: 450 4.7.1 "
        "<p9.example.net>: Client host rejected: blocked using hl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<p9.example.net>",
        Kind.NOT_OURS,
        None,
    ),
    # Forged: the client chooses its HELO, sender and recipient, and puts our zone in them.
    (
        "forged: 'blocked using' our zone in the HELO of another check's rejection",
        f"Nov 23 21:53:00 mx1 postfix/smtpd[1400]: {R} unknown[192.0.2.40]: 450 4.7.1 <x>: Helo command "
        "rejected: Host not found; from=<a@b.example> to=<x@y.example> proto=ESMTP "
        "helo=<x; Client host [192.0.2.40] blocked using bl.s25rbl.test; S25R check, be patient [r1]>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "forged: our zone in a quoted sender of a 'User unknown' rejection",
        f"Nov 23 21:53:01 mx1 postfix/smtpd[1401]: {R} unknown[192.0.2.41]: 450 4.1.1 <x@y.example>: "
        "Recipient address rejected: User unknown; "
        'from=<"Service unavailable; Client host [192.0.2.41] blocked using bl.s25rbl.test"@b.example> '
        "to=<x@y.example> proto=ESMTP helo=<bot>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "forged: our zone in the recipient of a 'Relay access denied'",
        f"Nov 23 21:53:02 mx1 postfix/smtpd[1402]: {R} unknown[192.0.2.42]: 454 4.7.1 <x@e.example>: "
        "Relay access denied; from=<a@b.example> "
        'to=<"; Client host [192.0.2.42] blocked using bl.s25rbl.test;"@e.example> proto=ESMTP helo=<bot>',
        Kind.NOT_OURS,
        None,
    ),
    (
        "forged: a HELO that closes the brackets of another zone's rhsbl reply",
        f"Nov 23 21:53:03 mx1 postfix/smtpd[1403]: {R} unknown[192.0.2.43]: 450 4.7.1 Service unavailable; "
        "Helo command [a] blocked using bl.s25rbl.test; r [b] blocked using dbl.example.org; listed; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<a] blocked using bl.s25rbl.test; r [b>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "forged: another client's address in the brackets",
        f"Nov 23 21:53:04 mx1 postfix/smtpd[1404]: {R} unknown[192.0.2.44]: 450 4.7.1 Service unavailable; "
        "Client host [192.0.2.99] blocked using bl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<bot>",
        Kind.NOT_OURS,
        None,
    ),
    (
        "forged: our zone only as a prefix of the zone that blocked",
        f"Nov 23 21:53:05 mx1 postfix/smtpd[1405]: {R} unknown[192.0.2.45]: 450 4.7.1 Service unavailable; "
        "Client host [192.0.2.45] blocked using bl.s25rbl.test.evil.example; listed; "
        "from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<bot>",
        Kind.NOT_OURS,
        None,
    ),
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
        "9999-12-31T23:59:59-23:59",  # past year 9999 once in UTC
        "0001-01-01T00:00:00+23:59",  # before year 1 once in UTC
        "2026-02-30T22:00:29+00:00",
        "2026-11-23T25:00:29+00:00",
    ],
)
def test_timestamps_that_are_no_real_time_make_the_line_unparsable(stamp: str) -> None:
    parsed = parser().parse(REAL_BL.replace("Nov 23 22:00:29", stamp).encode())
    assert (parsed.kind, parsed.why) == (Kind.UNPARSABLE, "bad timestamp")


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


@pytest.mark.parametrize("filler", ["; from=<", "> to=<", "; from=<a> to=<", "> proto=X", "> proto=X helo=<"])
def test_crafted_addresses_parse_in_linear_time(filler: str) -> None:
    head = REAL_BL.split("; from=<")[0]
    line = f"{head}; from=<{filler * 800}> to=<{filler * 800}> proto=ESMTP helo=<{filler * 800}>"
    started = time.perf_counter()
    parsed = parser().parse(line.encode())
    assert time.perf_counter() - started < 0.05
    assert parsed.kind in (Kind.REPORT, Kind.UNPARSABLE)
