"""Which store the CLI acts on: the configuration it finds, the store it names, the stores it
refuses to create, and moving a store between schema revisions (real SQLite files, real
PostgreSQL, the real migrations)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from s25rbl.store.db import describe_store
from tests.integration.cli_runner import Cli, make_cli


@pytest.fixture
def bare_cli(tmp_path: Path, database_url: str) -> Cli:
    return make_cli(tmp_path, S25RBL_DATABASE__URL=database_url)


def _one_line_error(result: object, status: int) -> str:
    from subprocess import CompletedProcess

    assert isinstance(result, CompletedProcess)
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def test_global_options_go_before_or_after_the_command(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    config = tmp_path / "s25rbl.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "named.db"}"\n')
    for args in (["--config", str(config), "migrate"], ["migrate", "--config", str(config)]):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        assert f"wrote to sqlite:///{tmp_path / 'named.db'}" in result.stderr
    added = cli("entries", "add", "-c", str(config), "white", "ip", "192.0.2.1")
    assert added.returncode == 0, added.stderr
    assert f"wrote to sqlite:///{tmp_path / 'named.db'}" in added.stderr
    for command in (["serve"], ["entries", "list"], ["token", "create"]):
        shown = cli(*command, "--help")
        assert shown.returncode == 0 and "--config FILE" in shown.stdout, shown.stdout


def test_without_a_config_the_system_file_is_read(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    system = tmp_path / "etc" / "s25rbl.toml"
    system.parent.mkdir()
    system.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "system.db"}"\n')
    assert cli("migrate").returncode == 0
    token = cli("token", "create", "--name", "ops", "--scope", "read")
    assert token.returncode == 0, token.stderr
    assert f"wrote to sqlite:///{tmp_path / 'system.db'}" in token.stderr
    assert not (tmp_path / ".local").exists()  # not the per-user default store


@pytest.mark.parametrize(
    "command",
    [
        ["entries", "add", "white", "ip", "192.0.2.1"],
        ["entries", "list"],
        ["token", "create", "--name", "ops", "--scope", "read"],
        ["import", "-"],
        ["export"],
        ["expire"],
    ],
    ids=["entries-add", "entries-list", "token-create", "import", "export", "expire"],
)
def test_only_serve_and_migrate_create_a_store(bare_cli: Cli, database_url: str, command: list[str]) -> None:
    line = _one_line_error(bare_cli(*command, input="192.0.2.1 OK\n"), 1)
    assert describe_store(database_url) in line
    assert "run `s25rbl migrate` (or start `s25rbl serve`)" in line
    if database_url.startswith("sqlite:///"):
        assert "no store at" in line
        assert not Path(database_url.removeprefix("sqlite:///")).exists()
    else:
        assert "is not set up (no schema)" in line


def test_a_mistyped_sqlite_path_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nonexistent-dir' / 'x.db'}"
    cli = make_cli(tmp_path, S25RBL_DATABASE__URL=url)
    line = _one_line_error(cli("migrate"), 1)
    assert f"no folder {tmp_path / 'nonexistent-dir'} for the SQLite store {url}" in line
    line = _one_line_error(cli("token", "create", "--name", "x", "--scope", "read"), 1)
    assert f"no store at {url} (no such file)" in line
    assert not (tmp_path / "nonexistent-dir").exists()


def test_the_default_store_folder_is_created(tmp_path: Path) -> None:
    result = make_cli(tmp_path)("migrate")
    assert result.returncode == 0, result.stderr
    default = tmp_path / ".local" / "state" / "s25rbl" / "s25rbl.db"
    assert default.is_file()
    assert f"wrote to sqlite:///{default}" in result.stderr


def test_every_write_names_the_store(bare_cli: Cli, database_url: str) -> None:
    assert bare_cli("migrate").returncode == 0
    wrote = f"wrote to {describe_store(database_url)}"
    for command in (
        ["entries", "add", "white", "ip", "192.0.2.1"],
        ["entries", "remove", "1"],
        ["token", "create", "--name", "ops", "--scope", "read"],
        ["token", "revoke", "ops"],
        ["expire"],
    ):
        result = bare_cli(*command)
        assert result.returncode == 0, result.stderr
        assert wrote in result.stderr, (command, result.stderr)
    imported = bare_cli("import", "-", input="192.0.2.9 REJECT\n")
    assert wrote in imported.stderr
    listed = bare_cli("entries", "list")  # a read names nothing
    assert "wrote to" not in listed.stderr


def test_config_from_the_environment_is_reported_as_the_environment(tmp_path: Path) -> None:
    line = _one_line_error(make_cli(tmp_path)("entries", "list", S25RBL_CONFIG="/nope"), 2)
    assert line == "s25rbl: config: S25RBL_CONFIG: /nope: no such file"
    line = _one_line_error(make_cli(tmp_path)("entries", "list", "--config", "/nope"), 2)
    assert line == "s25rbl: config: --config: /nope: no such file"


def test_an_unreachable_postgresql_is_reported_as_unreachable(tmp_path: Path) -> None:
    url = "postgresql://s25rbl@127.0.0.1:9/test"  # the discard port: nothing listens there
    cli = make_cli(tmp_path, S25RBL_DATABASE__URL=url)
    for command in (["entries", "list"], ["migrate"]):
        line = _one_line_error(cli(*command), 1)
        assert "unreachable" in line and "127.0.0.1:9" in line, line
        assert "cannot migrate" not in line


def test_migrate_moves_to_a_revision_down_and_up(bare_cli: Cli) -> None:
    head = bare_cli("migrate")
    assert head.returncode == 0, head.stderr
    top = re.search(r"database at revision (\S+)", head.stdout)
    assert top is not None
    down = bare_cli("migrate", "--revision", "0003")
    assert down.returncode == 0, down.stderr
    assert "database at revision 0003" in down.stdout
    assert "downgraded to 0003" in down.stderr
    again = bare_cli("migrate", "--revision", "0003")
    assert "database at revision 0003" in again.stdout and "current to 0003" in again.stderr
    up = bare_cli("migrate")
    assert up.returncode == 0 and f"database at revision {top.group(1)}" in up.stdout
    assert bare_cli("entries", "add", "white", "ip", "192.0.2.1").returncode == 0  # usable again


def test_a_bad_revision_is_one_line(bare_cli: Cli) -> None:
    line = _one_line_error(bare_cli("migrate", "--revision", "nope"), 2)
    assert line.startswith("s25rbl: --revision: no revision 'nope' (there are: head, base, 0001")
