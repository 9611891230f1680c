"""The CLI against a real SQLite file and the real migrations (no server running)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli_runner import Cli, make_cli


@pytest.fixture
def bare_cli(tmp_path: Path, database_url: str) -> Cli:
    """The CLI on the test's store, which no command has created yet."""
    return make_cli(tmp_path, S25RBL_DATABASE__URL=database_url)


@pytest.fixture
def cli(bare_cli: Cli) -> Cli:
    """The CLI on a store set up by ``migrate``, as ``serve`` would leave it."""
    assert bare_cli("migrate").returncode == 0
    return bare_cli


def test_migrate_brings_the_store_to_the_current_revision(bare_cli: Cli, database_url: str) -> None:
    cli = bare_cli
    result = cli("migrate")
    assert result.returncode == 0, result.stderr
    from alembic.script import ScriptDirectory

    from s25rbl.store.db import migrations_dir

    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    assert f"database at revision {head}" in result.stdout
    if database_url.startswith("sqlite:///"):
        assert Path(database_url.removeprefix("sqlite:///")).exists()  # the file created
    again = cli("migrate")  # idempotent
    assert again.returncode == 0 and f"database at revision {head}" in again.stdout


def test_duplicate_entry_is_refused_naming_the_existing_one(cli: Cli) -> None:
    assert cli("entries", "add", "white", "domain", "hotmail.com").returncode == 0
    again = cli("entries", "add", "white", "domain", "HOTMAIL.com.")
    assert again.returncode == 1
    assert "already has domain 'hotmail.com' (entry 1" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["entries", "add", "black", "ip", "300.1.1.1"], 2, "not an IPv4 or IPv6 address"),
        (["entries", "add", "black", "regex", "(x)\\1"], 2, "no backreferences"),
        (["entries", "add", "white", "ip", "192.0.2.1", "--expires", "2001-01-01"], 2, "in the past"),
        (["entries", "remove", "999"], 1, "no entry with id 999"),
        (["check", "not-an-ip"], 2, "not an IPv4 or IPv6 address"),
        (["import", "/nonexistent/file"], 1, "No such file"),
    ],
    ids=["bad-ip", "backreference", "expiry-past", "remove-missing", "check-bad-ip", "import-missing-file"],
)
def test_bad_input_gets_a_clear_message_and_status(cli: Cli, args: list[str], status: int, says: str) -> None:
    result = cli(*args)
    assert result.returncode == status
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_import_is_all_or_nothing_with_line_numbers(cli: Cli) -> None:
    table = "/ok\\.example$/ OK\n/(?=x)/ OK\n192.0.2.0/24 REJECT\nbad..name OK\n"
    result = cli("import", "-", input=table)
    assert result.returncode == 1
    assert "line 2:" in result.stderr and "line 4:" in result.stderr
    listed = json.loads(cli("entries", "list", "--json").stdout)
    assert listed == []


def test_import_then_export_in_every_format(cli: Cli) -> None:
    table = (
        "/\\.bay[0-9]*\\.hotmail\\.com$/ OK\n"
        "192.0.2.7 REJECT spam run\n"
        "198.51.100.0/24 450 domain check\n"
        "2001:db8::/32 REJECT\n"
        "dip.t-dialin.net REJECT\n"
    )
    result = cli("import", "-", input=table)
    assert result.returncode == 0, result.stderr
    assert "imported 5 entries" in result.stdout
    again = cli("import", "-", input=table)  # importing the same file again changes nothing
    assert "imported 0 entries" in again.stdout and "(5 already present)" in again.stdout

    postfix = cli("export", "--format", "postfix").stdout
    assert "/\\.bay[0-9]*\\.hotmail\\.com$/ OK" in postfix
    assert "/(^|\\.)dip\\.t-dialin\\.net$/ 450 4.7.1 domain check, be patient" in postfix

    rbldnsd = cli("export", "--format", "rbldnsd").stdout.splitlines()
    assert ":127.0.0.3:domain check, be patient" in rbldnsd
    assert "192.0.2.7" in rbldnsd and "198.51.100.0/24" in rbldnsd
    assert not any("2001:db8" in line and not line.startswith("#") for line in rbldnsd)

    exported = json.loads(cli("export", "--format", "json").stdout)
    assert {e["value"] for e in exported} >= {"192.0.2.7", "dip.t-dialin.net"}
    assert all(e["source"] == "imported" for e in exported)


def test_help_lists_every_command(cli: Cli) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in (
        "serve",
        "migrate",
        "check",
        "entries",
        "import",
        "export",
        "learned",
        "suggestions",
        "audit",
    ):
        assert command in result.stdout
