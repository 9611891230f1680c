"""The learning loop end to end: reports over the API, learned answers in DNS, review and undo."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.api_client import Api
from tests.integration.api_client import make_token as token
from tests.integration.conftest import DYNAMIC
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_responder import answers, name, udp
from tests.support.fakedns import FakeAuthority

WL = "wl.s25rbl.test"


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
    batch = [
        attempt(ip, 40, "a1", sender="prvs=1a2b3c4d=news@shop.example"),
        attempt(ip, 25, "a2", sender="prvs=5e6f7a8b=news@SHOP.example"),
        attempt(ip, 10, "a3", sender="prvs=9c0d1e2f=news@shop.example"),
    ]
    reply = reporter.post("/v1/reports", {"reports": batch})
    assert reply.status == 202, reply.body
    assert reply.json["accepted"] == 3 and reply.json["learned"] == [ip]
    assert udp(server, name(ip), "A").rcode() == dns.rcode.NXDOMAIN  # at once on this node
    assert answers(udp(server, name(ip, WL), "A")) == ["127.0.0.3"]


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
    reporter.post(
        "/v1/reports", {"reports": [attempt(ip, 40, "c1"), attempt(ip, 25, "c2"), attempt(ip, 10, "c3")]}
    )
    listed = ops.get("/v1/learned").json
    (item,) = listed["items"]
    assert item["value"] == ip and item["source"] == "learned"
    assert len(item["evidence"]) == 3 and item["evidence"][0]["sender"] == "news@shop.example"
    assert ops.delete(f"/v1/learned/{ip}?forbid=true&reason=spam%20cannon").status == 204
    assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]  # listed again at once
    assert ops.get("/v1/learned").json["forbidden"][0]["ip"] == ip
    again = reporter.post(
        "/v1/reports", {"reports": [attempt(ip, 9, "c4"), attempt(ip, 5, "c5"), attempt(ip, 1, "c6")]}
    )
    assert again.json["learned"] == []  # forbidden: never learned again
    assert ops.delete("/v1/learned/192.0.2.200").status == 404


def test_pool_suggestion_approved_changes_answers_for_the_whole_pool(
    server: RunningServer, upstream: FakeAuthority, reporter: Api, ops: Api
) -> None:
    pool = [(f"198.51.100.{n}", f"a{n}-{n * 3}.smtp-out.bigmail.example") for n in (11, 12, 13, 14)]
    for ip, host in pool:
        upstream.add_ptr(ip, host)
        upstream.add_host(host, ip)
        assert answers(udp(server, name(ip), "A")) == ["127.0.0.2"]  # rule 1 hits every one
    batch = [attempt(ip, 40 - 12 * i, f"p{i}", client_name=host) for i, (ip, host) in enumerate(pool[:3])]
    reply = reporter.post("/v1/reports", {"reports": batch})
    assert reply.json["learned"] == [] and "bigmail.example" in reply.json["suggested"]
    (suggestion,) = ops.get("/v1/suggestions?status=open").json["items"]
    assert suggestion["domain"] == "bigmail.example"
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
    config = write_config(tmp_path / "node2.toml", (upstream.host, upstream.port), database_url)
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
    assert other.post("/v1/reports", attempt(ip, 25, "n2")).json["accepted"] == 1
    assert reporter.post("/v1/reports", attempt(ip, 10, "n3")).json["learned"] == [ip]
    assert other.post("/v1/reports", attempt(ip, 2, "n4")).json["learned"] == []  # learned once
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and udp(second_node, name(ip), "A").rcode() != dns.rcode.NXDOMAIN:
        time.sleep(0.1)
    assert udp(second_node, name(ip), "A").rcode() == dns.rcode.NXDOMAIN
    assert (
        len(Api(*second_node.api, token=token(server, "viewer", "read")).get("/v1/learned").json["items"])
        == 1
    )
