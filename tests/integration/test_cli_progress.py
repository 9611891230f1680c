"""Progress of long CLI work: a line redrawn on standard error when it is a terminal (a real
pseudo-terminal here), nothing of it when it is a pipe (real processes, a real SQLite file)."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_runner import Cli, cli_env, make_cli

LINES = 20_000


def on_terminal(env: dict[str, str], *args: str, stdin: Path | None = None, stdout: Path) -> tuple[int, str]:
    """Run ``s25rbl ARGS`` with standard error on a pseudo-terminal; its exit status and what
    the terminal received."""
    master, slave = pty.openpty()
    with open(stdout, "w") as out, open(stdin or os.devnull) as given:
        process = subprocess.Popen(
            [sys.executable, "-m", "s25rbl", *args], stdin=given, stdout=out, stderr=slave, env=env
        )
        os.close(slave)
        received = bytearray()
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            received += data
        status = process.wait(timeout=120)
    os.close(master)
    return status, received.decode(errors="replace")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, S25RBL_DATABASE__URL=f"sqlite:///{tmp_path / 's25rbl.db'}")


@pytest.fixture
def cli(tmp_path: Path, env: dict[str, str]) -> Cli:
    return make_cli(tmp_path, S25RBL_DATABASE__URL=env["S25RBL_DATABASE__URL"])


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "table"
    path.write_text("".join(f"10.{i // 65536}.{i // 256 % 256}.{i % 256} REJECT\n" for i in range(LINES)))
    return path


def test_migrate_import_and_export_show_progress_on_a_terminal(
    env: dict[str, str], tmp_path: Path, table: Path
) -> None:
    status, seen = on_terminal(env, "migrate", stdout=tmp_path / "out")
    assert status == 0, seen
    assert "\rmigrate: bringing the store to the newest revision" in seen

    status, seen = on_terminal(env, "import", str(table), stdout=tmp_path / "out")
    assert status == 0, seen
    assert f"\rimport: reading {table}" in seen
    assert f"\rimport: checking and adding {LINES:,} lines" in seen
    assert f"imported {LINES} entries" in (tmp_path / "out").read_text()

    status, seen = on_terminal(env, "export", "--format", "json", stdout=tmp_path / "export.json")
    assert status == 0, seen
    assert "\rexport: " in seen and " MB" in seen  # the bytes written so far
    assert (tmp_path / "export.json").stat().st_size > 1_000_000


def test_nothing_of_it_in_a_pipe(cli: Cli, table: Path) -> None:
    for args in (["migrate"], ["import", str(table)], ["export", "--format", "json"]):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        assert "\r" not in result.stderr and f"{args[0]}: " not in result.stderr, result.stderr


def _log(path: Path) -> Path:
    line = (
        "2026-11-23T21:50:01.000000+00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown"
        "[198.51.100.1]: 554 5.7.1 Service unavailable; Client host [198.51.100.1] blocked using "
        "zen.example; listed; from=<a@b.example> to=<x@example.test> proto=ESMTP helo=<bot>\n"
    )
    path.write_text(line * 5000)
    return path


def test_report_maillog_shows_progress_on_a_terminal_only(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        api = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nobody there: the zones come from the config
    log = _log(tmp_path / "mail.log")
    args = ["report-maillog", "--api", api, "--token", "t", "--state", str(tmp_path / "state")]
    status, seen = on_terminal(env, *args, str(log), stdout=tmp_path / "out")
    assert status == 0, seen
    assert "\rreport-maillog: " in seen and " lines read" in seen
    (tmp_path / "state").unlink()
    piped = make_cli(tmp_path, **{k: v for k, v in env.items() if k.startswith("S25RBL_")})(*args, str(log))
    assert piped.returncode == 0, piped.stderr
    assert "lines read" not in piped.stderr and "\r" not in piped.stderr
