"""The learning loop end to end: reports over the API, learned answers in DNS, review and undo.

Retries count by when the server receives a report (product §5), so the server here learns
quickly (``[learning] min_interval = 1`` second) and the tests send each attempt on its own,
``SPACING`` apart; a batch is received at once and is one attempt however it is dated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from tests.integration.api_client import Api
from tests.integration.api_client import make_token as token
from tests.integration.conftest import DYNAMIC
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_responder import answers, name, udp
from tests.support.fakedns import FakeAuthority

WL = "wl.s25rbl.test"
SPACING = 1.2  # seconds between attempts: more than min_interval
LEARNING = """
[learning]
min_interval = 1
"""


@pytest.fixture
def server(tmp_path: Path, upstream: FakeAuthority, database_url: str) -> Iterator[RunningServer]:
    """A node that learns quickly, on each store backend."""
    config = write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), database_url, LEARNING)
    running = start_server(config)
    try:
        yield running
    finally:
        running.stop()


def spaced(api: Api, reports: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each report in a request of its own, SPACING apart: the answers."""
    replies = []
    for n, one in enumerate(reports):
        if n:
            time.sleep(SPACING)
        reply = api.post("/v1/reports", one)
        assert reply.status == 202, reply.body
        replies.append(reply.json)
    return replies


def attempt(
    ip: str, minutes_ago: float, key: str, *, sender: str = "news@shop.example", client_name: str = "unknown"
) -> dict[str, str]:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "client_ip": ip,
        "client_name": client_name,
        "helo": client_name,
        "sender": sender,
        "recipient": "alice@example.org",
        "time": when.isoformat(),
        "idempotency_key": key,
    }


@pytest.fixture
def reporter(server: RunningServer) -> Api:
    assert server.api is not None
    return Api(*server.api, token=token(server, "mx1", "report"))


@pytest.fixture
def ops(server: RunningServer) -> Api:
    assert server.api is not None
    return Api(*server.api, token=token(server, "ops", "write"))


def test_mta_retrying_three_times_is_learned_and_its_answer_flips(
    server: RunningServer, reporter: Api
) -> None:
    ip = DYNAMIC[0]
    assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]
    replies = spaced(
        reporter,
        [
            attempt(ip, 0, "a1", sender="prvs=1a2b3c4d=news@shop.example"),
            attempt(ip, 0, "a2", sender="prvs=5e6f7a8b=news@SHOP.example"),
            attempt(ip, 0, "a3", sender="prvs=9c0d1e2f=news@shop.example"),
        ],
    )
    assert [r["accepted"] for r in replies] == [1, 1, 1]
    assert [r["learned"] for r in replies] == [[], [], [ip]]
    assert udp(server, name(ip), "A").rcode() == dns.rcode.NXDOMAIN  # at once on this node
    assert answers(udp(server, name(ip, WL), "A")) == ["127.0.0.3"]


def test_a_batch_dated_as_three_attempts_is_one_attempt(server: RunningServer, reporter: Api) -> None:
    ip = DYNAMIC[0]
    batch = [attempt(ip, 40, "d1"), attempt(ip, 25, "d2"), attempt(ip, 10, "d3")]
    reply = reporter.post("/v1/reports", {"reports": batch})
    assert reply.status == 202 and reply.json["accepted"] == 3 and reply.json["learned"] == []
    assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]


def test_a_bot_retrying_once_is_not_learned(server: RunningServer, reporter: Api) -> None:
    ip = DYNAMIC[0]
    reply = reporter.post("/v1/reports", {"reports": [attempt(ip, 20, "b1"), attempt(ip, 10, "b2")]})
    assert reply.json["learned"] == []
    assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]


def test_duplicates_are_ignored_and_refusals_explained(reporter: Api) -> None:
    first = reporter.post("/v1/reports", attempt("192.0.2.7", 5, "dup"))
    assert first.status == 202 and first.json["accepted"] == 1
    again = reporter.post("/v1/reports", {"reports": [attempt("192.0.2.7", 5, "dup"), {"client_ip": "x"}]})
    assert again.json["duplicate"] == 1 and again.json["refused"] == 1
    assert again.json["errors"][0]["index"] == 1


def test_reports_need_the_report_scope(server: RunningServer, ops: Api) -> None:
    assert ops.post("/v1/reports", attempt("192.0.2.7", 5, "s1")).status == 403


def test_operator_reviews_revokes_and_forbids(server: RunningServer, reporter: Api, ops: Api) -> None:
    ip = DYNAMIC[0]
    spaced(reporter, [attempt(ip, 40, "c1"), attempt(ip, 25, "c2"), attempt(ip, 10, "c3")])
    listed = ops.get("/v1/learned").json
    (item,) = listed["items"]
    assert item["value"] == ip and item["source"] == "learned"
    assert len(item["evidence"]) == 3 and item["evidence"][0]["sender"] == "news@shop.example"
    # The evidence: what the reporter claimed beside what s25rbl saw when each report came.
    newest = item["evidence"][0]
    assert newest["client_name"] == "unknown" and newest["confirmed_name"] == DYNAMIC[1]
    assert newest["answer"] == "127.0.0.2" and newest["counts"] is True
    claimed, received = (datetime.fromisoformat(newest[k]) for k in ("time", "received_at"))
    assert timedelta(minutes=9) < received - claimed < timedelta(minutes=11)
    assert ops.delete(f"/v1/learned/{ip}?forbid=true&reason=spam%20cannon").status == 204
    assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]  # listed again at once
    assert ops.get("/v1/learned").json["forbidden"][0]["ip"] == ip
    again = spaced(reporter, [attempt(ip, 9, "c4"), attempt(ip, 5, "c5"), attempt(ip, 1, "c6")])
    assert [r["learned"] for r in again] == [[], [], []]  # forbidden: never learned again
    assert ops.delete("/v1/learned/192.0.2.200").status == 404


def test_a_revoked_address_is_not_learned_again_by_its_old_reports(
    server: RunningServer, reporter: Api, ops: Api
) -> None:
    ip = DYNAMIC[0]
    spaced(reporter, [attempt(ip, 0, "r1"), attempt(ip, 0, "r2"), attempt(ip, 0, "r3")])
    assert ops.delete(f"/v1/learned/{ip}").status == 204  # revoked, not forbidden
    time.sleep(SPACING)
    reply = reporter.post("/v1/reports", attempt(ip, 0, "r4"))
    assert reply.json["learned"] == []  # its count starts afresh
    assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]


def test_one_report_past_year_9999_refuses_only_itself(reporter: Api) -> None:
    bad = {**attempt("192.0.2.7", 0, "t1"), "time": "9999-12-31T23:59:59-23:59"}
    reply = reporter.post("/v1/reports", {"reports": [attempt("192.0.2.8", 0, "t0"), bad]})
    assert reply.status == 202, reply.body
    assert (reply.json["accepted"], reply.json["refused"]) == (1, 1)
    assert reply.json["errors"][0]["index"] == 1 and reply.json["errors"][0]["field"] == "time"


def test_pool_suggestion_approved_changes_answers_for_the_whole_pool(
    server: RunningServer, upstream: FakeAuthority, reporter: Api, ops: Api
) -> None:
    pool = [(f"198.51.100.{n}", f"a{n}-{n * 3}.smtp-out.bigmail.example") for n in (11, 12, 13, 14)]
    for ip, host in pool:
        upstream.add_ptr(ip, host)
        upstream.add_host(host, ip)
        assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]  # rule 1 hits every one
    # The reporter's names are evidence only: the suggestion comes from s25rbl's own lookups.
    replies = spaced(
        reporter, [attempt(ip, 0, f"p{i}", client_name="mx.gmail.com") for i, (ip, _) in enumerate(pool[:3])]
    )
    assert all(r["learned"] == [] for r in replies)
    assert replies[-1]["suggested"] == ["smtp-out.bigmail.example"]  # the pool, not all bigmail.example
    (suggestion,) = ops.get("/v1/suggestions?status=open").json["items"]
    assert suggestion["domain"] == "smtp-out.bigmail.example"
    assert sorted(suggestion["evidence"]["addresses"]) == [ip for ip, _ in pool[:3]]
    approved = ops.post(f"/v1/suggestions/{suggestion['id']}/approve")
    assert approved.status == 200 and approved.json["entry"]["kind"] == "domain"
    for ip, _ in pool:  # the fourth address never retried, but its pool is whitelisted now
        assert udp(server, name(ip), "A").rcode() == dns.rcode.NXDOMAIN
    assert ops.post(f"/v1/suggestions/{suggestion['id']}/reject").status == 409


@pytest.fixture
def second_node(
    tmp_path: Path, upstream: FakeAuthority, server: RunningServer, database_url: str
) -> Iterator[RunningServer]:
    """Another node on the same store (the same SQLite file or PostgreSQL database)."""
    config = write_config(tmp_path / "node2.toml", (upstream.host, upstream.port), database_url, LEARNING)
    node = start_server(config)
    try:
        yield node
    finally:
        node.stop()


def test_retries_reported_to_two_nodes_count_together(
    server: RunningServer, second_node: RunningServer, reporter: Api
) -> None:
    assert second_node.api is not None
    other = Api(*second_node.api, token=reporter.token)
    ip = DYNAMIC[0]
    assert reporter.post("/v1/reports", attempt(ip, 40, "n1")).json["accepted"] == 1
    time.sleep(SPACING)
    assert other.post("/v1/reports", attempt(ip, 25, "n2")).json["accepted"] == 1
    time.sleep(SPACING)
    assert reporter.post("/v1/reports", attempt(ip, 10, "n3")).json["learned"] == [ip]
    time.sleep(SPACING)
    assert other.post("/v1/reports", attempt(ip, 2, "n4")).json["learned"] == []  # learned once
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and udp(second_node, name(ip), "A").rcode() != dns.rcode.NXDOMAIN:
        time.sleep(0.1)
    assert udp(second_node, name(ip), "A").rcode() == dns.rcode.NXDOMAIN
    assert (
        len(Api(*second_node.api, token=token(server, "viewer", "read")).get("/v1/learned").json["items"])
        == 1
    )


def test_a_reporter_over_its_rate_gets_429_with_retry_after(
    tmp_path: Path, upstream: FakeAuthority, database_url: str
) -> None:
    extra = "\n[learning]\nreports_per_minute = 1\naddress_reports_per_minute = 100\n"
    config = write_config(tmp_path / "limited.toml", (upstream.host, upstream.port), database_url, extra)
    node = start_server(config)
    try:
        assert node.api is not None
        api = Api(*node.api, token=token(node, "mx1", "report"))
        batch = [attempt("192.0.2.7", 0, f"l{n}", sender=f"s{n}@shop.example") for n in range(1000)]
        first = api.post("/v1/reports", {"reports": batch})  # a whole batch always fits the burst
        assert first.status == 202, first.body
        assert (first.json["accepted"], first.json["refused"]) == (100, 900)
        assert {e.get("status") for e in first.json["errors"]} == {429}
        more = api.post("/v1/reports", attempt("192.0.2.8", 0, "over"))
        assert more.status == 429, more.body
        assert more.content_type == "application/problem+json"
        assert 1 <= int(more.headers["retry-after"]) <= 60
        other = Api(*node.api, token=token(node, "mx2", "report"))  # limits are per token
        assert other.post("/v1/reports", attempt("192.0.2.8", 0, "other")).status == 202
    finally:
        node.stop()
