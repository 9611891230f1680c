"""The starter whitelist kept current, on a real SQLite file and a real PostgreSQL with the real
migrations: a store that s25rbl 0.1.0 set up (its 34 entries, one removed by the operator, one
new domain already added by the operator) upgraded by this release gets exactly the entries new
to it; removals stick; two nodes starting at once add each entry once; a damaged shipped file
stops a start with the line at fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select

from s25rbl.cli import main
from s25rbl.errors import StarterFormatError
from s25rbl.lists import starter as starter_module
from s25rbl.lists.starter import STARTER_FILE, load_starter
from s25rbl.lists.values import EntryKind, EntrySource, ListName
from s25rbl.service.starter import offer_starter
from s25rbl.store.db import Store, migrate
from s25rbl.store.models import AuditEvent, Entry, Meta, StarterOffer
from s25rbl.store.starter import StarterRepository
from tests.support.clock import FakeClock

OLD_REVISION = "0003"  # the newest schema s25rbl 0.1.0 knew
ENTRIES = load_starter()
ORIGINAL = [e for e in ENTRIES if e.since == "0.1.0"]
NEW = [e for e in ENTRIES if e.since != "0.1.0"]
NEW_RELEASES = sorted({e.since for e in NEW})
REMOVED = "mixi.jp"  # a 0.1.0 entry the operator removed
OPERATOR_WHITE = "qq.com"  # new in 0.2.0; the operator whitelisted it by hand before upgrading
OPERATOR_BLACK = "slack.com"  # new in 0.2.0; the operator blacklisted it
THEN = datetime(2025, 6, 1, tzinfo=UTC)


def test_the_scenario_uses_real_entries() -> None:
    assert len(ORIGINAL) == 34 and NEW_RELEASES == ["0.2.0"]
    assert REMOVED in {e.domain for e in ORIGINAL}
    assert {OPERATOR_WHITE, OPERATOR_BLACK} <= {e.domain for e in NEW}


def _entry_row(value: str, list_: ListName, source: EntrySource, reason: str, creator: str) -> dict[str, Any]:
    # The columns 0.1.0 had: no starter_release.
    return {
        "list": list_,
        "kind": EntryKind.DOMAIN,
        "value": value,
        "reason": reason,
        "source": source,
        "created_at": THEN,
        "updated_at": THEN,
        "created_by": creator,
        "hit_count": 0,
    }


async def set_up_by_0_1_0(url: str) -> None:
    """What s25rbl 0.1.0 left in a store (its schema, its 34 entries and its mark), then the
    operator's changes before the upgrade."""
    await asyncio.to_thread(migrate, url, OLD_REVISION)
    store = Store(url)
    try:
        async with store.transaction() as session:
            rows = [
                _entry_row(e.domain, ListName.WHITE, EntrySource.BUILTIN, e.reason, "s25rbl")
                for e in ORIGINAL
            ]
            await session.execute(insert(Entry), rows)
            await session.execute(
                insert(Meta).values(key="builtin_whitelist_loaded_at", value=THEN.isoformat())
            )
        async with store.transaction() as session:
            await session.execute(delete(Entry).where(Entry.value == REMOVED))
            await session.execute(
                insert(Entry),
                [
                    _entry_row(OPERATOR_WHITE, ListName.WHITE, EntrySource.MANUAL, "our partner", "cli"),
                    _entry_row(OPERATOR_BLACK, ListName.BLACK, EntrySource.MANUAL, "not here", "cli"),
                ],
            )
    finally:
        await store.close()


class Cli:
    """The real ``s25rbl`` command on the test's store, run to the end or only started."""

    def __init__(self, home: Path, database_url: str) -> None:
        passed = {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_") or k == "PYTHONPATH"}
        self.env = {
            **passed,
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "S25RBL_DATABASE__URL": database_url,
            "S25RBL_RESOLVER__UPSTREAMS": "127.0.0.1:9",
        }

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "s25rbl", *args]
        return subprocess.run(command, capture_output=True, text=True, env={**self.env, **env}, timeout=120)

    def start(self, *args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "s25rbl", *args]
        return subprocess.Popen(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    return Cli(tmp_path, database_url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


async def state(store: Store) -> dict[str, Any]:
    """Every domain entry as (list, value, source, starter_release), the audit's starter lines
    and the offers, as the store holds them."""
    async with store.transaction() as session:
        entries = (
            await session.execute(
                select(Entry.list, Entry.value, Entry.source, Entry.starter_release).where(
                    Entry.kind == EntryKind.DOMAIN
                )
            )
        ).all()
        audit = (
            await session.execute(
                select(AuditEvent.target, AuditEvent.detail).where(AuditEvent.action == "starter.add")
            )
        ).all()
        offers = (await session.execute(select(StarterOffer.domain, StarterOffer.outcome))).all()
    return {
        "entries": sorted((str(r[0]), r[1], str(r[2]), r[3]) for r in entries),
        "audit": sorted((r[0], r[1]) for r in audit),
        "offers": dict((r[0], r[1]) for r in offers),
    }


def expected_after_upgrade() -> dict[str, Any]:
    keep = [e for e in ORIGINAL if e.domain != REMOVED]
    added = [e for e in NEW if e.domain not in (OPERATOR_WHITE, OPERATOR_BLACK)]
    entries: list[tuple[str, str, str, str | None]] = [("white", e.domain, "builtin", "0.1.0") for e in keep]
    entries += [("white", e.domain, "builtin", e.since) for e in added]
    entries += [("white", OPERATOR_WHITE, "manual", None), ("black", OPERATOR_BLACK, "manual", None)]
    offers = {e.domain: "earlier" for e in ORIGINAL}
    offers |= {e.domain: "added" for e in added}
    offers |= {OPERATOR_WHITE: "present", OPERATOR_BLACK: "present"}
    return {
        "entries": sorted(entries),
        "audit": sorted(
            [
                ("0.1.0", f"starter 0.1.0: 0 added, {len(ORIGINAL)} loaded earlier"),
                ("0.2.0", f"starter 0.2.0: {len(added)} added, 2 already present"),
            ]
        ),
        "offers": offers,
    }


async def test_an_upgraded_0_1_0_store_gets_exactly_the_new_entries(
    database_url: str, cli: Cli, store: Store
) -> None:
    await set_up_by_0_1_0(database_url)
    upgraded = cli("migrate")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"starter 0.2.0: {len(NEW) - 2} added, 2 already present" in upgraded.stderr  # logged
    after = await state(store)
    assert after == expected_after_upgrade()
    again = cli("migrate")  # the next start: nothing new, nothing written
    assert again.returncode == 0, again.stderr
    assert "starter" not in again.stderr
    assert await state(store) == after


async def test_the_cli_and_the_json_show_which_release_added_each_entry(database_url: str, cli: Cli) -> None:
    await set_up_by_0_1_0(database_url)
    assert cli("migrate").returncode == 0
    listed = json.loads(cli("entries", "list", "--source", "builtin", "--json").stdout)
    assert {e["value"]: e["starter_release"] for e in listed} == {
        e.domain: e.since for e in ENTRIES if e.domain not in (REMOVED, OPERATOR_WHITE, OPERATOR_BLACK)
    }
    new = cli("entries", "list", "--source", "builtin", "--starter-release", "0.2.0")
    lines = new.stdout.splitlines()
    assert len(lines) == len(NEW) - 2
    assert all(" builtin@0.2.0 " in line for line in lines)
    manual = json.loads(cli("entries", "list", "--source", "manual", "--json").stdout)
    assert [e["starter_release"] for e in manual] == [None, None]
    bad = cli("entries", "list", "--starter-release", "latest")
    assert bad.returncode == 2
    assert "--starter-release: 'latest' is not a release number like 0.2.0" in bad.stderr


async def test_an_entry_removed_after_the_upgrade_stays_removed(cli: Cli, store: Store) -> None:
    assert cli("migrate").returncode == 0  # a new store: every entry, each tagged with its release
    listed = json.loads(cli("entries", "list", "--source", "builtin", "--json").stdout)
    assert sorted(e["value"] for e in listed) == sorted(e.domain for e in ENTRIES)
    zendesk = next(e for e in listed if e["value"] == "zdsys.com")
    assert zendesk["starter_release"] == "0.2.0"
    assert cli("entries", "remove", str(zendesk["id"])).returncode == 0
    assert cli("migrate").returncode == 0
    assert cli("entries", "list", "--search", "zdsys.com", "--json").stdout.strip() == "[]"
    assert (await state(store))["offers"]["zdsys.com"] == "added"  # offered once, for good


async def test_builtin_whitelist_false_means_none_until_it_is_turned_on(cli: Cli, store: Store) -> None:
    off = cli("migrate", S25RBL_LISTS__BUILTIN_WHITELIST="false")
    assert off.returncode == 0, off.stderr
    assert await state(store) == {"entries": [], "audit": [], "offers": {}}
    assert cli("entries", "list", "--json", S25RBL_LISTS__BUILTIN_WHITELIST="false").stdout.strip() == "[]"
    assert cli("migrate").returncode == 0
    assert len((await state(store))["entries"]) == len(ENTRIES)


async def test_two_nodes_upgrading_at_once_add_each_entry_once(
    database_url: str, cli: Cli, store: Store
) -> None:
    await set_up_by_0_1_0(database_url)
    # Both migrate from the old schema and offer the new entries at the same time.
    nodes = [cli.start("migrate") for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=120)
        assert node.returncode == 0, err
        assert "Traceback" not in err
    assert await state(store) == expected_after_upgrade()  # one audit line per release, too


def test_migrations_started_at_once_run_one_after_the_other(database_url: str) -> None:
    # Without the migration lock, SQLite deadlocks or refuses ("database is locked") and
    # PostgreSQL runs the same DDL twice ("column ... already exists").
    migrate(database_url, OLD_REVISION)
    code = f"from s25rbl.store.db import migrate; migrate({database_url!r})"
    env = {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_") or k == "PYTHONPATH"}
    started = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for process in started:
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for other in started:
                other.kill()
            raise AssertionError("a migration hung") from None
        assert process.returncode == 0, err


async def test_a_node_finding_the_offers_taken_by_another_waits_and_adds_nothing(
    database_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(migrate, database_url)
    clock = FakeClock()
    reached = asyncio.Event()
    claim = StarterRepository.claim

    async def noted(self: StarterRepository, offers: Any, now: datetime) -> set[str]:
        reached.set()
        return await claim(self, offers, now)

    other = Store(database_url)
    try:
        async with store.transaction() as session:  # the first node, not yet committed
            assert len(
                await StarterRepository(session).claim(((e.domain, e.since) for e in ENTRIES), clock.now())
            ) == len(ENTRIES)
            monkeypatch.setattr(StarterRepository, "claim", noted)
            second = asyncio.create_task(offer_starter(other, clock))
            await asyncio.wait_for(reached.wait(), 30)  # it read "nothing offered" and is claiming
        assert await asyncio.wait_for(second, 30) == {}
    finally:
        await other.close()
    after = await state(store)
    assert after["entries"] == [] and after["audit"] == []  # the second node added nothing


async def test_the_store_counts_each_new_release_once(store: Store, database_url: str) -> None:
    # A later release that ships one more entry: only that one is added, audited under its release.
    await asyncio.to_thread(migrate, database_url)
    clock = FakeClock()
    assert await offer_starter(store, clock) == {"0.1.0": len(ORIGINAL), "0.2.0": len(NEW)}
    later = starter_module.parse_starter(
        "## Later\nexample-sender.net\t0.3.0\tA sender a later release adds\t\n", "later.tsv"
    )
    assert await offer_starter(store, clock, [*ENTRIES, *later]) == {"0.3.0": 1}
    assert await offer_starter(store, clock, [*ENTRIES, *later]) == {}
    async with store.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(Entry).where(Entry.starter_release == "0.3.0")
        )
    assert count == 1
    assert ("0.3.0", "starter 0.3.0: 1 added") in (await state(store))["audit"]


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_a_damaged_shipped_file_stops_the_start_naming_its_line(
    command: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damaged = tmp_path / "shipped"
    damaged.mkdir()
    (damaged / STARTER_FILE).write_text("# header\n## Group\nexample.com\t0.2.0\tno example column\n")

    class Shipped:
        @staticmethod
        def files(package: str) -> Path:
            return damaged

    monkeypatch.setattr(starter_module, "resources", Shipped)
    monkeypatch.setenv("S25RBL_DATABASE__URL", database_url)
    monkeypatch.setenv("S25RBL_DNS__LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("S25RBL_API__LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main([command]) == 1
    err = capsys.readouterr().err
    assert f"the starter whitelist shipped with s25rbl ({damaged / STARTER_FILE}), line 3:" in err
    assert "expected 4 TAB-separated columns" in err
    assert "reinstall s25rbl, or set lists.builtin_whitelist = false" in err
    assert "Traceback" not in err
    with pytest.raises(StarterFormatError):
        starter_module.load_starter()
