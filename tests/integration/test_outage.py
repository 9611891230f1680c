"""The database goes away: DNS keeps answering from memory, writes answer 503, /readyz says
not ready, nothing accepted before is lost, and everything recovers without a restart.

The test runs a PostgreSQL instance of its own (initdb, pg_ctl), so stopping it harms nothing
else on the machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.api_client import Api
from tests.integration.conftest import DYNAMIC
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_responder import answers, name, udp
from tests.support.fakedns import FakeAuthority


def _pg_bin(program: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))
    return found[-1] if found else shutil.which(program)


class OwnPostgres:
    """A throw-away PostgreSQL cluster on a free port, run as the postgres system user."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="s25rbl-pg-", dir="/var/tmp"))
        self.data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(
            [
                _pg_bin("initdb") or "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, argv: list[str]) -> None:
        cmd = argv if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{argv[0]} failed: {result.stdout}\n{result.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._as_postgres(
            [
                _pg_bin("pg_ctl") or "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.dir / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self) -> None:
        self._as_postgres(
            [_pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"]
        )

    def destroy(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                _pg_bin("pg_ctl") or "pg_ctl",
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[OwnPostgres]:
    if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if os.environ.get("S25RBL_CI"):
            pytest.fail(message)
        pytest.skip(message)
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def node(tmp_path: Path, upstream: FakeAuthority, postgres: OwnPostgres) -> Iterator[RunningServer]:
    # Retries 1 s apart count (min_interval), so the test need not wait minutes between attempts.
    extra = "\n[learning]\nmin_interval = 1\n"
    config = write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), postgres.url, extra)
    server = start_server(config)
    try:
        yield server
    finally:
        server.stop()


def wait_for(check, seconds: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_dns_survives_the_store_and_everything_recovers(node: RunningServer, postgres: OwnPostgres) -> None:
    assert node.api is not None
    ops = Api(
        *node.api, token=node.cli("token", "create", "--name", "ops", "--scope", "admin").stdout.strip()
    )
    assert ops.post("/v1/entries", {"list": "black", "kind": "ip", "value": "198.51.100.66"}).status == 201
    now = datetime.now(UTC)
    before = [
        {
            "client_ip": "192.0.2.44",
            "sender": "a@shop.example",
            "recipient": "x@example.org",
            "time": (now - timedelta(minutes=m)).isoformat(),
            "idempotency_key": f"before-{m}",
        }
        for m in (30, 15)
    ]
    # Two attempts, each received on its own: retries count by when s25rbl receives them.
    assert ops.post("/v1/reports", before[0]).json["accepted"] == 1
    time.sleep(1.2)
    assert ops.post("/v1/reports", before[1]).json["accepted"] == 1
    second_at = time.monotonic()
    assert answers(udp(node, name(DYNAMIC[0]), "A")) == ["127.0.0.2"]

    postgres.stop()

    # DNS answers from memory: the list entry, a cached verdict, a fresh verdict, a test entry.
    assert answers(udp(node, name("198.51.100.66"), "TXT")) == ['"domain check, be patient"']
    assert answers(udp(node, name(DYNAMIC[0]), "A")) == ["127.0.0.2"]
    assert answers(udp(node, name("2001:db8::7"), "A")) == ["127.0.0.2"]
    assert answers(udp(node, name("127.0.0.2"), "A")) == ["127.0.0.2"]

    # Writes say so, quickly and clearly; readiness follows within a refresh interval.
    started = time.monotonic()
    write = ops.post("/v1/entries", {"list": "white", "kind": "ip", "value": "198.51.100.67"})
    assert write.status == 503, write.body
    assert write.content_type == "application/problem+json" and "unavailable" in write.json["detail"]
    assert time.monotonic() - started < 15
    assert ops.post("/v1/reports", before[0] | {"idempotency_key": "during"}).status == 503
    assert wait_for(lambda: ops.get("/readyz", token=None).status == 503)
    assert ops.get("/healthz", token=None).status == 200  # alive, just not ready
    assert node.process.poll() is None

    postgres.start()

    assert wait_for(lambda: ops.get("/readyz", token=None).status == 200, 30)
    assert wait_for(
        lambda: (
            ops.post("/v1/entries", {"list": "white", "kind": "ip", "value": "198.51.100.67"}).status == 201
        ),
        30,
    )
    # Nothing accepted before the outage was lost: the third attempt makes the retry count.
    third = {**before[0], "time": now.isoformat(), "idempotency_key": "after"}
    time.sleep(max(0.0, second_at + 1.2 - time.monotonic()))  # a retry: min_interval after the second
    assert ops.post("/v1/reports", third).json["learned"] == ["192.0.2.44"]
    # And list changes flow again.
    assert ops.post("/v1/entries", {"list": "white", "kind": "ip", "value": DYNAMIC[0]}).status == 201
    assert udp(node, name(DYNAMIC[0]), "A").rcode() == dns.rcode.NXDOMAIN
    assert "Traceback" not in "".join(node.output)
