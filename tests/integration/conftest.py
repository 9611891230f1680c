"""Integration fixtures: the tests' own authoritative DNS server and a real ``s25rbl serve``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

# Test hosts use documentation prefixes: nothing is ever sent to them, they only appear
# inside DNS data served by the tests' own authoritative server.
DYNAMIC = ("203.0.113.7", "p1234-ipad12.tokyo.ocn.ne.jp")  # S25R rule 1
CLEAN = ("203.0.113.8", "mail.example.org")
UNCONFIRMED = ("203.0.113.9", "mx.example.net")  # PTR says mx.example.net; its A says otherwise
NO_PTR = "203.0.113.10"
TIMEOUT = "203.0.113.11"
SERVFAIL = "203.0.113.12"
HOTMAIL = ("203.0.113.13", "mc1-s3.bay6.hotmail.com")  # rule 1, but on the builtin whitelist
DYNAMIC6 = ("2001:db8::7", "dhcp7.pool.example.net")  # rule 6


def populate(fake: FakeAuthority) -> None:
    for ip, name in (DYNAMIC, CLEAN, HOTMAIL, DYNAMIC6):
        fake.add_ptr(ip, name)
        fake.add_host(name, ip)
    fake.add_ptr(UNCONFIRMED[0], UNCONFIRMED[1])
    fake.add_host(UNCONFIRMED[1], "192.0.2.200")
    fake.behave(TIMEOUT, "timeout")
    fake.behave(SERVFAIL, "servfail")


@pytest.fixture
def upstream() -> Iterator[FakeAuthority]:
    fake = FakeAuthority()
    fake.start()
    populate(fake)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def server(tmp_path: Path, upstream: FakeAuthority, database_url: str) -> Iterator[RunningServer]:
    """A running node on each store backend (SQLite file, PostgreSQL database)."""
    config = write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), database_url)
    running = start_server(config)
    try:
        yield running
    finally:
        running.stop()
