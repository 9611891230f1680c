"""Learning trusts what s25rbl saw itself (product §5), on a real store with the real migrations.

Retries count by when s25rbl received a report; only an address s25rbl itself lists (.2, .4)
is learned; pools are judged by s25rbl's own confirmed names and suggested as narrowly as
they are; a revoked address starts its count afresh; nothing in a report fails its batch; a
report costs the same however many are stored; reporters and addresses are rate-limited.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select

from s25rbl.config import LearningSettings
from s25rbl.errors import ReportsLimited
from s25rbl.learning.ingest import CHUNK, Learner
from s25rbl.learning.judge import Listing
from s25rbl.learning.limits import ReportLimits
from s25rbl.learning.pools import POOL_ROWS
from s25rbl.lists.values import EntryKind, EntrySource, ListName
from s25rbl.service import Services
from s25rbl.store.db import Store, migrate
from s25rbl.store.learning import SuggestionRepository
from s25rbl.store.models import Entry, Report
from s25rbl.verdict.model import Code, Step
from tests.support.clock import FakeClock
from tests.support.judges import BLACKLISTED, CLEAN, NO_NAME, TEMPFAIL, TEST_ENTRY, DictJudge, by_rule

SETTINGS = LearningSettings()  # 60 s, 48 h, 2 retries
IP = "192.0.2.7"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate, database_url)
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


def report(
    ip: str = IP, *, key: str, clock: FakeClock, minutes_ago: float = 0, fields: dict[str, str] | None = None
) -> dict[str, str]:
    body = {
        "client_ip": ip,
        "client_name": "mx7.shop.example",
        "helo": "mx7.shop.example",
        "sender": "news@shop.example",
        "recipient": "alice@example.org",
        "time": (clock.now() - timedelta(minutes=minutes_ago)).isoformat(),
        "idempotency_key": key,
    }
    return {**body, **(fields or {})}


async def learned(store: Store) -> list[str]:
    async with store.transaction() as session:
        rows = await session.execute(select(Entry.value).where(Entry.source == EntrySource.LEARNED))
        return sorted(rows.scalars().all())


async def three_attempts(
    learner: Learner, store: Store, clock: FakeClock, ip: str = IP, *, prefix: str = "a"
) -> list[str]:
    """An attempt and two retries, ten minutes apart as s25rbl receives them: what is learned."""
    got: list[str] = []
    for n in range(3):
        result = await learner.ingest(store, [report(ip, key=f"{prefix}{n}", clock=clock)], "mx1")
        got += result.learned
        clock.advance(600)
    return got


# --- retries count by when s25rbl received them -----------------------------------------------


async def test_backdated_times_in_one_batch_are_one_attempt(store: Store) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock, judge=DictJudge())
    batch = [report(key=f"b{n}", minutes_ago=m, clock=clock) for n, m in enumerate((40, 25, 10))]
    result = await learner.ingest(store, batch, "mx1")
    assert result.accepted == 3 and result.learned == []
    assert await learned(store) == []


@pytest.mark.parametrize("retries", [1, 2])
async def test_with_no_minimum_interval_one_batch_is_still_one_attempt(store: Store, retries: int) -> None:
    clock = FakeClock()
    settings = replace(SETTINGS, min_interval=0, retries=retries)
    learner = Learner(settings, clock, judge=DictJudge())
    result = await learner.ingest(store, [report(key=f"z{n}", clock=clock) for n in range(3)], "mx1")
    assert result.accepted == 3 and result.learned == []
    for n in range(retries):  # each later batch is one retry, however soon it comes
        clock.advance(0.001)
        result = await learner.ingest(store, [report(key=f"y{n}", clock=clock)], "mx1")
    assert result.learned == [IP]


async def test_properly_spaced_claims_sent_in_quick_succession_do_not_count(store: Store) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock, judge=DictJudge())
    for n, minutes in enumerate((40, 25, 10)):
        await learner.ingest(store, [report(key=f"q{n}", minutes_ago=minutes, clock=clock)], "mx1")
        clock.advance(5)  # received 5 s apart, whatever they claim
    assert await learned(store) == []


async def test_the_claimed_time_is_kept_as_evidence(store: Store) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock, judge=DictJudge())
    await learner.ingest(store, [report(key="e", minutes_ago=30, clock=clock)], "mx1")
    async with store.transaction() as session:
        row = (await session.execute(select(Report))).scalar_one()
    assert row.received_at == clock.now()
    assert row.reported_at == clock.now() - timedelta(minutes=30)


# --- only an address s25rbl lists itself is learned --------------------------------------------

LISTINGS = [
    ("listed-by-a-rule-on-its-confirmed-name", by_rule("p1234-ipad12.tokyo.ocn.ne.jp"), True),
    ("listed-for-no-confirmed-name", NO_NAME, True),
    ("not-listed-a-clean-mail-server", CLEAN, False),
    ("operator-blacklist-wins", BLACKLISTED, False),
    ("lookup-failed-for-now", TEMPFAIL, False),
    ("rfc5782-test-entry", TEST_ENTRY, False),
]


@pytest.mark.parametrize(("listing", "learns"), [c[1:] for c in LISTINGS], ids=[c[0] for c in LISTINGS])
async def test_only_an_address_s25rbl_lists_itself_is_learned(
    store: Store, listing: Listing, learns: bool
) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock, judge=DictJudge({IP: listing}))
    assert await three_attempts(learner, store, clock) == ([IP] if learns else [])
    async with store.transaction() as session:
        rows = (await session.execute(select(Report.code, Report.counts))).all()
    assert rows == [(int(listing.code), learns)] * 3  # every report kept as evidence


async def test_without_a_judge_reports_are_evidence_and_nothing_is_learned(store: Store) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock)  # a store-only caller: no verdict engine
    assert await three_attempts(learner, store, clock) == []
    async with store.transaction() as session:
        assert (await session.execute(select(func.count()).select_from(Report))).scalar_one() == 3


async def test_an_attempt_while_the_address_was_not_listed_does_not_count(store: Store) -> None:
    clock = FakeClock()
    judge = DictJudge({IP: NO_NAME})
    learner = Learner(SETTINGS, clock, judge=judge)
    got = []
    for n, listing in enumerate((NO_NAME, NO_NAME, TEMPFAIL, NO_NAME)):
        judge.listings[IP] = listing
        got.append((await learner.ingest(store, [report(key=f"t{n}", clock=clock)], "mx1")).learned)
        clock.advance(600)
    assert got == [[], [], [], [IP]]  # the third did not count; the fourth is the second retry


# --- pools: s25rbl's own names, as narrow as they are ----------------------------------------------


async def pool_batches(
    learner: Learner,
    store: Store,
    clock: FakeClock,
    addresses: list[str],
    fields: dict[str, str] | None = None,
) -> list[str]:
    suggested: list[str] = []
    for ip in addresses:
        result = await learner.ingest(
            store, [report(ip, key=f"p{ip}{fields}", clock=clock, fields=fields)], "mx1"
        )
        suggested += result.suggested
        clock.advance(600)
    return suggested


async def test_invented_client_names_never_open_a_suggestion(store: Store) -> None:
    clock = FakeClock()
    addresses = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    # s25rbl finds no confirmed name for these addresses; the reporter says they are Gmail's.
    learner = Learner(SETTINGS, clock, judge=DictJudge())
    for n, ip in enumerate(addresses):
        fields = {"client_name": f"mail-yw1-f{n}.google.com", "helo": "mail-yw1-f1.google.com"}
        await learner.ingest(store, [report(ip, key=f"g{n}", clock=clock, fields=fields)], "mx1")
        clock.advance(600)
    async with store.transaction() as session:
        assert list(await SuggestionRepository(session).search(None)) == []


async def test_the_names_a_pool_is_judged_by_are_s25rbls_own(store: Store) -> None:
    clock = FakeClock()
    judge = DictJudge()
    addresses = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    for n, ip in enumerate(addresses):
        judge.name(ip, f"c-73-1-2-{n}.hsd1.ca.comcast.net")
    learner = Learner(SETTINGS, clock, judge=judge)
    suggested = await pool_batches(learner, store, clock, addresses, {"client_name": "mx1.gmail.com"})
    assert suggested == ["hsd1.ca.comcast.net"]


async def test_auto_approve_never_approves_a_pool_whose_names_look_dynamic(store: Store) -> None:
    clock = FakeClock()
    judge = DictJudge()
    bots = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    for n, ip in enumerate(bots):
        judge.name(ip, f"c-73-1-2-{n}.hsd1.ca.comcast.net")  # rule 1
    # A bulk sender's relays that only an operator rule lists: names S25R's rules let pass.
    relays = ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
    for n, ip in enumerate(relays):
        judge.listings[ip] = Listing(Code.S25R, Step.S25R_RULE, (f"mta{n}.out.bulkmail.example",))
    learner = Learner(replace(SETTINGS, auto_approve_pools=True), clock, judge=judge)
    assert await pool_batches(learner, store, clock, bots) == ["hsd1.ca.comcast.net"]
    assert await pool_batches(learner, store, clock, relays, {"recipient": "bob@example.org"}) == [
        "out.bulkmail.example"
    ]
    async with store.transaction() as session:
        decided = {s.domain: s.status for s in await SuggestionRepository(session).search(None)}
        domains = (
            await session.execute(
                select(Entry.value).where(Entry.list == ListName.WHITE, Entry.kind == EntryKind.DOMAIN)
            )
        ).scalars()
        assert set(domains) == {"out.bulkmail.example"}
    assert decided == {"hsd1.ca.comcast.net": "open", "out.bulkmail.example": "approved"}


async def test_auto_approve_never_widens_past_names_no_entry_may_hold(store: Store) -> None:
    # Relays whose names sit under a label with a space in it (\032): the pool's own domain
    # cannot be an entry, and its parent would whitelist more than the pool. The reports are
    # taken, and nothing is suggested or approved.
    clock = FakeClock()
    judge = DictJudge()
    relays = ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
    for n, ip in enumerate(relays):
        judge.listings[ip] = Listing(Code.S25R, Step.S25R_RULE, (f"mta{n}.out\\032mail.bulkmail.example",))
    learner = Learner(replace(SETTINGS, auto_approve_pools=True), clock, judge=judge)
    assert await pool_batches(learner, store, clock, relays) == []
    async with store.transaction() as session:
        assert list(await SuggestionRepository(session).search(None)) == []
        whitelisted = (
            await session.execute(select(Entry.value).where(Entry.list == ListName.WHITE))
        ).scalars()
        assert list(whitelisted) == []
        reports = await session.scalar(select(func.count()).select_from(Report))
    assert reports == len(relays)


# --- revoking starts the count afresh ---------------------------------------------------------------


async def test_revoking_a_learned_address_starts_its_count_afresh(store: Store) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock, judge=DictJudge())
    assert await three_attempts(learner, store, clock, prefix="a") == [IP]
    await Services(store, clock, SETTINGS, learner=learner).learning.revoke(IP, actor="ops")
    assert await learned(store) == []
    # The window's earlier reports no longer count: one more attempt learns nothing ...
    again = await learner.ingest(store, [report(key="b0", clock=clock)], "mx1")
    assert again.learned == []
    # ... two proper retries after it do, as for any address.
    clock.advance(600)
    assert (await learner.ingest(store, [report(key="b1", clock=clock)], "mx1")).learned == []
    clock.advance(600)
    assert (await learner.ingest(store, [report(key="b2", clock=clock)], "mx1")).learned == [IP]


# --- nothing in a report fails its batch -------------------------------------------------------------

BAD = [
    ("time-past-year-9999-in-utc", {"time": "9999-12-31T23:59:59-23:59"}, "time"),
    ("time-before-year-1-in-utc", {"time": "0001-01-01T00:00:00+23:59"}, "time"),
    ("time-not-a-date", {"time": "yesterday"}, "time"),
    ("lone-surrogate-in-sender", {"sender": "a\ud800@b.example"}, "sender"),
    ("lone-surrogate-in-helo", {"helo": "\udfff"}, "helo"),
    ("lone-surrogate-in-client-name", {"client_name": "x\ud800"}, "client_name"),
    ("lone-surrogate-in-key", {"idempotency_key": "\ud800"}, "idempotency_key"),
    ("nul-in-recipient", {"recipient": "a\x00@b.example"}, "recipient"),
    ("client-ip-not-a-string", {"client_ip": 7}, "client_ip"),
    ("huge-number-for-time", {"time": 10**5000}, "time"),
    ("unknown-field-with-a-lone-surrogate", {"\ud800": "x"}, "\ud800"),
]


@pytest.mark.parametrize(("fields", "field"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_a_bad_report_refuses_only_itself(store: Store, fields: dict[str, Any], field: str) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock, judge=DictJudge())
    batch: list[Any] = [report(key="g1", clock=clock), {**report(key="bad", clock=clock), **fields}]
    batch.append(report(key="g2", clock=clock, fields={"recipient": "bob@example.org"}))
    result = await learner.ingest(store, batch, "mx1")
    assert (result.accepted, result.refused) == (2, 1)
    assert [(e["index"], e["field"]) for e in result.errors] == [(1, field)]


# --- rate limits ----------------------------------------------------------------------------------


async def test_a_reporter_over_its_rate_gets_retry_after_and_nothing_is_taken(store: Store) -> None:
    clock = FakeClock()
    limits = ReportLimits(per_reporter=1000, per_address=10_000, max_batch=1000, clock=clock)
    learner = Learner(SETTINGS, clock, judge=DictJudge(), limits=limits)
    batch = [report(f"192.0.2.{n % 250}", key=f"k{n}", clock=clock) for n in range(1000)]
    assert (await learner.ingest(store, batch, "mx1")).accepted == 1000
    more = [report(key=f"m{n}", clock=clock) for n in range(100)]
    with pytest.raises(ReportsLimited) as limited:
        await learner.ingest(store, more, "mx1")
    assert 5 <= limited.value.retry_after <= 6  # 100 reports at 1,000 a minute
    assert (await learner.ingest(store, more[:1], "mx2")).accepted == 1  # another reporter
    clock.advance(limited.value.retry_after)
    assert (await learner.ingest(store, more, "mx1")).accepted == 99  # m0 came from mx2 already


async def test_reports_about_one_address_beyond_its_rate_are_refused_one_by_one(store: Store) -> None:
    clock = FakeClock()
    limits = ReportLimits(per_reporter=10_000, per_address=5, max_batch=1000, clock=clock)
    learner = Learner(SETTINGS, clock, judge=DictJudge(), limits=limits)
    batch = [report(key=f"k{n}", clock=clock, fields={"recipient": f"u{n}@example.org"}) for n in range(8)]
    batch.append(report("192.0.2.8", key="other", clock=clock))
    result = await learner.ingest(store, batch, "mx1")
    assert (result.accepted, result.refused) == (6, 3)
    assert [(e["index"], e["field"], e["status"]) for e in result.errors] == [
        (5, "client_ip", 429),
        (6, "client_ip", 429),
        (7, "client_ip", 429),
    ]


# --- a report's cost ---------------------------------------------------------------------------------


@dataclass
class Work:
    """What a batch cost the store: SQL statements, rows they returned, transactions."""

    statements: int = 0
    rows: int = 0
    transactions: int = 0


async def work_for(store: Store, learner: Learner, batch: list[dict[str, str]]) -> Work:
    work = Work()

    def executed(conn: Any, cursor: Any, *_: Any) -> None:
        work.statements += 1
        # SQLAlchemy's async adapters fetch a statement's rows as it executes.
        rows = cursor._rows
        work.rows += len(rows) if rows is not None else 0

    def began(*_: Any) -> None:
        work.transactions += 1

    engine = store.engine.sync_engine
    event.listen(engine, "after_cursor_execute", executed)
    event.listen(engine, "begin", began)
    try:
        await learner.ingest(store, batch, "mx1")
    finally:
        event.remove(engine, "after_cursor_execute", executed)
        event.remove(engine, "begin", began)
    return work


async def test_a_reports_cost_does_not_grow_with_the_reports_stored(store: Store) -> None:
    clock = FakeClock()
    judge = DictJudge()
    for n in range(1, 5):
        judge.name(f"198.51.100.{n}", f"c-73-1-2-{n}.hsd1.ca.comcast.net")
    learner = Learner(SETTINGS, clock, judge=judge)

    def four(tag: str) -> list[dict[str, str]]:
        return [report(f"198.51.100.{n}", key=f"{tag}{n}", clock=clock) for n in range(1, 5)]

    for attempt in range(3):  # each address learned, the pool suggested
        await learner.ingest(store, four(f"warm{attempt}"), "mx1")
        clock.advance(600)
    assert len(await learned(store)) == 4
    few = await work_for(store, learner, four("few"))
    # 5,000 more counting reports of the same pair and pool, all within the window: what the
    # old rules loaded, and ran the public suffix list on, for every new report.
    rows = [
        {
            "idempotency_key": f"bulk{n}",
            "reported_at": clock.now() - timedelta(seconds=n),
            "received_at": clock.now() - timedelta(seconds=n),
            "reporter": "mx1",
            "client_ip": f"198.51.100.{1 + n % 4}",
            "client_name": "x",
            "helo": "x",
            "sender": "news@shop.example",
            "sender_norm": "news@shop.example",
            "recipient": "alice@example.org",
            "counts": True,
            "code": 2,
            "confirmed_name": f"c-73-1-2-{1 + n % 4}.hsd1.ca.comcast.net",
            "pool_domain": "comcast.net",
        }
        for n in range(5000)
    ]
    async with store.transaction() as session:
        await session.execute(insert(Report), rows)
    clock.advance(600)
    many = await work_for(store, learner, four("many"))
    print(f"4 reports with 16 stored: {few}; with 5,016 stored: {many}")
    assert (many.statements, many.transactions) == (few.statements, few.transactions)
    assert many.rows <= few.rows + POOL_ROWS  # one pool's most recent attempts, no more


async def test_a_big_batch_is_stored_in_short_transactions(store: Store) -> None:
    clock = FakeClock()
    learner = Learner(SETTINGS, clock, judge=DictJudge())
    batch = [
        report(f"192.0.2.{n % 250}", key=f"k{n}", clock=clock, fields={"recipient": f"u{n}@x.example"})
        for n in range(1000)
    ]
    work = await work_for(store, learner, batch)
    print(f"1,000 reports: {work}")
    assert work.transactions == 1000 // CHUNK


async def test_on_sqlite_a_bulk_writer_lets_an_open_unit_of_work_finish_first(store: Store) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL writers do not queue behind one another")
    order: list[str] = []

    async def report_chunk() -> None:
        await store.after_others(limit=30)
        order.append("report chunk")

    async with store.transaction():
        waiting = asyncio.create_task(report_chunk())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        order.append("operator's write")
    await waiting
    assert order == ["operator's write", "report chunk"]
