"""The hostname zone (product §3a): the S25R judgement on a name as given, no lookups."""

from __future__ import annotations

import dnslib
import pytest

from s25rbl.dns.answers import AnswerSettings
from s25rbl.dns.handler import Responder
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine
from tests.unit.fakes import DictResolver
from tests.unit.verdict.test_s25r import CASES, PRODUCT_EXAMPLES

HL, BL = "hl.example", "bl.example"


def make(ip_literal_names: bool = False) -> tuple[Responder, DictResolver]:
    rows = [
        EntryRow(1, ListName.WHITE, EntryKind.DOMAIN, "hotmail.com", EntrySource.BUILTIN),
        EntryRow(2, ListName.BLACK, EntryKind.DOMAIN, "dip.t-dialin.net", EntrySource.MANUAL),
        EntryRow(3, ListName.WHITE, EntryKind.REGEX, r"^mx[0-9]+\.partner\.example$", EntrySource.MANUAL),
        EntryRow(4, ListName.BLACK, EntryKind.HOSTNAME, "mail.spammer.example", EntrySource.MANUAL),
    ]
    index = ListIndex.build(rows)
    resolver = DictResolver()
    engine = VerdictEngine(lambda: index, ReverseLookup(resolver), ip_literal_names=ip_literal_names)
    zones = ZoneTable([(BL, ZoneKind.BLOCKLIST), (HL, ZoneKind.HOSTNAME)])
    return Responder(zones, engine, AnswerSettings(), serial=lambda: 1), resolver


def ask(responder: Responder, qname: str, qtype: str = "A") -> dnslib.DNSRecord:
    raw = responder.handle(dnslib.DNSRecord.question(qname, qtype).pack(), tcp=False)
    assert isinstance(raw, bytes), "the hostname zone must answer without awaiting anything"
    return dnslib.DNSRecord.parse(raw)


# The fixture's own list entries decide these names first; the rest must answer by rule.
TABLE = [
    (h, r) for h, r in [*PRODUCT_EXAMPLES, *CASES] if not h.endswith(("hotmail.com", "dip.t-dialin.net"))
]


@pytest.mark.parametrize(("hostname", "rule"), TABLE, ids=[h for h, _ in TABLE])
def test_the_rule_table_answers_one_to_one_by_name(hostname: str, rule: int | None) -> None:
    responder, resolver = make()
    reply = ask(responder, f"{hostname}.{HL}", "TXT")
    if rule is None:
        assert not reply.rr
        assert reply.auth[0].rtype == dnslib.QTYPE.SOA
    else:
        assert [str(rr.rdata) for rr in reply.rr] == [f'"S25R check, be patient [r{rule}]"']
    assert resolver.calls == []  # no PTR or forward lookups for this zone


@pytest.mark.parametrize(
    ("name", "rcode", "answer"),
    [
        ("mc1-s3.bay6.hotmail.com", "NXDOMAIN", None),  # builtin whitelist by domain
        ("mx12.partner.example", "NXDOMAIN", None),  # whitelist by regex
        ("pd9e01234.dip.t-dialin.net", "NOERROR", "127.0.0.3"),  # blacklist by domain
        ("mail.spammer.example", "NOERROR", "127.0.0.3"),  # blacklist by hostname
        ("p1234-ipad12.tokyo.ocn.ne.jp", "NOERROR", "127.0.0.2"),  # rule 1
        ("P1234-IPAD12.Tokyo.OCN.ne.jp", "NOERROR", "127.0.0.2"),  # any case
        ("mail.example.org", "NXDOMAIN", None),  # a proper mail server name: not listed
        ("TEST", "NOERROR", "127.0.0.2"),  # RFC 5782 domain test entry
        ("INVALID", "NXDOMAIN", None),
        ("com", "NOERROR", None),  # empty non-terminals on the way down to a host
        ("hotmail.com", "NOERROR", None),
        ("co.jp", "NOERROR", None),
        ("ocn.ne.jp", "NOERROR", None),
        ("tokyo.ocn.ne.jp", "NXDOMAIN", None),
        ("192.0.2.1", "NXDOMAIN", None),  # an address literal is not listed by default
        ("[192.0.2.1]", "NXDOMAIN", None),
        ("bad\\032name.example", "NXDOMAIN", None),  # not a hostname at all
    ],
    ids=lambda v: str(v),
)
def test_name_verdicts(name: str, rcode: str, answer: str | None) -> None:
    responder, _ = make()
    reply = ask(responder, f"{name}.{HL}")
    assert dnslib.RCODE[reply.header.rcode] == rcode
    assert [str(rr.rdata) for rr in reply.rr] == ([answer] if answer else [])
    if not answer:
        assert reply.auth and reply.auth[0].rtype == dnslib.QTYPE.SOA


def test_question_case_is_kept() -> None:
    responder, _ = make()
    reply = ask(responder, "P1234-IPAD12.Tokyo.OCN.ne.jp.Hl.Example")
    assert str(reply.q.qname) == "P1234-IPAD12.Tokyo.OCN.ne.jp.Hl.Example."


@pytest.mark.parametrize("literal", ["192.0.2.1", "[192.0.2.1]", "[ipv6:2001:db8::1]"])
def test_address_literals_get_rule_0_only_when_turned_on(literal: str) -> None:
    responder, _ = make(ip_literal_names=True)
    reply = ask(responder, f"{literal}.{HL}")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.4"]


def test_longest_name_that_fits_is_judged() -> None:
    responder, _ = make()
    labels = ["dhcp1"] + ["a" * 60] * 3 + ["b" * 40]
    name = ".".join(labels) + "." + HL
    assert len(name) < 254
    reply = ask(responder, name)
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.2"]
