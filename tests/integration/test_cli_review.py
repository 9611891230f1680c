"""Reviewing without curl: ``s25rbl learned``, ``suggestions`` and ``audit`` on the store of a
running server, locally (``--config``) and through its API (``--api URL --token``); every write
goes through the services and is audited with its actor."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from s25rbl.clock import SystemClock
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.service import Services
from s25rbl.store.db import Store
from s25rbl.store.learning import SuggestionRepository
from tests.integration.api_client import Api
from tests.integration.api_client import make_token as token
from tests.integration.server import RunningServer

LEARNED = ("192.0.2.41", "192.0.2.42", "2001:db8::43")
POOLS = ("pool.isp-a.example", "pool.isp-b.example")
Run = Callable[..., subprocess.CompletedProcess[str]]


async def seed(database_url: str) -> None:
    """What the learning loop would have left: learned addresses and open pool suggestions."""
    store = Store(database_url)
    try:
        svc = Services(store, SystemClock())
        specs = [(EntrySpec(ListName.WHITE, EntryKind.IP, ip, "retried"), None) for ip in LEARNED]
        await svc.lists.add(specs, actor="learning", source=EntrySource.LEARNED)
        async with store.transaction() as session:
            for n, domain in enumerate(POOLS):
                evidence = {"addresses": [f"198.51.100.{n}{i}" for i in range(3)], "address_count": 3}
                await SuggestionRepository(session).upsert(domain, json.dumps(evidence), datetime.now(UTC))
    finally:
        await store.close()


def runner(server: RunningServer, mode: str) -> tuple[Run, str]:
    """The CLI in ``mode`` and the actor its writes are recorded with."""
    if mode == "local":
        return server.cli, "cli"
    assert server.api is not None
    url = f"http://{server.api[0]}:{server.api[1]}"
    admin = token(server, "reviewer", "admin")

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return server.cli(*args, "--api", url, "--token", admin)

    return remote, "token:reviewer"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_review_learned_suggestions_and_audit(server: RunningServer, database_url: str, mode: str) -> None:
    asyncio.run(seed(database_url))
    cli, actor = runner(server, mode)

    table = ok(cli("learned", "list"))
    assert table.splitlines()[0].split() == [
        "ID",
        "ADDRESS",
        "LEARNED",
        "EXPIRES",
        "REPORTS",
        "PASSES",
        "REASON",
    ]
    assert all(ip in table for ip in LEARNED)
    items = json.loads(ok(cli("learned", "list", "--json", "--limit", "2")))
    assert [e["value"] for e in items] == list(LEARNED[:2])
    assert {"evidence", "passes", "source"} <= set(items[0]) and items[0]["source"] == "learned"

    assert ok(cli("learned", "revoke", LEARNED[0], "--reason", "shared NAT")) == f"{LEARNED[0]}: revoked\n"
    assert "forbidden to learn" in ok(cli("learned", "forbid", LEARNED[1], "203.0.113.9", "--reason", "spam"))
    left = json.loads(ok(cli("learned", "list", "--json")))
    assert [e["value"] for e in left] == [LEARNED[2]]
    forbidden = ok(cli("learned", "forbidden"))
    assert LEARNED[1] in forbidden and "203.0.113.9" in forbidden and actor in forbidden
    missing = cli("learned", "revoke", "198.51.100.250")
    assert missing.returncode == 1 and "not a learned address" in missing.stderr

    listed = ok(cli("suggestions", "list", "--status", "open"))
    assert listed.splitlines()[0].split() == ["ID", "STATUS", "SUGGESTED", "ADDRESSES", "ENTRY", "DOMAIN"]
    ids = {s["domain"]: s["id"] for s in json.loads(ok(cli("suggestions", "list", "--json")))}
    assert set(ids) == set(POOLS)
    approved = ok(cli("suggestions", "approve", str(ids[POOLS[0]])))
    assert f"whitelist domain {POOLS[0]}" in approved
    assert ok(cli("suggestions", "reject", str(ids[POOLS[1]]))).endswith(f"rejected: {POOLS[1]}\n")
    again = cli("suggestions", "approve", str(ids[POOLS[1]]))
    assert again.returncode == 1 and "already rejected" in again.stderr
    assert ok(cli("suggestions", "list", "--status", "open")) == "no suggestions\n"
    whitelisted = json.loads(ok(cli("entries", "list", "--list", "white", "--kind", "domain", "--json")))
    assert POOLS[0] in [e["value"] for e in whitelisted]

    events = json.loads(ok(cli("audit", "--actor", actor, "--json")))
    done = [(e["action"], e["target"]) for e in events]
    assert done == [
        ("learned.revoke", LEARNED[0]),
        ("learned.revoke", LEARNED[1]),
        ("learned.forbid", LEARNED[1]),
        ("learned.forbid", "203.0.113.9"),
        ("suggestion.approve", POOLS[0]),
        ("suggestion.reject", POOLS[1]),
    ]
    assert events[0]["detail"] == "shared NAT"
    first = cli("audit", "--actor", actor, "--limit", "2")
    assert len(ok(first).splitlines()) == 3 and "more events follow" in first.stderr
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert ok(cli("audit", "--since", later)) == "no audit events\n"
    assert "learning" in ok(cli("audit", "--since", "1h"))  # the seeded entries, by their actor
    bad = cli("audit", "--since", "last week")
    assert bad.returncode == 2 and "--since: 'last week' is not an age" in bad.stderr


def test_remote_review_needs_the_scopes_the_api_asks_for(server: RunningServer) -> None:
    assert server.api is not None
    url = f"http://{server.api[0]}:{server.api[1]}"
    reader = token(server, "viewer", "read")
    assert ok(server.cli("learned", "list", "--api", url, "--token", reader)) == "no learned addresses\n"
    for args in (("audit",), ("learned", "forbid", "192.0.2.7")):
        refused = server.cli(*args, "--api", url, "--token", reader)
        assert refused.returncode == 1 and "403" in refused.stderr, refused.stderr
    audit = ok(server.cli("audit", "--json"))  # locally: the store's own log, no token
    assert all(e["target"] != "192.0.2.7" for e in json.loads(audit))


def test_the_audit_api_takes_the_cli_filters(server: RunningServer) -> None:
    assert server.api is not None
    admin = Api(*server.api, token=token(server, "root", "admin"))
    assert ok(server.cli("token", "create", "--name", "other", "--scope", "read"))
    mine = admin.get("/v1/audit?actor=cli&since=1h").json["items"]
    assert [(e["action"], e["target"]) for e in mine] == [("token.create", "root"), ("token.create", "other")]
    assert admin.get("/v1/audit?actor=token:nobody").json["items"] == []
    assert admin.get("/v1/audit?since=2999-01-01").json["items"] == []
    bad = admin.get("/v1/audit?since=tomorrow")
    assert bad.status == 422 and bad.content_type == "application/problem+json"
    assert bad.json["errors"][0]["field"] == "since"
