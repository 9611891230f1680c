"""Hostile and excess API traffic against the real server and store: each test is a way the
server once answered 500, logged a traceback, lost count or grew without bound."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.api_client import Api, make_token
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

SLOTS = 8  # api.max_concurrent's default


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One node (SQLite) for the tests that need no backend of their own."""
    fake = FakeAuthority()
    fake.start()
    state = tmp_path_factory.mktemp("hostile")
    try:
        server = start_server(
            write_config(state / "s25rbl.toml", (fake.host, fake.port), state / "s25rbl.db")
        )
    except BaseException:
        fake.stop()
        raise
    try:
        yield server
    finally:
        server.stop()
        fake.stop()


@pytest.fixture(scope="module")
def admin(node: RunningServer) -> Api:
    assert node.api is not None
    return Api(*node.api, token=make_token(node, "root", "admin"))


def raw_request(server: RunningServer, request: bytes) -> bytes:
    """Send bytes as they are; the status line of the answer."""
    assert server.api is not None
    with socket.create_connection(server.api, timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            piece = sock.recv(4096)
            if not piece:
                break
            answer += piece
    return answer.split(b"\r\n")[0]


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", id="header-9k"
        ),
        pytest.param(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n", id="nul-in-header"),
        pytest.param(b"GET /v1/stats HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", id="200-headers"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, id="tls-hello"),
    ],
)
def test_unparsable_http_is_a_400_and_one_log_line(node: RunningServer, request_bytes: bytes) -> None:
    status = raw_request(node, request_bytes)
    assert status.startswith(b"HTTP/1.") and b" 400 " in status, status
    time.sleep(0.2)
    output = "".join(node.output)
    assert "Traceback" not in output and " ERROR " not in output, output[-3000:]
    assert "refused a malformed HTTP request from 127.0.0.1 (400)" in output


def test_failed_logins_are_audited_but_a_guessing_flood_costs_one_row_a_minute(
    node: RunningServer, admin: Api
) -> None:
    status = raw_request(node, b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
    assert b" 401 " in status
    guesser = Api(admin.host, admin.port)
    for i in range(300):
        assert guesser.get("/v1/entries", token=f"s25rbl_guess{i}").status == 401
    events = admin.get("/v1/audit?limit=1000").json["items"]
    failed = [e for e in events if e["action"] == "auth.fail"]
    # The first in full; the other 300 are summed up in one row once the minute is over.
    assert len(failed) == 1, failed
    assert failed[0]["target"] == "127.0.0.1" and "malformed" in failed[0]["detail"]
    assert len([line for line in node.output if "failed login" in line]) == 1
    assert "Traceback" not in "".join(node.output)


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [
        pytest.param("/v1/entries/1", 70 * 1024, 413, id="patch-over-64k"),
        pytest.param("/v1/entries", 3 * 1024 * 1024, 413, id="batch-over-2m"),
        pytest.param("/v1/reports", 3 * 1024 * 1024, 413, id="reports-over-2m"),
        pytest.param("/v1/suggestions/1/approve", 70 * 1024, 413, id="no-body-route-over-64k"),
    ],
)
def test_each_route_has_its_own_body_limit(admin: Api, path: str, size: int, status: int) -> None:
    body = b'{"reason": "' + b"a" * size + b'"}'
    method = "PATCH" if path.startswith("/v1/entries/") else "POST"
    reply = admin.request(method, path, raw=body, content_type="application/json")
    assert reply.status == status, reply.body[:300]
    assert reply.content_type == "application/problem+json"


def test_a_chunked_body_past_the_limit_is_refused_while_it_arrives(admin: Api) -> None:
    import http.client

    conn = http.client.HTTPConnection(admin.host, admin.port, timeout=30)
    pieces = (b"x" * 16384 for _ in range(8))  # 128 KiB, no Content-Length
    conn.request(
        "PATCH",
        "/v1/entries/1",
        body=pieces,
        headers={"Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    assert conn.getresponse().status == 413
    conn.close()


def test_search_text_is_not_a_like_pattern(admin: Api) -> None:
    entries = [
        {"list": "black", "kind": "ip", "value": "192.0.2.1", "reason": "100% spam"},
        {"list": "black", "kind": "ip", "value": "192.0.2.2", "reason": "1000 spams"},
        {"list": "black", "kind": "hostname", "value": "a_b.example", "reason": ""},
        {"list": "black", "kind": "hostname", "value": "axb.example", "reason": "back\\slash"},
    ]
    # (Both backends: tests/integration/test_store_hardening.py searches the repository.)
    assert admin.post("/v1/entries", {"entries": entries}).status == 201

    def found(q: str) -> list[str]:
        return [e["value"] for e in admin.get(f"/v1/entries?list=black&q={q}").json["items"]]

    assert found("0%25") == ["192.0.2.1"]  # "0%", not "0" followed by anything
    assert found("a_b") == ["a_b.example"]
    assert found("%5C") == ["axb.example"]
    assert found("%25") == ["192.0.2.1"]


def test_forbidden_addresses_are_paged(admin: Api) -> None:
    ips = [f"198.51.100.{i}" for i in range(1, 131)]
    for ip in ips:
        assert admin.delete(f"/v1/learned/{ip}?forbid=true&reason=spam").status == 204
    page = admin.get("/v1/learned").json
    assert len(page["forbidden"]) == 100 and page["forbidden_next_cursor"] == page["forbidden"][-1]["ip"]
    seen: list[str] = []
    cursor = ""
    while True:
        listed = admin.get(f"/v1/forbidden?limit=50{cursor}").json
        seen += [b["ip"] for b in listed["items"]]
        if listed["next_cursor"] is None:
            break
        cursor = f"&cursor={listed['next_cursor']}"
    assert sorted(seen) == sorted(ips) and len(seen) == len(set(seen))
    assert [b["ip"] for b in page["forbidden"]] == seen[:100]


# --- load --------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _burst(base: str, token: str, count: int, lock: WriteLock) -> list[tuple[int, str | None]]:
    """``count`` writes at once while ``lock`` is held; the lock is let go once all but the
    requests at work have their answer, so those finish too."""
    connector = aiohttp.TCPConnector(limit=0)
    done = 0
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def one(i: int) -> tuple[int, str | None]:
            nonlocal done
            body = {"list": "black", "kind": "ip", "value": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"}
            async with http.post(
                f"{base}/v1/entries", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                await response.read()
                done += 1
                return response.status, response.headers.get("Retry-After")

        async def release() -> None:
            while done < count - SLOTS:
                await asyncio.sleep(0.05)
            lock.release()

        releasing = asyncio.create_task(release())
        results = await asyncio.gather(*(one(i) for i in range(count)))
        await releasing
        return results


@pytest.fixture
def locked_store(
    tmp_path: Path, upstream: FakeAuthority, database_url: str
) -> Iterator[tuple[RunningServer, str]]:
    config = write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), database_url)
    server = start_server(config)
    try:
        yield server, database_url
    finally:
        server.stop()


def test_a_thousand_requests_at_once_are_answered_promptly_busy_not_500(
    locked_store: tuple[RunningServer, str],
) -> None:
    """Every write blocks on a lock held elsewhere, so requests pile up holding connections: the
    excess must get 503 + Retry-After, none a 500 (the pool's TimeoutError), and memory must stay
    bounded."""
    server, url = locked_store
    assert server.api is not None
    token = make_token(server, "burst", "write")
    base = f"http://{server.api[0]}:{server.api[1]}"
    before = rss_kib(server.process.pid)
    lock = WriteLock(url)
    try:
        results = asyncio.run(_burst(base, token, 1000, lock))
    finally:
        lock.release()
    statuses = sorted({status for status, _ in results})
    assert 500 not in statuses, statuses
    busy = [retry for status, retry in results if status == 503]
    assert len(busy) > 900 and all(retry is not None for retry in busy), statuses
    assert [status for status, _ in results].count(201) >= SLOTS  # those at work got through
    grown_mib = (rss_kib(server.process.pid) - before) / 1024
    assert grown_mib < 60, f"RSS grew {grown_mib:.0f} MiB"
    assert (
        Api(*server.api, token=token)
        .post("/v1/entries", {"list": "black", "kind": "ip", "value": "192.0.2.250"})
        .status
        == 201
    )
    assert "Traceback" not in "".join(server.output)


class WriteLock:
    """Another client holds the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
    table lock on entries) until ``release``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._psql: subprocess.Popen[str] | None = None
        if url.startswith("sqlite"):
            self._sqlite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")
            return
        self._psql = subprocess.Popen(
            ["psql", url, "-qAt"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._psql.stdin is not None and self._psql.stdout is not None
        self._psql.stdin.write("BEGIN; LOCK TABLE entries IN EXCLUSIVE MODE; SELECT 'locked';\n")
        self._psql.stdin.flush()
        assert self._psql.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None
        if self._psql is not None:
            assert self._psql.stdin is not None and self._psql.stdout is not None
            self._psql.stdin.write("ROLLBACK;\n")
            self._psql.stdin.close()
            self._psql.wait(30)
            self._psql.stdout.close()
            self._psql = None
