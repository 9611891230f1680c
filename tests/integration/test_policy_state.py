"""The policy handler and state on a real store (SQLite file and PostgreSQL, real migrations):
the modes end to end as Postfix would ask, two nodes on one store agreeing, learning through
the learning rules, dry run, fail-open and an operator's deletions. Time is a fake clock;
lookups come from a dict resolver."""

from __future__ import annotations

import asyncio
import ipaddress
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from s25rbl.config import LearningSettings, PolicySettings
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.node.sync import ListSync
from s25rbl.policy.decide import Outcome
from s25rbl.policy.handler import PolicyHandler
from s25rbl.policy.state import PolicyState
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.service import Services
from s25rbl.service.policy import PolicyReads, TripletWrite
from s25rbl.store import driver
from s25rbl.store.db import Store, migrate
from s25rbl.store.driver import SLICE
from s25rbl.store.entries import EntryRepository
from s25rbl.store.models import AuditEvent, Entry, GreylistTriplet, PolicyPass, TarpitRecord
from s25rbl.verdict.pipeline import VerdictEngine
from tests.support.clock import FakeClock
from tests.unit.fakes import DictResolver

DYNAMIC = ("198.51.100.7", "p1234-ipad12.tokyo.ocn.ne.jp")  # S25R rule 1
NO_NAME = "198.51.100.9"  # rule 0: no PTR
SPAMMER = ("198.51.100.11", "mx.spam.example.com")  # a clean name in a blacklisted domain
CLEAN = ("198.51.100.8", "mail.example.org")
TARPIT, DELAY = 10, 60
SETTINGS = PolicySettings(
    tarpit=TARPIT,
    delay=DELAY,
    retry_window=3600,
    max_age=86400,
    learn_after=2,
    max_tarpits=5,
    cache_size=1000,
)


def resolver() -> DictResolver:
    dns = DictResolver()
    for ip, name in (DYNAMIC, SPAMMER, CLEAN):
        dns.ptr(ip, name).host(name, ip)
    return dns


@dataclass
class Node:
    """One s25rbl node's policy service, without the sockets."""

    services: Services
    lists: ListSync
    state: PolicyState
    handler: PolicyHandler

    async def ask(
        self,
        stage: str,
        ip: str,
        instance: str,
        *,
        sender: str = "alice@example.com",
        recipient: str = "bob@example.org",
        **more: str,
    ) -> str:
        attributes = {
            "request": "smtpd_access_policy",
            "protocol_state": stage,
            "client_address": ip,
            "instance": instance,
            "sender": sender,
            "recipient": recipient,
            **more,
        }
        answer = self.handler.handle(attributes, "127.0.0.1")
        return answer if isinstance(answer, str) else await answer

    async def session(self, ip: str, instance: str, *, hang_up: bool = False, **more: str) -> list[str]:
        """A whole SMTP transaction as Postfix reports it: two recipients, DATA, end of message;
        with ``hang_up`` the client leaves during the first RCPT's tarpit."""
        answers = [await self.ask("RCPT", ip, instance, **more)]
        if hang_up:
            return answers
        answers.append(await self.ask("RCPT", ip, instance, recipient="carol@example.org", **more))
        answers.append(await self.ask("DATA", ip, instance, recipient="", **more))
        answers.append(await self.ask("END-OF-MESSAGE", ip, instance, recipient="", **more))
        return answers


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate, database_url)
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_node(store: Store, clock: FakeClock) -> AsyncIterator[NodeFactory]:
    made: list[ReverseLookup] = []
    reads: list[PolicyReads] = []

    async def make(**changes: Any) -> Node:
        settings = replace(SETTINGS, **changes)
        lists = ListSync(store, clock, 1.0)
        await lists.reload()
        rdns = ReverseLookup(resolver(), deadline=0.5)
        made.append(rdns)
        engine = VerdictEngine(lists.current, rdns, clock=clock)
        services = Services(store, clock, LearningSettings(), changed=lists.reload, policy_settings=settings)
        reads.append(PolicyReads(store))  # a node's own read path, as serve builds it
        state = PolicyState(
            services.policy,
            clock,
            tarpit=settings.tarpit,
            max_tarpits=settings.max_tarpits,
            cache_size=1000,
            reads=reads[-1],
        )
        return Node(services, lists, state, PolicyHandler(engine, state, settings, clock))

    yield make
    for rdns in made:
        await rdns.close()
    for direct in reads:
        direct.close()


async def rows(store: Store, model: Any) -> list[Any]:
    async with store.transaction() as session:
        return list((await session.execute(select(model).order_by(model.id))).scalars().all())


async def learned(store: Store) -> list[str]:
    return [e.value for e in await rows(store, Entry) if e.source is EntrySource.LEARNED]


# --- the modes -----------------------------------------------------------------------------


async def test_a_patient_sender_is_tarpitted_once_a_session_and_learned_after_two_deliveries(
    make_node: NodeFactory, store: Store, clock: FakeClock
) -> None:
    node = await make_node()
    ip = DYNAMIC[0]
    assert await node.session(ip, "s1") == [f"SLEEP {TARPIT}", "DUNNO", "DUNNO", "DUNNO"]
    assert await node.state.flush()
    assert await learned(store) == []
    clock.advance(600)
    assert await node.session(ip, "s2") == [f"SLEEP {TARPIT}", "DUNNO", "DUNNO", "DUNNO"]  # tarpitted again
    assert await node.state.flush()
    assert await learned(store) == [ip]
    entry = next(e for e in await rows(store, Entry) if e.value == ip)
    assert entry.reason.startswith("learned: 2 policy passes from <alice@example.com>"), entry.reason
    assert [(a.action, a.target) for a in await rows(store, AuditEvent)] == [("learned", ip)]
    passes = await rows(store, PolicyPass)
    assert [(p.kind, p.instance, p.client_name, p.learned_at is not None) for p in passes] == [
        ("tarpit", "s1", DYNAMIC[1], True),
        ("tarpit", "s2", DYNAMIC[1], True),
    ]
    tarpits = await rows(store, TarpitRecord)
    assert [(t.instance, t.survived_at is not None, t.delivered_at is not None) for t in tarpits] == [
        ("s1", True, True),
        ("s2", True, True),
    ]
    # The node that learned it reloaded its lists: the next session meets no tarpit.
    assert await node.session(ip, "s3") == ["DUNNO"] * 4
    assert node.handler.counters.tarpits["delivered"] == 2


@pytest.mark.parametrize("mode", ["starpit", "targrey"])
async def test_data_alone_is_no_pass_a_delivered_message_is(
    make_node: NodeFactory, store: Store, mode: str
) -> None:
    # A bot can pipeline MAIL, RCPT and DATA and leave: Postfix still runs the DATA
    # restrictions after the SLEEP. Only a message sent after the tarpit is a pass.
    node = await make_node(mode=mode)
    ip = DYNAMIC[0]
    assert await node.ask("RCPT", ip, "s1") == f"SLEEP {TARPIT}"
    assert await node.ask("DATA", ip, "s1") == "DUNNO"
    assert await node.state.flush()
    assert await rows(store, PolicyPass) == []
    assert (await rows(store, TarpitRecord))[0].survived_at is not None
    assert node.handler.counters.tarpits["survived"] == 1


async def test_a_client_that_hung_up_on_one_node_is_greylisted_on_another_and_passes_after_the_delay(
    make_node: NodeFactory, store: Store, clock: FakeClock
) -> None:
    mx1, mx2 = await make_node(), await make_node()
    ip = DYNAMIC[0]
    assert await mx1.session(ip, "s1", hang_up=True) == [f"SLEEP {TARPIT}"]
    assert await mx1.state.flush()
    clock.advance(TARPIT + TARPIT + 1)  # the tarpit and its grace are over: it hung up
    deferred = await mx2.ask("RCPT", ip, "s2")
    assert deferred == "DEFER_IF_PERMIT 4.7.1 S25R check, be patient [r1]"
    clock.advance(DELAY)  # counted from the tarpitted attempt
    assert await mx2.session(ip, "s3") == [
        "DUNNO",
        "DEFER_IF_PERMIT 4.7.1 S25R check, be patient [r1]",
        "DUNNO",
        "DUNNO",
    ]
    assert await mx2.state.flush()
    passes = await rows(store, PolicyPass)
    assert [(p.kind, p.instance) for p in passes] == [("greylist", "s3")]
    triplets = await rows(store, GreylistTriplet)
    assert [(t.recipient, t.passed_at is not None) for t in triplets] == [
        ("bob@example.org", True),
        ("carol@example.org", False),  # the second recipient is a triplet of its own
    ]
    # mx1 still remembers its own tarpit: the triplet that passed on mx2 passes there too.
    assert await mx1.ask("RCPT", ip, "s4") == "DUNNO"


async def test_a_triplet_is_created_once_and_passes_once_when_two_nodes_see_it_at_the_same_moment(
    make_node: NodeFactory, store: Store, clock: FakeClock
) -> None:
    mx1, mx2 = await make_node(mode="rgrey"), await make_node(mode="rgrey")
    ip = DYNAMIC[0]
    first = list(await asyncio.gather(mx1.ask("RCPT", ip, "a1"), mx2.ask("RCPT", ip, "b1")))
    assert first == ["DEFER_IF_PERMIT 4.7.1 S25R check, be patient [r1]"] * 2
    await asyncio.gather(mx1.state.flush(), mx2.state.flush())
    assert len(await rows(store, GreylistTriplet)) == 1
    clock.advance(DELAY)
    retried = list(await asyncio.gather(mx1.ask("RCPT", ip, "a2"), mx2.ask("RCPT", ip, "b2")))
    assert retried == ["DUNNO", "DUNNO"]
    await asyncio.gather(mx1.state.flush(), mx2.state.flush())
    assert len(await rows(store, PolicyPass)) == 1  # one pass, whichever node recorded it
    assert await learned(store) == []


@pytest.mark.parametrize(
    ("client", "teaches"),
    [(DYNAMIC[0], True), (NO_NAME, True), (SPAMMER[0], False), ("127.0.0.2", False)],
    ids=["s25r-rule", "no-reverse-name", "operator-blacklist", "rfc5782-test-entry"],
)
async def test_only_clients_s25rbl_lists_by_its_rules_are_learned_from_passes(
    make_node: NodeFactory, store: Store, clock: FakeClock, client: str, teaches: bool
) -> None:
    async with store.transaction() as session:
        spec = EntrySpec(ListName.BLACK, EntryKind.DOMAIN, "spam.example.com", "test")
        await EntryRepository(session).add(spec, source=EntrySource.MANUAL, creator="test", now=clock.now())
    node = await make_node(mode="rgrey")
    for n in range(3):
        assert (await node.ask("RCPT", client, f"first{n}", sender=f"s{n}@example.com")).startswith("DEFER")
    clock.advance(DELAY)
    for n in range(3):
        assert await node.ask("RCPT", client, f"retry{n}", sender=f"s{n}@example.com") == "DUNNO"
    assert await node.state.flush()
    assert (await learned(store) == [client]) is teaches
    passes = await rows(store, PolicyPass)
    assert len(passes) == (3 if teaches else 0)
    # The third came after the second taught it: used up too, so that it does not count
    # towards learning the address again after a revocation.
    assert all(p.learned_at is not None for p in passes)


async def test_a_batch_larger_than_one_insert_statement_keeps_every_row(
    make_node: NodeFactory, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inserts go to the driver in slices of SLICE rows: a batch of several slices stores every
    triplet of it, once, its date-times as the store reads them back (the driver's own text of
    them on SQLite, checked against SQLAlchemy's reading)."""
    node = await make_node(mode="rgrey")
    calls: list[int] = []
    insert = driver.insert_ignoring

    async def counted(connection: Any, table: Any, keys: Any, rows: Any) -> None:
        calls.append(len(rows))
        await insert(connection, table, keys, rows)

    monkeypatch.setattr(driver, "insert_ignoring", counted)
    count = SLICE * 2 + 7
    for n in range(count):
        await node.ask("RCPT", DYNAMIC[0], f"s{n}", recipient=f"rcpt{n}@example.test")
    assert node.state.queued == count  # one batch
    await node.state.flush()
    stored = await rows(store, GreylistTriplet)
    assert sorted(t.recipient for t in stored) == sorted(f"rcpt{n}@example.test" for n in range(count))
    assert calls == [count]  # through the driver, in slices of SLICE
    assert {(t.first_seen, t.last_seen, t.passed_at) for t in stored} == {(clock.now(), clock.now(), None)}
    # Stored as SQLAlchemy stores them (on SQLite: the same text), so that the database's own
    # comparisons (expiry, resets) find them.
    at = GreylistTriplet.first_seen == clock.now(), GreylistTriplet.last_seen == clock.now()
    async with store.transaction() as session:
        assert await session.scalar(select(func.count()).where(*at)) == count


async def test_the_driver_takes_rows_in_any_key_order_and_fills_plain_defaults(store: Store) -> None:
    """Rows go to the driver by column name, whatever their keys' order; a column a row leaves
    out gets its plain default, as through SQLAlchemy; a duplicate leaves the first row be."""
    at = datetime(2026, 7, 4, 23, 59, 1, 123456, tzinfo=UTC)
    records = [
        {"started_at": at, "instance": "i1", "client_ip": "192.0.2.1"},
        {"started_at": at + timedelta(seconds=1), "instance": "i2", "client_ip": "192.0.2.1"},
        {"started_at": at + timedelta(seconds=2), "instance": "i1", "client_ip": "192.0.2.1"},
    ]
    async with store.transaction() as session:
        table = typing.cast(Table, TarpitRecord.__table__)
        await driver.insert_ignoring(await session.connection(), table, ["client_ip", "instance"], records)
    stored = sorted((r.instance, r.started_at, r.client_name, r.mta) for r in await rows(store, TarpitRecord))
    assert stored == [("i1", at, "", ""), ("i2", at + timedelta(seconds=1), "", "")]
    with pytest.raises(ValueError, match="naive"):
        driver.sqlite_text(at.replace(tzinfo=None))


async def test_a_revoked_address_needs_learn_after_new_passes(
    make_node: NodeFactory, store: Store, clock: FakeClock
) -> None:
    node = await make_node()
    ip = DYNAMIC[0]
    for instance in ("s1", "s2"):
        await node.session(ip, instance)
        clock.advance(600)
    await node.state.flush()
    assert await learned(store) == [ip]
    await node.services.learning.revoke(ip, actor="test")
    await node.session(ip, "s3")
    await node.state.flush()
    assert await learned(store) == []  # the passes that taught it once do not count again
    clock.advance(600)
    await node.session(ip, "s4")
    await node.state.flush()
    assert await learned(store) == [ip]


async def test_a_forbidden_address_is_never_learned_from_passes(
    make_node: NodeFactory, store: Store, clock: FakeClock
) -> None:
    node = await make_node()
    ip = DYNAMIC[0]
    await node.services.learning.revoke(ip, actor="test", forbid=True, reason="known spammer")
    for instance in ("s1", "s2", "s3"):
        assert (await node.session(ip, instance))[0] == f"SLEEP {TARPIT}"
        clock.advance(600)
    await node.state.flush()
    assert await learned(store) == []


# --- dry run, fail-open, deletions -------------------------------------------------------------


async def test_a_dry_run_answers_dunno_but_records_and_counts_its_decisions(
    make_node: NodeFactory, store: Store
) -> None:
    node = await make_node(dry_run=True)
    assert await node.session(DYNAMIC[0], "s1") == ["DUNNO"] * 4
    assert await node.state.flush()
    assert [t.instance for t in await rows(store, TarpitRecord)] == ["s1"]
    assert await rows(store, PolicyPass) == []  # nobody waited: nothing to learn
    counters = node.handler.counters
    assert counters.tarpits["started"] == 1 and counters.dry_run == 1


async def test_a_store_that_is_down_gets_dunno_and_keeps_the_writes(clock: FakeClock) -> None:
    store = Store("postgresql://nobody@127.0.0.1:1/nothing")  # nothing listens there
    lists = ListSync(store, clock, 1.0)
    rdns = ReverseLookup(resolver(), deadline=0.5)
    try:
        engine = VerdictEngine(lists.current, rdns, clock=clock)
        services = Services(store, clock, LearningSettings(), policy_settings=SETTINGS)
        reads = PolicyReads(store)
        state = PolicyState(services.policy, clock, tarpit=TARPIT, max_tarpits=5, cache_size=100, reads=reads)
        node = Node(services, lists, state, PolicyHandler(engine, state, SETTINGS, clock))
        assert await node.ask("RCPT", DYNAMIC[0], "s1") == "DUNNO"
        assert node.handler.counters.requests[("RCPT", Outcome.FAIL_OPEN.value)] == 1
        assert await node.ask("RCPT", CLEAN[0], "s2") == "DUNNO"  # memory only: unaffected
        state.write(TripletWrite("touch", "0" * 32, clock.now().timestamp()))
        assert not await state.flush()
        assert state.queued == 1  # kept for when the store is back
        reads.close()
    finally:
        await rdns.close()
        await store.close()


async def test_an_unreadable_sqlite_store_fails_open_without_waiting(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'not-migrated.db'}")  # no tables: every read fails
    rdns = ReverseLookup(resolver(), deadline=0.5)
    reads = PolicyReads(store)
    try:
        services = Services(store, clock, LearningSettings(), policy_settings=SETTINGS)
        state = PolicyState(services.policy, clock, tarpit=TARPIT, max_tarpits=5, cache_size=100, reads=reads)
        assert state.reads_now  # SQLite: read by plain calls, in the request's own step
        handler = PolicyHandler(
            VerdictEngine(ListSync(store, clock, 1.0).current, rdns, clock=clock), state, SETTINGS, clock
        )
        await handler.engine.decide(ipaddress.ip_address(DYNAMIC[0]))  # the verdict cached
        answer = handler.handle(
            {"protocol_state": "RCPT", "client_address": DYNAMIC[0], "instance": "s1"}, "mx"
        )
        assert answer == "DUNNO"  # a plain string: answered at once
        assert handler.counters.requests[("RCPT", Outcome.FAIL_OPEN.value)] == 1
    finally:
        reads.close()
        await rdns.close()
        await store.close()


async def test_an_operators_deletion_makes_every_node_forget_the_triplet(
    make_node: NodeFactory, store: Store, clock: FakeClock
) -> None:
    mx1, mx2 = await make_node(mode="rgrey"), await make_node(mode="rgrey")
    ip = DYNAMIC[0]
    for node in (mx1, mx2):
        await node.state.poll_generation()
    assert (await mx1.ask("RCPT", ip, "s1")).startswith("DEFER")
    await mx1.state.flush()
    clock.advance(DELAY)
    assert await mx2.ask("RCPT", ip, "s2") == "DUNNO"  # mx2 read it: passed now
    await mx2.state.flush()
    (triplet,) = await rows(store, GreylistTriplet)
    await mx1.services.policy.delete_triplet(triplet.id, actor="token:ops")
    assert [await node.state.poll_generation() for node in (mx1, mx2)] == [True, True]
    for node, instance in ((mx1, "s3"), (mx2, "s4")):
        assert (await node.ask("RCPT", ip, instance)).startswith("DEFER"), "a first attempt again"
    audit = [(a.action, a.actor) for a in await rows(store, AuditEvent)]
    assert ("greylist.delete", "token:ops") in audit
