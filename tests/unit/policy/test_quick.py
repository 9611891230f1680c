"""Clients' verdicts remembered by the listener, and the quick path: requests about a client
found unlisted answered before they are parsed, exactly as the full path answers and counts them;
both forgotten when the verdict could change."""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from s25rbl.config import LearningSettings, PolicySettings
from s25rbl.errors import PolicyRequestError
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.policy import quick
from s25rbl.policy.counters import PolicyCounters
from s25rbl.policy.handler import DUNNO_ANSWER, PolicyHandler
from s25rbl.policy.protocol import MAX_ATTRIBUTES, MAX_REQUEST, Framer, answer, parse_attributes
from s25rbl.policy.state import PolicyState
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.service.policy import PolicyStore
from s25rbl.store.db import Store
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.model import Code, Step, Verdict
from s25rbl.verdict.pipeline import VerdictEngine
from tests.support.clock import FakeClock
from tests.unit.fakes import DictResolver

CLEAN = ("198.51.100.8", "mail.example.org")
DYNAMIC = ("198.51.100.7", "p1234-ipad12.tokyo.ocn.ne.jp")  # S25R rule 1
WHITE = "198.51.100.20"  # whitelisted by address: no lookup
WHITE_ID = 7


def request(ip: str = CLEAN[0], stage: str = "RCPT", **more: str) -> bytes:
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": stage,
        "client_address": ip,
        "helo_name": "helo.example.org",
        "sender": "alice@example.com",
        "recipient": "bob@example.org",
        "instance": "0123456789ab",
        **more,
    }
    return "".join(f"{k}={v}\n" for k, v in attributes.items()).encode() + b"\n"


@dataclass
class Node:
    handler: PolicyHandler
    clock: FakeClock
    hits: dict[int, int]
    lists: list[ListIndex]

    def full(self, data: bytes) -> bytes:
        """``data`` answered the full way (framed, parsed, judged), as the listener does."""
        answers = b""
        try:
            blocks = Framer().feed(data)
        except PolicyRequestError as exc:  # oversize: answered, then the connection is closed
            return answer(self.handler.bad_request(exc, "127.0.0.1"))
        for block in blocks:
            try:
                result = self.handler.handle(parse_attributes(block), "127.0.0.1")
            except PolicyRequestError as exc:  # as the listener answers it
                result = self.handler.bad_request(exc, "127.0.0.1")
            assert isinstance(result, str), "every verdict of these tests is cached"
            answers += answer(result)
        return answers

    def listener(self, data: bytes) -> bytes:
        """``data`` answered as the listener answers one read: the quick path first."""
        return self.handler.quick(data) or self.full(data)

    def whitelist(self, *entries: EntryRow) -> None:
        self.lists[0] = ListIndex.build(list(entries))


Make = Callable[[], Awaitable[Node]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    made: list[ReverseLookup] = []

    async def build() -> Node:
        clock = FakeClock()
        dns = DictResolver()
        for ip, name in (CLEAN, DYNAMIC):
            dns.ptr(ip, name).host(name, ip)
        rdns = ReverseLookup(dns, deadline=0.5, clock=clock)
        made.append(rdns)
        current = [
            ListIndex.build([EntryRow(WHITE_ID, ListName.WHITE, EntryKind.IP, WHITE, EntrySource.MANUAL)])
        ]
        engine = VerdictEngine(lambda: current[0], rdns, clock=clock)
        store = PolicyStore(
            Store(f"sqlite:///{tmp_path / 'unused.db'}"),  # never opened: nothing here writes
            clock,
            LearningSettings(),
            learn_after=2,
            retry_window=86400,
            changed=_nothing,
        )
        state = PolicyState(store, clock, tarpit=10, max_tarpits=5, cache_size=100)
        # Mode s25r: a listed client is answered from its verdict alone (450), no store needed;
        # what the quick path answers, the unlisted clients, is the same in every mode.
        handler = PolicyHandler(engine, state, PolicySettings(mode="s25r"), clock, PolicyCounters())
        for ip in (CLEAN[0], DYNAMIC[0]):
            await engine.decide(ipaddress.ip_address(ip))  # the verdicts cached, as after a first query
        hits, _last = engine.hits.tables()
        return Node(handler, clock, hits, current)

    yield build
    for rdns in made:
        await rdns.close()


async def _nothing() -> None:
    return None


# Requests about an unlisted client that the full path answers DUNNO, each for its own reason;
# the quick path must give the same answers and the same counts for every one of them.
VARIANTS: dict[str, bytes] = {
    "rcpt": request(),
    "data": request(stage="DATA"),
    "end of message": request(stage="END-OF-MESSAGE"),
    "connect": request(stage="connect"),
    "made-up stage": request(stage="X" * 40),
    "no stage": request().replace(b"protocol_state=RCPT\n", b""),
    "authenticated": request(sasl_username="alice"),
    "first line": f"client_address={CLEAN[0]}\n".encode()
    + request().replace(f"client_address={CLEAN[0]}\n".encode(), b""),
    "another request kind": request(request="junk"),
    "a long instance": request(instance="i" * 65),
    "an empty name": request(**{"": "x"}),
    "crlf": request().replace(b"\n", b"\r\n"),
    "too many lines": request(**{f"a{n}": "v" for n in range(MAX_ATTRIBUTES)}),
    "two requests": request() + request(stage="DATA"),
    "over 64 KiB": request(x="a" * MAX_REQUEST),
    "an empty line first": b"\n" + request(),
    # a later duplicate wins, in both paths
    "the listed client later": request().replace(b"\n\n", f"\nclient_address={DYNAMIC[0]}\n\n".encode()),
    "the unlisted client later": request(DYNAMIC[0]).replace(
        b"\n\n", f"\nclient_address={CLEAN[0]}\n\n".encode()
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
async def test_the_quick_path_answers_and_counts_as_the_full_path(make: Make, name: str) -> None:
    data = VARIANTS[name]
    quick_node, full_node = await make(), await make()
    for node in (quick_node, full_node):
        node.full(request())  # the client is seen once, the full way: found unlisted
    assert quick_node.listener(data) == full_node.full(data)
    assert quick_node.handler.counters == full_node.handler.counters


async def test_a_request_about_a_known_unlisted_client_is_answered_without_parsing(make: Make) -> None:
    node = await make()
    assert node.handler.quick(request()) is None  # not seen yet
    node.full(request())
    assert node.handler.quick(request()) == DUNNO_ANSWER
    assert node.handler.quick(request(stage="DATA")) == DUNNO_ANSWER
    assert node.handler.quick(request(DYNAMIC[0])) is None  # listed: never remembered
    node.full(request(DYNAMIC[0]))
    assert node.handler.quick(request(DYNAMIC[0])) is None
    assert node.handler.counters.requests[("RCPT", "not-treated")] == 2
    assert node.handler.counters.requests[("DATA", "not-treated")] == 1


async def test_it_forgets_a_client_when_its_lookup_leaves_the_cache(make: Make) -> None:
    node = await make()
    node.full(request())
    node.clock.advance(299)  # DictResolver's TTL is 300 s
    assert node.handler.quick(request()) == DUNNO_ANSWER
    node.clock.advance(2)
    assert node.handler.quick(request()) is None
    assert len(node.handler.known) == 0


async def test_it_forgets_every_client_when_the_lists_change(make: Make) -> None:
    node = await make()
    node.full(request())
    blacklisted = EntryRow(9, ListName.BLACK, EntryKind.IP, CLEAN[0], EntrySource.MANUAL)
    node.whitelist(blacklisted)  # the operator blacklists the client
    assert node.handler.quick(request()) is None
    assert node.full(request()).startswith(b"action=450 ")  # now listed: the full path decides


async def test_a_whitelisted_client_is_counted_a_hit_of_its_entry_each_time(make: Make) -> None:
    node = await make()
    node.full(request(WHITE))
    assert node.hits[WHITE_ID] == 1
    for _ in range(3):
        assert node.handler.quick(request(WHITE)) == DUNNO_ANSWER
    assert node.hits[WHITE_ID] == 4


def test_it_keeps_at_most_max_clients_and_no_long_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    lists = object()
    clients = quick.KnownClients(lambda: lists, lambda: 0.0, lambda _match: None)
    verdict = Verdict(Code.NOT_LISTED, Step.CLEAN, "192.0.2.1")
    monkeypatch.setattr(quick, "MAX_CLIENTS", 50)
    for n in range(120):
        clients.remember(f"192.0.2.{n}", 10.0, verdict)
        assert len(clients) <= 50
    assert clients.verdict("192.0.2.119") is verdict  # the newest stay, the oldest went
    assert clients.verdict("192.0.2.0") is None
    clients.remember("x" * (quick.MAX_KEY + 1), 10.0, verdict)
    clients.remember("192.0.2.ü", 10.0, verdict)
    assert all(len(key) <= quick.MAX_KEY and key.isascii() for key in clients.remembered())
    before = len(clients)
    clients.remember("192.0.2.250", None, verdict)  # a verdict not to be reused
    assert len(clients) == before


def test_a_flood_of_listed_clients_leaves_the_unlisted_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    lists = object()
    clients = quick.KnownClients(lambda: lists, lambda: 0.0, lambda _match: None)
    monkeypatch.setattr(quick, "MAX_LISTED", 40)
    clean = Verdict(Code.NOT_LISTED, Step.CLEAN, CLEAN[0])
    clients.remember(CLEAN[0], 10.0, clean)
    for n in range(1000):  # a botnet's addresses, or a /64's without a PTR
        address = f"2001:db8::{n:x}"
        clients.remember(address, 10.0, Verdict(Code.NO_RDNS, Step.NO_CONFIRMED_NAME, address))
    assert len(clients) <= 41
    assert clients.verdict(CLEAN[0]) is clean
    assert clients.stage(request()) == "RCPT"


async def test_a_listed_clients_next_requests_take_its_remembered_verdict(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await make()
    assert node.full(request(DYNAMIC[0])).startswith(b"action=450 ")
    judged: list[object] = []
    monkeypatch.setattr(node.handler.engine, "decide_fast", judged.append)  # None: no verdict
    for _ in range(2):  # answered from the remembered verdict (a lookup would not be str)
        assert node.full(request(DYNAMIC[0])).startswith(b"action=450 ")
        assert node.full(request(DYNAMIC[0], "DATA")) == DUNNO_ANSWER  # mode s25r: RCPT only
    assert judged == []  # never judged again
    node.clock.advance(301)  # the lookup left the cache (DictResolver's TTL is 300 s)
    waits = node.handler.handle(parse_attributes(request(DYNAMIC[0])[:-2]), "-")
    assert inspect.iscoroutine(waits)  # judged again (here: as if it needed a lookup)
    waits.close()
    assert len(judged) == 1


async def test_a_listed_clients_remembered_verdict_goes_when_the_lists_change(make: Make) -> None:
    node = await make()
    assert node.full(request(DYNAMIC[0])).startswith(b"action=450 ")
    node.whitelist(EntryRow(WHITE_ID, ListName.WHITE, EntryKind.IP, DYNAMIC[0], EntrySource.MANUAL))
    assert node.full(request(DYNAMIC[0])) == DUNNO_ANSWER
    assert node.hits[WHITE_ID] == 1
    assert node.handler.quick(request(DYNAMIC[0])) == DUNNO_ANSWER  # now remembered as unlisted
    assert node.hits[WHITE_ID] == 2


async def test_a_blacklisted_clients_entry_is_counted_a_hit_each_time(make: Make) -> None:
    node = await make()
    node.whitelist(EntryRow(8, ListName.BLACK, EntryKind.IP, CLEAN[0], EntrySource.MANUAL))
    for n in range(1, 4):
        assert node.full(request()).startswith(b"action=450 ")
        assert node.hits[8] == n
