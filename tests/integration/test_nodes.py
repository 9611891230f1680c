"""Several nodes on one store form one service: changes anywhere reach every node's DNS within
two seconds, expiry runs everywhere without harm, and a restarted node converges."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.api_client import Api
from tests.integration.conftest import CLEAN, DYNAMIC
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_responder import answers, name, udp
from tests.support.fakedns import FakeAuthority


@pytest.fixture
def nodes(tmp_path: Path, upstream: FakeAuthority, database_url: str) -> Iterator[list[RunningServer]]:
    started: list[RunningServer] = []
    try:
        for n in range(2):
            config = write_config(tmp_path / f"node{n}.toml", (upstream.host, upstream.port), database_url)
            started.append(start_server(config))
        yield started
    finally:
        for node in started:
            node.stop()


def api(node: RunningServer, scope: str = "write") -> Api:
    assert node.api is not None
    token = node.cli("token", "create", "--name", f"t{time.monotonic_ns()}", "--scope", scope).stdout.strip()
    return Api(*node.api, token=token)


def seconds_until(check, limit: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {limit} s")


def test_a_change_on_one_node_is_answered_by_the_other_within_two_seconds(nodes: list[RunningServer]) -> None:
    a, b = nodes
    assert answers(udp(b, name(DYNAMIC[0]), "A")) == ["127.0.0.2"]
    assert api(a).post("/v1/entries", {"list": "white", "kind": "ip", "value": DYNAMIC[0]}).status == 201
    took = seconds_until(lambda: udp(b, name(DYNAMIC[0]), "A").rcode() == dns.rcode.NXDOMAIN)
    assert took < 2.0
    assert api(b).post("/v1/entries", {"list": "black", "kind": "hostname", "value": CLEAN[1]}).status == 201
    took = seconds_until(lambda: answers(udp(a, name(CLEAN[0]), "A")) == ["127.0.0.3"])
    assert took < 2.0


def test_expiry_on_every_node_at_once_is_harmless(nodes: list[RunningServer], tmp_path: Path) -> None:
    a, _b = nodes
    ops = api(a)
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    batch = [
        {"list": "black", "kind": "ip", "value": f"198.51.100.{i}", "expires_at": soon} for i in range(50)
    ]
    assert ops.post("/v1/entries", {"entries": batch}).status == 201
    time.sleep(2.5)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "s25rbl", "--config", str(node.config), "expire"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=node.env,
        )
        for node in nodes
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], outputs
    counts = [re.search(r"(\d+) entries removed", out) for out, _ in outputs]
    assert all(counts), outputs
    removed = sum(int(m.group(1)) for m in counts if m is not None)
    assert removed == 50, outputs  # each expired row removed once, by whichever run got there first
    assert ops.get("/v1/entries?list=black&kind=ip&limit=1000").json["items"] == []


def test_a_restarted_node_converges_on_changes_it_missed(nodes: list[RunningServer]) -> None:
    a, b = nodes
    b.stop()
    ops = api(a)
    assert ops.post("/v1/entries", {"list": "black", "kind": "ip", "value": "198.51.100.99"}).status == 201
    restarted = start_server(b.config)
    try:
        assert answers(udp(restarted, name("198.51.100.99"), "A")) == ["127.0.0.3"]
    finally:
        restarted.stop()
