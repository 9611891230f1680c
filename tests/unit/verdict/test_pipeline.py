"""The verdict order of product §4: the first step that decides wins."""

from __future__ import annotations

import ipaddress

import pytest

from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.resolve.codec import LookupStatus
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.model import Code, Step, WhitelistCode
from s25rbl.verdict.pipeline import VerdictEngine
from tests.unit.fakes import DictResolver

W, B = ListName.WHITE, ListName.BLACK
DYN = "p1234-ipad12.tokyo.ocn.ne.jp"  # rule 1
IP = "203.0.113.7"


def entry(
    n: int, list_: ListName, kind: EntryKind, value: str, source: EntrySource = EntrySource.MANUAL
) -> EntryRow:
    return EntryRow(n, list_, kind, value, source)


def engine_for(entries: list[EntryRow], resolver: DictResolver) -> VerdictEngine:
    index = ListIndex.build(entries)
    return VerdictEngine(lambda: index, ReverseLookup(resolver, deadline=0.5), tempfail_ttl=30)


def dynamic() -> DictResolver:
    return DictResolver().ptr(IP, DYN).host(DYN, IP)


# (id, entries, resolver, expected code, expected step)
ORDER = [
    (
        "1-whitelist-ip-beats-blacklist-ip",
        [entry(1, B, EntryKind.IP, IP), entry(2, W, EntryKind.IP, IP)],
        dynamic(),
        Code.NOT_LISTED,
        Step.WHITELIST_ADDRESS,
    ),
    (
        "1-whitelist-cidr-beats-rules",
        [entry(1, W, EntryKind.CIDR, "203.0.113.0/24")],
        dynamic(),
        Code.NOT_LISTED,
        Step.WHITELIST_ADDRESS,
    ),
    (
        "2-blacklist-cidr-beats-learned",
        [entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED), entry(2, B, EntryKind.CIDR, "203.0.0.0/16")],
        dynamic(),
        Code.BLACKLIST,
        Step.BLACKLIST_ADDRESS,
    ),
    (
        "3-learned-beats-lookup",
        [entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED)],
        DictResolver().fail(IP, LookupStatus.TIMEOUT),
        Code.NOT_LISTED,
        Step.LEARNED,
    ),
    (
        "3-learned-loses-to-blacklist-domain",
        [entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED), entry(2, B, EntryKind.DOMAIN, "ocn.ne.jp")],
        dynamic(),
        Code.BLACKLIST,
        Step.BLACKLIST_NAME,
    ),
    (
        "3-learned-loses-to-blacklist-hostname",
        [entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED), entry(2, B, EntryKind.HOSTNAME, DYN)],
        dynamic(),
        Code.BLACKLIST,
        Step.BLACKLIST_NAME,
    ),
    (
        "3-learned-loses-to-blacklist-regex",
        [entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED), entry(2, B, EntryKind.REGEX, r"\.ocn\.ne\.jp$")],
        dynamic(),
        Code.BLACKLIST,
        Step.BLACKLIST_NAME,
    ),
    (
        "3-learned-loses-to-blacklist-of-a-claimed-name",
        [
            entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED),
            entry(2, B, EntryKind.DOMAIN, "dip.t-dialin.net"),
        ],
        DictResolver().ptr(IP, "pd9e.dip.t-dialin.net"),
        Code.BLACKLIST,
        Step.BLACKLIST_NAME,
    ),
    (
        "3-learned-beats-rules-when-no-blacklist-entry-matches",
        [entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED), entry(2, B, EntryKind.DOMAIN, "other.example")],
        dynamic(),
        Code.NOT_LISTED,
        Step.LEARNED,
    ),
    (
        "3-learned-stands-when-the-lookup-fails-for-now",
        [entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED), entry(2, B, EntryKind.DOMAIN, "ocn.ne.jp")],
        DictResolver().fail(IP, LookupStatus.TIMEOUT),
        Code.NOT_LISTED,
        Step.LEARNED,
    ),
    (
        "3-learned-and-whitelist-name-beat-blacklist-name",
        [
            entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED),
            entry(2, B, EntryKind.DOMAIN, "ocn.ne.jp"),
            entry(3, W, EntryKind.HOSTNAME, DYN),
        ],
        dynamic(),
        Code.NOT_LISTED,
        Step.LEARNED,
    ),
    (
        "4-tempfail-ptr-servfail",
        [],
        DictResolver().fail(IP, LookupStatus.SERVFAIL),
        Code.TEMPFAIL,
        Step.RDNS_TEMPFAIL,
    ),
    (
        "4-tempfail-ptr-timeout",
        [],
        DictResolver().fail(IP, LookupStatus.TIMEOUT),
        Code.TEMPFAIL,
        Step.RDNS_TEMPFAIL,
    ),
    (
        "4-tempfail-forward-only-name",
        [],
        DictResolver().ptr(IP, DYN).fail(DYN, LookupStatus.SERVFAIL),
        Code.TEMPFAIL,
        Step.RDNS_TEMPFAIL,
    ),
    (
        "5-whitelist-domain-on-confirmed-name",
        [entry(1, W, EntryKind.DOMAIN, "ocn.ne.jp")],
        dynamic(),
        Code.NOT_LISTED,
        Step.WHITELIST_NAME,
    ),
    (
        "5-whitelist-hostname",
        [entry(1, W, EntryKind.HOSTNAME, DYN)],
        dynamic(),
        Code.NOT_LISTED,
        Step.WHITELIST_NAME,
    ),
    (
        "5-whitelist-regex",
        [entry(1, W, EntryKind.REGEX, r"\.tokyo\.ocn\.ne\.jp$")],
        dynamic(),
        Code.NOT_LISTED,
        Step.WHITELIST_NAME,
    ),
    (
        "5-whitelist-ignores-unconfirmed-name",
        [entry(1, W, EntryKind.DOMAIN, "ocn.ne.jp")],
        DictResolver().ptr(IP, DYN).host(DYN, "192.0.2.1"),
        Code.NO_RDNS,
        Step.NO_CONFIRMED_NAME,
    ),
    (
        "5-whitelist-beats-blacklist-name",
        [entry(1, B, EntryKind.DOMAIN, "ocn.ne.jp"), entry(2, W, EntryKind.HOSTNAME, DYN)],
        dynamic(),
        Code.NOT_LISTED,
        Step.WHITELIST_NAME,
    ),
    (
        "6-blacklist-domain",
        [entry(1, B, EntryKind.DOMAIN, "ne.jp")],
        dynamic(),
        Code.BLACKLIST,
        Step.BLACKLIST_NAME,
    ),
    (
        "6-blacklist-regex-on-clean-name",
        [entry(1, B, EntryKind.REGEX, r"^mail\.spammy\.")],
        DictResolver().ptr(IP, "mail.spammy.example").host("mail.spammy.example", IP),
        Code.BLACKLIST,
        Step.BLACKLIST_NAME,
    ),
    (
        "6-blacklist-claimed-name-counts",
        [entry(1, B, EntryKind.DOMAIN, "dip.t-dialin.net")],
        DictResolver().ptr(IP, "pd9e.dip.t-dialin.net"),
        Code.BLACKLIST,
        Step.BLACKLIST_NAME,
    ),
    ("7-no-ptr", [], DictResolver(), Code.NO_RDNS, Step.NO_CONFIRMED_NAME),
    (
        "7-ptr-does-not-confirm",
        [],
        DictResolver().ptr(IP, "mail.example.org").host("mail.example.org", "192.0.2.1"),
        Code.NO_RDNS,
        Step.NO_CONFIRMED_NAME,
    ),
    (
        "7-ptr-name-nxdomain",
        [],
        DictResolver().ptr(IP, "gone.example.org"),
        Code.NO_RDNS,
        Step.NO_CONFIRMED_NAME,
    ),
    ("8-s25r-rule", [], dynamic(), Code.S25R, Step.S25R_RULE),
    (
        "8-operator-rule",
        [entry(1, B, EntryKind.RULE, r"^mx[0-9]+\.cheap-vps\.")],
        DictResolver().ptr(IP, "mx7.cheap-vps.example").host("mx7.cheap-vps.example", IP),
        Code.S25R,
        Step.S25R_RULE,
    ),
    (
        "8-one-clean-confirmed-name-is-enough",
        [],
        DictResolver().ptr(IP, DYN, "mail.example.org").host(DYN, IP).host("mail.example.org", IP),
        Code.NOT_LISTED,
        Step.CLEAN,
    ),
    (
        "9-clean",
        [],
        DictResolver().ptr(IP, "mail.example.org").host("mail.example.org", IP),
        Code.NOT_LISTED,
        Step.CLEAN,
    ),
    (
        "9-unconfirmed-dynamic-name-plus-confirmed-clean",
        [],
        DictResolver().ptr(IP, DYN, "mail.example.org").host("mail.example.org", IP),
        Code.NOT_LISTED,
        Step.CLEAN,
    ),
]


@pytest.mark.parametrize(
    ("entries", "resolver", "code", "step"), [o[1:] for o in ORDER], ids=[o[0] for o in ORDER]
)
async def test_first_deciding_step_wins(
    entries: list[EntryRow], resolver: DictResolver, code: Code, step: Step
) -> None:
    verdict = await engine_for(entries, resolver).decide(ipaddress.ip_address(IP))
    assert (verdict.code, verdict.step) == (code, step)


async def test_s25r_verdict_names_the_rule_and_the_confirmed_name() -> None:
    verdict = await engine_for([], dynamic()).decide(ipaddress.ip_address(IP))
    assert verdict.rule == "r1"
    assert verdict.txt == "S25R check, be patient [r1]"
    assert verdict.rdns is not None and verdict.rdns.confirmed == (DYN,)


async def test_ipv6_client_is_confirmed_with_aaaa() -> None:
    name = "dhcp7.example.net"
    resolver = DictResolver().ptr("2001:db8::7", name).host(name, "2001:db8::7")
    verdict = await engine_for([], resolver).decide(ipaddress.ip_address("2001:db8::7"))
    assert verdict.code is Code.S25R and verdict.rule == "r6"


async def test_address_steps_need_no_lookup() -> None:
    resolver = DictResolver()
    engine = engine_for([entry(1, B, EntryKind.IP, IP)], resolver)
    assert engine.decide_fast(ipaddress.ip_address(IP)) is not None
    assert resolver.calls == []


@pytest.mark.parametrize(
    "blacklist",
    [
        entry(2, B, EntryKind.DOMAIN, "ocn.ne.jp"),
        entry(2, B, EntryKind.HOSTNAME, DYN),
        entry(2, B, EntryKind.REGEX, r"^p[0-9]+-ipad"),
    ],
    ids=["domain", "hostname", "regex"],
)
async def test_the_responder_path_never_lets_a_learned_address_past_a_name_blacklist(
    blacklist: EntryRow,
) -> None:
    # The responder asks decide_fast, then decide_after_lists: the learned address must not
    # be decided before the names are known, and neither zone may whitelist it.
    engine = engine_for([entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED), blacklist], dynamic())
    ip = ipaddress.ip_address(IP)
    assert engine.decide_fast(ip) is None
    verdict = await engine.decide_after_lists(ip)
    assert (verdict.code, verdict.step) == (Code.BLACKLIST, Step.BLACKLIST_NAME)
    assert verdict.whitelist is WhitelistCode.NOT_LISTED
    cached = engine.decide_fast(ip)  # the lookup is cached now: decided without waiting
    assert cached is not None and cached.code is Code.BLACKLIST


async def test_a_learned_address_needs_no_lookup_while_no_name_is_blacklisted() -> None:
    resolver = dynamic()
    engine = engine_for([entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED)], resolver)
    verdict = engine.decide_fast(ipaddress.ip_address(IP))
    assert verdict is not None and verdict.step is Step.LEARNED
    assert verdict.whitelist is WhitelistCode.LEARNED
    assert resolver.calls == []


async def test_ignoring_learned_gives_the_verdict_learning_judges_by() -> None:
    engine = engine_for([entry(1, W, EntryKind.IP, IP, EntrySource.LEARNED)], dynamic())
    verdict = await engine.decide(ipaddress.ip_address(IP), ignore_learned=True)
    assert (verdict.code, verdict.step) == (Code.S25R, Step.S25R_RULE)


async def test_deadline_turns_a_slow_upstream_into_tempfail() -> None:
    resolver = dynamic()
    resolver.delay = 2.0
    index = ListIndex.build([])
    engine = VerdictEngine(lambda: index, ReverseLookup(resolver, deadline=0.1), tempfail_ttl=30)
    verdict = await engine.decide(ipaddress.ip_address(IP))
    assert verdict.code is Code.TEMPFAIL
    assert verdict.ttl == 30
    assert verdict.rdns is not None and "deadline" in verdict.rdns.notes[0]


async def test_hits_are_counted_in_memory_per_entry() -> None:
    engine = engine_for([entry(9, B, EntryKind.IP, IP)], DictResolver())
    for _ in range(3):
        await engine.decide(ipaddress.ip_address(IP))
    hits = engine.hits.take()
    assert hits[9][0] == 3
    assert engine.hits.take() == {}
