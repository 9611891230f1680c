"""The store backends every store-touching test runs on: SQLite (a file) and PostgreSQL.

PostgreSQL is the machine's server at 127.0.0.1:5432 (or ``S25RBL_TEST_PG``); each test gets
a database of its own, dropped afterwards. Without a reachable server the PostgreSQL half
skips with the reason, except in CI (``S25RBL_CI`` set), where it fails instead.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get("S25RBL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _psql(sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", PG_ADMIN, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _pg_unavailable() -> str | None:
    try:
        result = _psql("select 1")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"psql could not run: {exc}"
    if result.returncode != 0:
        return f"PostgreSQL at {PG_ADMIN} is not reachable: {result.stderr.strip()}"
    return None


def pg_database() -> Iterator[str]:
    """Create a fresh database; yield its URL; drop it."""
    problem = _pg_unavailable()
    if problem is not None:
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{problem} (S25RBL_CI is set: CI must not skip the PostgreSQL runs)")
        pytest.skip(problem)
    name = f"s25rbl_t_{secrets.token_hex(6)}"
    created = _psql(f"CREATE DATABASE {name}")
    assert created.returncode == 0, created.stderr
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        # Terminate stragglers (a server being stopped) so the drop never blocks.
        _psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        _psql(f"DROP DATABASE IF EXISTS {name}")


def over_unix_socket(url: str) -> str:
    """``url`` (a database on the PostgreSQL server) reached over the server's Unix socket.

    Processes inside a network namespace have a loopback of their own, where 127.0.0.1:5432
    is nobody; a socket in the file system is the same for every namespace.
    """
    shown = psql_value(PG_ADMIN, "SHOW unix_socket_directories")
    directory = shown.split(",")[0].strip()
    assert directory, "the PostgreSQL server listens on no Unix socket"
    user_and_database = url.split("://", 1)[1]
    user = user_and_database.split("@", 1)[0]
    database = url.rsplit("/", 1)[1]
    return f"postgresql://{user}@/{database}?host={directory}"


def psql_value(url: str, sql: str) -> str:
    """The value ``sql`` selects from the database at ``url``."""
    result = subprocess.run(["psql", url, "-At", "-c", sql], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        (tmp_path / "state").mkdir(exist_ok=True)  # s25rbl creates the file, never a named folder
        yield f"sqlite:///{tmp_path / 'state' / 's25rbl.db'}"
    else:
        yield from pg_database()
