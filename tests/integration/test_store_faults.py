"""The store fails under a running server: nothing acknowledged is lost, DNS keeps answering.

- a PostgreSQL of the test's own stopped and started under a steady load of reports;
- the server killed with SIGKILL at random moments under writes, ten times, on SQLite;
- the SQLite file deleted under a running server;
- an export of more than 100,000 entries, whole, with the server's memory bounded.

Each is bounded in count and time (seconds, not minutes).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryRepository
from tests.integration.api_client import Api, make_token
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_api_hostile import rss_kib
from tests.integration.test_outage import OwnPostgres, node, postgres, wait_for  # noqa: F401 - fixtures
from tests.integration.test_responder import answers, name, udp
from tests.support.clock import FakeClock
from tests.support.databases import psql_value
from tests.support.fakedns import FakeAuthority


class Load:
    """A thread sending one write after another until stopped; remembers what was acknowledged."""

    def __init__(self, send: object, pause: float = 0.01) -> None:
        self._send = send
        self._pause = pause
        self._stop = threading.Event()
        self.acked: list[str] = []
        self.refused = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            key = uuid.uuid4().hex
            try:
                ok = self._send(key)  # type: ignore[operator]
            except OSError:
                ok = False  # no answer at all: not acknowledged
            if ok:
                self.acked.append(key)
            else:
                self.refused += 1
            time.sleep(self._pause)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


class DnsProbe:
    """A thread asking the RFC 5782 test entry every 50 ms; counts questions left unanswered."""

    def __init__(self, server: RunningServer) -> None:
        self._server = server
        self._stop = threading.Event()
        self.asked = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.asked += 1
            try:
                if answers(udp(self._server, name("127.0.0.2"), "A")) != ["127.0.0.2"]:
                    self.failed += 1
            except Exception:
                self.failed += 1
            time.sleep(0.05)

    def __enter__(self) -> DnsProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_postgresql_restart_under_reports_loses_no_acknowledged_report(
    node: RunningServer,  # noqa: F811 - the fixture imported above
    postgres: OwnPostgres,  # noqa: F811
) -> None:
    assert node.api is not None
    reporter = Api(*node.api, token=make_token(node, "mx1", "report"))
    counter = iter(range(1, 1_000_000))

    def report(key: str) -> bool:
        n = next(counter)
        body = {
            "client_ip": f"198.51.{100 + n // 250 % 2}.{n % 250 + 1}",  # no PTR: listed (.4)
            "sender": f"news{n}@shop.example",
            "recipient": "alice@example.org",
            "idempotency_key": key,
        }
        reply = reporter.post("/v1/reports", body)
        return reply.status == 202 and reply.json["accepted"] == 1

    with DnsProbe(node) as dns, Load(report) as load:
        assert wait_for(lambda: len(load.acked) >= 20, 30)
        postgres.stop()
        time.sleep(3)
        during = len(load.acked)
        postgres.start()
        assert wait_for(lambda: len(load.acked) >= during + 20, 60), "reports were not taken again"
    assert dns.asked > 20 and dns.failed == 0
    stored = set(psql_value(postgres.url, "SELECT idempotency_key FROM reports").split())
    missing = set(load.acked) - stored
    assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged reports lost"
    assert load.refused > 0  # the outage was felt: some were answered 503, none lost
    output = "".join(node.output)
    assert "Traceback" not in output, output[output.index("Traceback") - 300 :][:6000]


@pytest.fixture
def sqlite_config(tmp_path: Path, upstream: FakeAuthority) -> Path:
    return write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), tmp_path / "s25rbl.db")


def test_sigkill_at_random_moments_under_writes_loses_no_acknowledged_write(
    sqlite_config: Path, tmp_path: Path
) -> None:
    rng = random.Random(12)
    acked: list[str] = []
    token = ""
    for _round in range(10):
        server = start_server(sqlite_config)
        assert server.api is not None
        token = token or make_token(server, "writer", "write")
        api = Api(*server.api, token=token)
        counter = iter(range(1, 1_000_000))
        prefix = f"10.{_round}"

        def write(key: str, api: Api = api, counter: Iterator[int] = counter, prefix: str = prefix) -> bool:
            n = next(counter)
            value = f"{prefix}.{n // 250}.{n % 250 + 1}"
            ok = api.post("/v1/entries", {"list": "black", "kind": "ip", "value": value}).status == 201
            if ok:
                acked.append(value)
            return ok

        loads = [Load(write, pause=0.0), Load(write, pause=0.0)]
        for load in loads:
            load.__enter__()
        time.sleep(rng.uniform(0.3, 1.5))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        for load in loads:
            load.__exit__()
        server.stop()
    db = sqlite3.connect(tmp_path / "s25rbl.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0] for row in db.execute("SELECT value FROM entries WHERE list = 'black'")}
    finally:
        db.close()
    assert len(acked) > 50
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost"


def test_the_sqlite_file_deleted_under_a_running_server(sqlite_config: Path, tmp_path: Path) -> None:
    server = start_server(sqlite_config)
    try:
        assert server.api is not None
        api = Api(*server.api, token=make_token(server, "ops", "write"))
        assert api.post("/v1/entries", {"list": "black", "kind": "ip", "value": "192.0.2.66"}).status == 201
        (tmp_path / "s25rbl.db").unlink()
        write = api.post("/v1/entries", {"list": "black", "kind": "ip", "value": "192.0.2.67"})
        assert write.status == 503 and "deleted" in write.json["detail"], write.body
        assert write.headers.get("retry-after")
        assert wait_for(lambda: api.get("/readyz", token=None).status == 503, 10)
        # DNS answers from memory: the entry written before, and the test entry.
        assert answers(udp(server, name("192.0.2.66"), "TXT")) == ['"domain check, be patient"']
        assert answers(udp(server, name("127.0.0.2"), "A")) == ["127.0.0.2"]
        errors = [line for line in server.output if " ERROR " in line]
        assert len(errors) == 1 and "was deleted" in errors[0], errors
    finally:
        server.stop()


async def test_an_export_of_more_than_100000_entries_is_whole(sqlite_config: Path, tmp_path: Path) -> None:
    """On SQLite only: PostgreSQL pages through the same code, and doubling the minute this
    takes would buy little."""
    server = start_server(sqlite_config)
    try:
        await _export_whole(server, f"sqlite:///{tmp_path / 's25rbl.db'}")
    finally:
        server.stop()


async def _export_whole(server: RunningServer, database_url: str) -> None:
    count = 100_001
    specs = [
        EntrySpec(ListName.BLACK, EntryKind.IP, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        for i in range(count)
    ]
    store = Store(database_url)
    try:
        async with store.transaction() as session:
            added, _ = await EntryRepository(session).add_missing(
                specs, source=EntrySource.IMPORTED, creator="test", now=FakeClock().now()
            )
    finally:
        await store.close()
    assert added == count
    assert server.api is not None
    token = make_token(server, "reader", "read")
    api = Api(*server.api, token=token)
    assert wait_for(lambda: api.get("/v1/stats").json["lists"]["black_address"] >= count, 60)
    before = rss_kib(server.process.pid)
    csv_export = api.get("/v1/export?format=csv&list=black")
    assert csv_export.status == 200 and csv_export.headers.get("transfer-encoding") == "chunked"
    assert len(csv_export.body.splitlines()) == 1 + count
    grown_mib = (rss_kib(server.process.pid) - before) / 1024
    assert grown_mib < 40, f"exporting grew the server by {grown_mib:.0f} MiB"
    base = f"http://{server.api[0]}:{server.api[1]}"
    cli = server.cli(
        "export", "--api", base, "--token", token, "--format", "postfix", "--list", "black", timeout=120
    )
    assert cli.returncode == 0, cli.stderr
    assert len([line for line in cli.stdout.splitlines() if line.startswith("/")]) == count
