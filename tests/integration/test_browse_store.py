"""What the operator's page reads, on each store backend with the real migrations: keyset pages
newest first, literal case-insensitive search, evidence per page, counts per time bucket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.service import Services
from s25rbl.store import browse
from s25rbl.store.db import Store, migrate
from s25rbl.store.entries import EntryFilter
from s25rbl.store.models import AuditEvent, Report
from tests.support.clock import FakeClock

START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate, database_url)
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


def services(store: Store, clock: FakeClock | None = None) -> Services:
    return Services(store, clock or FakeClock(START))


async def add(svc: Services, *specs: tuple[str, str, str, str]) -> None:
    await svc.lists.add([(EntrySpec.build(*s), None) for s in specs], actor="token:test")


async def test_pages_newest_first_cover_every_entry_once(store: Store) -> None:
    svc = services(store)
    await add(svc, *[("black", "ip", f"192.0.2.{n}", "") for n in range(1, 24)])
    seen: list[str] = []
    before = None
    while True:
        page = await svc.browse.entries(EntryFilter(list=ListName.BLACK), before_id=before, limit=5)
        seen += [e.value for e in page.rows]
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == [f"192.0.2.{n}" for n in range(23, 0, -1)]


async def test_a_search_reads_a_window_of_rows_a_page_and_says_where_to_go_on(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browse, "DEFAULT_SEARCH_WINDOW", 10)
    monkeypatch.setattr(browse, "SEARCH_WINDOW", {})
    svc = services(store)
    # 40 entries; the matches ("relay") are #3, #4, #5, #21 and #22: none among the newest 10.
    await add(
        svc,
        *[
            ("white", "domain", f"d{n}.example", "relay" if n in (3, 4, 5, 21, 22) else "")
            for n in range(1, 41)
        ],
    )
    pages = []
    before = None
    while True:
        page = await svc.browse.entries(EntryFilter(text="relay"), before_id=before, limit=2)
        pages.append(([e.value for e in page.rows], page.window_ended))
        if page.next_before is None:
            break
        before = page.next_before
    assert pages == [
        ([], True),  # #31-#40: nothing, and the window ended: search on below #31
        (["d22.example", "d21.example"], True),  # #21-#30: both of its matches; then below #21
        ([], True),  # #11-#20: nothing
        (["d5.example", "d4.example"], False),  # #1-#10: a full page, and more below #4
        (["d3.example"], False),  # the rest, down to the first row: nothing older
    ]


# (id, search text, values found)
SEARCHES = [
    ("underscore-is-literal", "mail_1", ["mail_1.example"]),
    ("percent-is-literal", "100%", ["percent.example"]),
    ("backslash-is-literal", r"\.dyn", [r"^x\.dyn\.example$"]),
    ("case-insensitive-reason", "partner relay", ["mailx1.example"]),
    ("case-insensitive-value", "MAIL", ["mail_1.example", "mailx1.example"]),
    ("nothing", "no-such-thing", []),
]


@pytest.mark.parametrize(("text", "found"), [s[1:] for s in SEARCHES], ids=[s[0] for s in SEARCHES])
async def test_search_matches_text_literally_and_ignores_case(
    store: Store, text: str, found: list[str]
) -> None:
    svc = services(store)
    await add(
        svc,
        ("white", "hostname", "mail_1.example", ""),
        ("white", "hostname", "mailx1.example", "Partner RELAY"),
        ("white", "domain", "percent.example", "100% legitimate"),
        ("black", "regex", r"^x\.dyn\.example$", ""),
    )
    page = await svc.browse.entries(EntryFilter(text=text), before_id=None, limit=50)
    assert sorted(e.value for e in page.rows) == sorted(found) and page.next_before is None


async def test_learned_addresses_come_with_their_newest_reports_and_the_count(store: Store) -> None:
    clock = FakeClock(START)
    svc = services(store, clock)
    for ip in ("192.0.2.7", "192.0.2.8"):
        async with store.transaction() as session:
            await session.execute(
                insert(Report),
                [
                    {
                        "idempotency_key": f"{ip}-{n}",
                        "reported_at": START + timedelta(minutes=n),
                        "received_at": START + timedelta(minutes=n),
                        "reporter": "token:mx1",
                        "client_ip": ip,
                        "client_name": "unknown",
                        "helo": "",
                        "sender": f"s{n}@example.org",
                        "sender_norm": f"s{n}@example.org",
                        "recipient": "r@example.org",
                    }
                    for n in range(6)
                ],
            )
        await svc.lists.add(
            [(EntrySpec(ListName.WHITE, EntryKind.IP, ip), START + timedelta(days=35))],
            actor="learning",
            source=EntrySource.LEARNED,
        )
    await add(svc, ("white", "ip", "192.0.2.9", "manual, not learned"))
    page, evidence = await svc.browse.learned(text=None, before_id=None, limit=10, per_address=3)
    assert [e.value for e in page.rows] == ["192.0.2.8", "192.0.2.7"]
    for entry in page.rows:
        shown = evidence[entry.id]
        assert shown.total == 6
        assert [r.sender for r in shown.reports] == ["s5@example.org", "s4@example.org", "s3@example.org"]
        assert {r.client_ip for r in shown.reports} == {entry.value}


async def test_counts_per_bucket_are_half_open_and_only_of_their_kind(store: Store) -> None:
    clock = FakeClock(START)
    svc = services(store, clock)
    now = clock.now()
    day_start = now.replace(hour=0, minute=0)
    times = [day_start, day_start - timedelta(seconds=1), day_start - timedelta(days=2), now]
    async with store.transaction() as session:
        await session.execute(
            insert(AuditEvent),
            [{"at": t, "actor": "learning", "action": "learned", "target": "x", "detail": ""} for t in times]
            + [{"at": now, "actor": "token:ops", "action": "entry.add", "target": "y", "detail": ""}],
        )
    buckets = await svc.browse.per_bucket("learned", bucket=timedelta(days=1), count=4)
    assert len(buckets.edges) == 5 and buckets.edges[-1] == day_start + timedelta(days=1)
    assert list(buckets.counts) == [0, 1, 1, 2]  # 3 days ago, 2 days ago, yesterday, today


async def test_audit_pages_filter_by_action_and_text_and_list_every_action(store: Store) -> None:
    svc = services(store)
    await add(svc, ("black", "domain", "spam.example", ""), ("white", "domain", "ham.example", ""))
    rows = await svc.lists.search(EntryFilter(text="spam"))
    await svc.lists.remove(rows[0].id, actor="token:ops")
    events, actions = await svc.browse.audit(text=None, action=None, before_id=None, limit=10)
    assert [e.action for e in events.rows] == ["entry.remove", "entry.add", "entry.add"]  # newest first
    assert actions == ["entry.add", "entry.remove"]
    found, _ = await svc.browse.audit(text="SPAM", action="entry.add", before_id=None, limit=10)
    assert [e.target for e in found.rows] == [f"#{rows[0].id}"]
