"""What the CLI tells an operator: exports that say what they left out, a refused upstream
called refused, a taken port named, the zones a log reporter watches and where they come
from, the banner's zones (real processes, real sockets, a real SQLite file)."""

from __future__ import annotations

import csv
import io
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.cli_runner import Cli, make_cli
from tests.integration.server import RunningServer, start_server, write_config

TABLE = (
    "/\\.dyn\\.example\\.net$/ REJECT\n"
    "/^pool[0-9]+\\./ 450 dynamic pool\n"
    "dip.example.org REJECT\n"
    "192.0.2.7 REJECT spam run\n"
    "/^mail\\.partner\\.example$/ OK\n"
)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    run = make_cli(tmp_path, S25RBL_DATABASE__URL=f"sqlite:///{tmp_path / 's25rbl.db'}")
    assert run("migrate").returncode == 0
    return run


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_export_rbldnsd_says_what_it_left_out(cli: Cli) -> None:
    assert cli("import", "-", input=TABLE).returncode == 0
    result = cli("export", "--format", "rbldnsd")
    assert result.returncode == 0, result.stderr
    said = "left out: 1 domain, 2 regex entries (an ip4set holds IP addresses and networks only)"
    head = result.stdout.splitlines()[:3]
    assert head[1] == f"# {said}", head
    assert f"s25rbl: export: {said}" in result.stderr
    assert "192.0.2.7" in result.stdout.splitlines()
    white = cli("export", "--format", "rbldnsd", "--list", "white")
    assert "left out: 1 regex entries" in white.stderr


def test_export_csv_is_what_import_reads_back(cli: Cli, tmp_path: Path) -> None:
    assert cli("import", "-", input=TABLE).returncode == 0
    exported = cli("export", "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[0] == ["list", "kind", "value", "reason"]
    assert ["black", "ip", "192.0.2.7", "spam run"] in rows and len(rows) == 6
    other = make_cli(tmp_path / "other", S25RBL_DATABASE__URL=f"sqlite:///{tmp_path / 'other.db'}")
    assert other("migrate").returncode == 0
    again = other("import", "--format", "csv", "-", input=exported.stdout)
    assert again.returncode == 0, again.stderr
    assert "imported 5 entries" in again.stdout


def test_a_refused_upstream_is_reported_as_refused(tmp_path: Path) -> None:
    port = _free_port(socket.SOCK_DGRAM)  # nothing listens there: ICMP port unreachable
    upstream = f"127.0.0.1:{port}"
    cli = make_cli(
        tmp_path,
        S25RBL_DATABASE__URL=f"sqlite:///{tmp_path / 's25rbl.db'}",
        S25RBL_RESOLVER__UPSTREAMS=upstream,
    )
    assert cli("migrate").returncode == 0
    result = cli("check", "203.0.113.7")
    assert result.returncode == 0, result.stderr
    assert f"PTR lookup: refused by {upstream} (connection refused" in result.stdout
    assert "timeout" not in result.stdout


@pytest.mark.parametrize("taken", ["dns", "api"])
def test_a_taken_port_is_named(tmp_path: Path, taken: str) -> None:
    kind = socket.SOCK_DGRAM if taken == "dns" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = int(holder.getsockname()[1])
        cli = make_cli(
            tmp_path,
            S25RBL_DATABASE__URL=f"sqlite:///{tmp_path / 's25rbl.db'}",
            S25RBL_DNS__LISTEN=f"127.0.0.1:{port}" if taken == "dns" else "127.0.0.1:0",
            S25RBL_API__LISTEN=f"127.0.0.1:{port}" if taken == "api" else "127.0.0.1:0",
            S25RBL_POLICY__LISTEN="",
        )
        result = cli("serve", timeout=60)
    assert result.returncode == 1, result.stderr
    what = "DNS over UDP" if taken == "dns" else "REST API"
    assert f"s25rbl: cannot listen on 127.0.0.1:{port} ({what}): Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RunningServer]:
    """A node serving zones other than the defaults (bl.served.example, hl.served.example)."""
    config = write_config(tmp_path / "s25rbl.toml", ("127.0.0.1", 9), tmp_path / "state" / "s25rbl.db")
    text = config.read_text().replace('zone = "bl.s25rbl.test"', 'zone = "bl.served.example"')
    config.write_text(text.replace("[dns]\n", '[dns]\nhostname_zone = "hl.served.example"\n', 1))
    running = start_server(config)
    try:
        yield running
    finally:
        running.stop()


def _log(path: Path, zone: str) -> Path:
    when = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    line = (
        f"{when} mx1 postfix/smtpd[100]: NOQUEUE: reject: RCPT from p1-pool.example.net[192.0.2.9]: "
        f"450 4.7.1 Service unavailable; Client host [192.0.2.9] blocked using {zone}; "
        "S25R check, be patient [r1]; from=<a@example.org> to=<b@example.test> proto=ESMTP "
        "helo=<p1-pool.example.net>"
    )
    path.write_text(line + "\n")
    return path


def test_the_banner_names_every_zone(served: RunningServer) -> None:
    banner = "\n".join(served.output)
    assert (
        "blocklist zone bl.served.example, whitelist zone wl.s25rbl.test, hostname zone hl.served.example"
        in banner
    )


def test_report_maillog_asks_the_server_which_zones_it_serves(served: RunningServer, tmp_path: Path) -> None:
    token = served.cli("token", "create", "--name", "mx1", "--scope", "report")
    assert token.returncode == 0, token.stderr
    assert served.api is not None
    api = f"http://{served.api[0]}:{served.api[1]}"
    cli = make_cli(tmp_path / "mx1")  # the MTA's host: no configuration, the default zones
    log = _log(tmp_path / "mail.log", "bl.served.example")
    result = cli(
        "report-maillog",
        "--api",
        api,
        "--token",
        token.stdout.strip(),
        "--state",
        str(tmp_path / "reporter.state"),
        str(log),
    )
    assert result.returncode == 0, result.stderr
    said = f"reporting rejections by bl.served.example, hl.served.example (from the server at {api})"
    assert said in result.stderr
    assert "1 rejections reported (1 accepted" in result.stderr


def test_report_maillog_falls_back_on_the_configuration(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{_free_port(socket.SOCK_STREAM)}"  # nobody there
    cli = make_cli(tmp_path)
    log = _log(tmp_path / "mail.log", "zen.example")
    result = cli("report-maillog", "--api", api, "--token", "t", "--state", str(tmp_path / "s"), str(log))
    assert result.returncode == 0, result.stderr
    assert f"cannot ask {api} which zones it serves" in result.stderr
    assert "reporting rejections by bl.s25rbl.test, hl.s25rbl.test (from the configuration (defaults))" in (
        result.stderr
    )


def test_report_maillog_help_describes_its_api_option(tmp_path: Path) -> None:
    shown = make_cli(tmp_path)("report-maillog", "--help")
    flat = " ".join(shown.stdout.split())
    assert "the s25rbl API to send the reports to" in flat
    assert "instead of the local store" not in flat
    assert "GET /v1/reports/zones" in flat
