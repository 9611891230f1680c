"""Interop: the real rspamd (3.4) asks s25rbl through its rbl module, configured with the shipped
``deploy/rspamd/rbl.conf``.

rspamd runs in the foreground (``rspamd -f``) with Debian's stock configuration
(``/etc/rspamd``) and a private ``LOCAL_CONFIDIR`` holding what an operator would add:
``local.d/rbl.conf`` is the shipped file (zones substituted), merged with the stock rbl
module's lists, and ``local.d/options.inc`` makes s25rbl the only nameserver. Every other
module is disabled (``enabled = false``) to keep the scans small; the stock DNS lists stay on
and are refused by s25rbl (their ``*_FAIL`` symbols say ``query refused``), which shows that
rspamd asks nobody else.

Everything runs in a network namespace of its own with only a loopback interface
(``tests/integration/netns.py``): s25rbl on 127.0.0.1:5300 there, its upstream the tests'
fake authority, rspamd's workers on their default ports. Nothing rspamd does can leave it.
Messages are scanned with ``rspamc`` (``--ip``, ``--hostname``, ``--helo``) run inside the
namespace.

Needs root, ``ip netns`` and rspamd (Debian package ``rspamd``, which runs here without
systemd): without them the tests skip with the reason, or fail when ``S25RBL_CI`` is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.netns import (
    BL_ZONE,
    HL_ZONE,
    PREFIX,
    SHIPPED_ZONES,
    LabUnavailable,
    NetNamespace,
    check_netns_support,
    cleanup_stale,
    start_reaper,
    start_s25rbl,
    write_s25rbl_config,
)
from tests.integration.server import RunningServer
from tests.support.fakedns import FakeAuthority

pytestmark = pytest.mark.interop

DEPLOY_RBL = Path(__file__).resolve().parents[2] / "deploy" / "rspamd" / "rbl.conf"
STOCK_CONFIG = Path("/etc/rspamd/rspamd.conf")
NORMAL_WORKER = "127.0.0.1:11333"  # rspamd's default, inside the namespace
S25RBL_DNS = "127.0.0.1:5300"

# Public-looking addresses: rspamd's rbl module skips private ones (exclude_private_ips). No
# packet is sent to them; they only appear in rspamc's --ip and in the fake authority's data.
DYNAMIC = ("81.2.69.77", "p3456-ipad21.tokyo.ocn.ne.jp")  # S25R rule 1, forward-confirmed
CLEAN = ("81.2.69.78", "mx.relay.example.org")
NO_PTR = "81.2.69.79"
BLACKLISTED = "81.2.69.80"  # operator blacklist by IP
TEMPFAIL = "81.2.69.81"  # the upstream never answers its PTR query
DYNAMIC_HELO = "dhcp1234.pool.example.net"  # rule 6
BLACKLISTED_DOMAIN = "spam-relay.example.com"
OUR_SYMBOLS = {
    "S25RBL",
    "S25RBL_RULE",
    "S25RBL_BLACKLIST",
    "S25RBL_NO_RDNS",
    "S25RBL_TEMPFAIL",
    "S25RBL_NAME",
    "S25RBL_NAME_RULE",
    "S25RBL_NAME_BLACKLIST",
}
START_TIMEOUT = 120.0  # rspamd compiles its TLD list and regexps at start: ~15 s here


def _unavailable(message: str) -> None:
    if os.environ.get("S25RBL_CI"):
        pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
    pytest.skip(message)


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _unavailable(f"{name} is not installed (Debian package: rspamd); this interop test needs it")
        raise AssertionError("unreachable")
    return path


def deploy_rbl_conf() -> str:
    """``deploy/rspamd/rbl.conf`` with the lab's zones; fails if the file changed shape."""
    text = DEPLOY_RBL.read_text()
    for shipped in (BL_ZONE, HL_ZONE):
        original = next(k for k, v in SHIPPED_ZONES.items() if v == shipped)
        if f'rbl = "{original}";' not in text:
            raise AssertionError(f"deploy/rspamd/rbl.conf no longer names {original}")
        text = text.replace(original, shipped)
    return text


@dataclass
class Rspamd:
    ns: NetNamespace
    directory: Path
    process: subprocess.Popen[str]
    s25rbl: RunningServer
    upstream: FakeAuthority

    @property
    def log(self) -> Path:
        return self.directory / "log" / "rspamd.log"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self, lines: int = 40) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"\n--- rspamd log tail ({self.log}):\n{tail}\n--- s25rbl:\n" + "".join(
            self.s25rbl.output[-20:]
        )

    def scan(
        self, ip: str, *, hostname: str | None = None, helo: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """``rspamc --json symbols`` of a small message from ``ip``; returns the parsed reply."""
        argv = ["rspamc", "-h", NORMAL_WORKER, "--json", "-t", str(timeout - 5), "--ip", ip]
        if hostname is not None:
            argv += ["--hostname", hostname]
        if helo is not None:
            argv += ["--helo", helo]
        received = f"from {helo or 'unknown'} ({hostname or 'unknown'} [{ip}])"
        message = (
            f"Received: {received}\r\n\tby mx.s25rbl-site.example (Postfix) with ESMTP id 4Xq2Lz0Zk1z9sW;\r\n"
            "\tTue, 04 Jun 2024 10:00:00 +0900\r\n"
            "From: Sender <sender@example.org>\r\nTo: <postmaster@s25rbl-site.example>\r\n"
            "Subject: rspamd interop\r\nDate: Tue, 04 Jun 2024 09:59:58 +0900\r\n"
            "Message-ID: <rspamd-interop@example.org>\r\n\r\nHello.\r\n"
        )
        result = subprocess.run(
            self.ns.argv(*argv, "symbols"), input=message, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"rspamc failed: {result.stdout}{result.stderr}" + self.diagnostics()
        try:
            reply: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"rspamc printed no JSON:\n{result.stdout}" + self.diagnostics()) from None
        return reply

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # the main process stops its workers
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        # Workers left behind (they should not be) die with the namespace in ns.delete().


def _symbols(reply: dict[str, Any]) -> dict[str, list[str]]:
    """symbol -> its options (e.g. ``81.2.69.77:from``)."""
    found = reply.get("symbols")
    assert isinstance(found, dict), reply
    return {name: list(sym.get("options") or []) for name, sym in found.items()}


def _ours(reply: dict[str, Any]) -> dict[str, list[str]]:
    return {name: opts for name, opts in _symbols(reply).items() if name.startswith("S25RBL")}


def _write_config(directory: Path) -> list[str]:
    """The operator's additions in a private LOCAL_CONFDIR; returns rspamd's argv."""
    local = directory / "etc" / "local.d"
    override = directory / "etc" / "override.d"
    for path in (local, override, directory / "db", directory / "run", directory / "log"):
        path.mkdir(parents=True, exist_ok=True)
    # The shipped file, where its first line says it goes.
    (local / "rbl.conf").write_text(deploy_rbl_conf())
    (local / "options.inc").write_text(
        "# s25rbl is the only nameserver: it refuses every name outside its zones.\n"
        f'dns {{ nameserver = ["{S25RBL_DNS}"]; }}\n'
        # Probe the lists every second instead of every minute, so the test sees it happen.
        "monitoring_watch_interval = 1s;\n"
    )
    (override / "logging.inc").write_text(
        f'type = "file";\nfilename = "{directory / "log" / "rspamd.log"}";\nlevel = "info";\n'
        'debug_modules = ["monitored"];\n'
    )
    # Only the rbl module (and rspamd's built-in rules): no fuzzy, SPF, DKIM, phishing maps ...
    for module in sorted(Path("/etc/rspamd/modules.d").glob("*.conf")):
        if module.stem != "rbl":
            (local / module.name).write_text("enabled = false;\n")
    (override / "worker-proxy.inc").write_text("enabled = false;\n")
    return [
        "rspamd",
        "-f",
        "-u",
        "root",
        "-g",
        "root",
        "-c",
        str(STOCK_CONFIG),
        f"--var=LOCAL_CONFDIR={directory / 'etc'}",
        f"--var=DBDIR={directory / 'db'}",
        f"--var=RUNDIR={directory / 'run'}",
        f"--var=LOGDIR={directory / 'log'}",
    ]


def _populate(upstream: FakeAuthority) -> None:
    for ip, name in (DYNAMIC, CLEAN):
        upstream.add_ptr(ip, name)
        upstream.add_host(name, ip)
    upstream.add_ptr(BLACKLISTED, "mail.blacklisted.example.org")
    upstream.add_host("mail.blacklisted.example.org", BLACKLISTED)
    upstream.behave(TEMPFAIL, "timeout")


def _drain(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ValueError, OSError):
        assert process.stdout is not None
        for _ in process.stdout:
            pass


@contextlib.contextmanager
def rspamd_lab() -> Iterator[Rspamd]:
    check_netns_support()
    _program("rspamd")
    _program("rspamc")
    if not STOCK_CONFIG.exists():
        raise LabUnavailable(f"{STOCK_CONFIG} is missing: the rspamd package is incomplete")
    cleanup_stale()
    tag = f"{PREFIX}{os.getpid()}-rspamd"
    with contextlib.ExitStack() as stack:
        reaper = start_reaper()
        stack.callback(reaper.wait, 10)
        stack.callback(reaper.terminate)
        directory = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, directory, True)
        ns = NetNamespace(tag)
        stack.callback(ns.delete)
        ns.create()

        upstream = FakeAuthority()
        with ns.entered():
            upstream.start()
        stack.callback(upstream.stop)
        _populate(upstream)

        config = write_s25rbl_config(
            directory / "s25rbl.toml",
            listen=[S25RBL_DNS],
            upstream=("127.0.0.1", upstream.port),
            db=directory / "s25rbl.db",
        )
        s25rbl = start_s25rbl(ns, config)
        stack.callback(s25rbl.stop)
        for kind, value in (("ip", BLACKLISTED), ("domain", BLACKLISTED_DOMAIN)):
            added = s25rbl.cli("entries", "add", "black", kind, value, "--reason", "rspamd interop")
            assert added.returncode == 0, added.stdout + added.stderr

        process = ns.popen(_write_config(directory))
        # rspamd logs to its file; drain stdout anyway so it can never block on the pipe.
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        rspamd = Rspamd(ns, directory, process, s25rbl, upstream)
        stack.callback(rspamd.stop)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"rspamd exited {process.returncode}" + rspamd.diagnostics())
            # rspamc has no ping: scan a tiny message.
            probe = subprocess.run(
                ns.argv("rspamc", "-h", NORMAL_WORKER, "-t", "5", "symbols"),
                input="Subject: probe\r\n\r\nprobe\r\n",
                capture_output=True,
                text=True,
                timeout=15,
            )
            if probe.returncode == 0 and "Action:" in probe.stdout:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"rspamd did not answer within {START_TIMEOUT} s" + rspamd.diagnostics())
            time.sleep(0.5)
        yield rspamd


@pytest.fixture(scope="module")
def rspamd() -> Iterator[Rspamd]:
    try:
        with rspamd_lab() as running:
            yield running
    except LabUnavailable as err:
        _unavailable(f"the rspamd lab cannot run here: {err}")


def _assert_hit(rspamd: Rspamd, reply: dict[str, Any], symbol: str, options: Sequence[str]) -> None:
    ours = _ours(reply)
    assert ours == {symbol: list(options)} or (
        set(ours) == {symbol} and sorted(ours[symbol]) == sorted(options)
    ), (
        f"expected only {symbol} {list(options)}, got {ours}\n{json.dumps(reply, indent=1)}"
        + rspamd.diagnostics()
    )


# ------------------------------------------------------------------------------ tests


def test_dynamic_client_hits_s25rbl_rule(rspamd: Rspamd) -> None:
    reply = rspamd.scan(DYNAMIC[0], hostname=DYNAMIC[1], helo="mail.example.org")
    ours = _ours(reply)
    assert ours.get("S25RBL_RULE") == [f"{DYNAMIC[0]}:from"], ours
    # rdns names the dynamic host too: the hostname zone agrees.
    assert ours.get("S25RBL_NAME_RULE") == [f"{DYNAMIC[1]}:rdns"], ours
    assert set(ours) == {"S25RBL_RULE", "S25RBL_NAME_RULE"}, ours


def test_client_without_ptr_hits_s25rbl_no_rdns(rspamd: Rspamd) -> None:
    _assert_hit(rspamd, rspamd.scan(NO_PTR, helo="mail.example.org"), "S25RBL_NO_RDNS", [f"{NO_PTR}:from"])


def test_blacklisted_client_hits_s25rbl_blacklist(rspamd: Rspamd) -> None:
    reply = rspamd.scan(
        BLACKLISTED, hostname="mail.blacklisted.example.org", helo="mail.blacklisted.example.org"
    )
    _assert_hit(rspamd, reply, "S25RBL_BLACKLIST", [f"{BLACKLISTED}:from"])


def test_clean_client_hits_nothing(rspamd: Rspamd) -> None:
    reply = rspamd.scan(CLEAN[0], hostname=CLEAN[1], helo=CLEAN[1])
    assert _ours(reply) == {}, json.dumps(reply, indent=1) + rspamd.diagnostics()


def test_upstream_timeout_hits_s25rbl_tempfail(rspamd: Rspamd) -> None:
    # s25rbl's verdict deadline (1.5 s) is longer than rspamd's DNS timeout (1 s a try): rspamd
    # retransmits, and the answer to the retransmission (code .5) arrives in time.
    _assert_hit(
        rspamd, rspamd.scan(TEMPFAIL, helo="mail.example.org"), "S25RBL_TEMPFAIL", [f"{TEMPFAIL}:from"]
    )


def test_dynamic_helo_hits_s25rbl_name_rule(rspamd: Rspamd) -> None:
    reply = rspamd.scan(CLEAN[0], hostname=CLEAN[1], helo=DYNAMIC_HELO)
    _assert_hit(rspamd, reply, "S25RBL_NAME_RULE", [f"{DYNAMIC_HELO}:helo"])


def test_blacklisted_domain_hits_s25rbl_name_blacklist(rspamd: Rspamd) -> None:
    helo = f"smtp7.{BLACKLISTED_DOMAIN}"
    reply = rspamd.scan(CLEAN[0], hostname=CLEAN[1], helo=helo)
    _assert_hit(rspamd, reply, "S25RBL_NAME_BLACKLIST", [f"{helo}:helo"])


def test_rspamd_monitoring_accepts_our_zones(rspamd: Rspamd) -> None:
    # rspamd probes each list (1.0.0.127 under the address zone, a random name under the
    # hostname zone) and turns a list off when the probe gets an answer other than "not
    # listed". With monitoring_watch_interval = 1s a few rounds have run by now.
    deadline = time.monotonic() + 10
    while True:
        log = rspamd.log_text()
        done = all(
            len(re.findall(rf"dns callback for {re.escape(zone)} in ", log)) >= 2
            for zone in (BL_ZONE, HL_ZONE)
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done, "rspamd never probed both zones" + rspamd.diagnostics(80)
    for zone in (BL_ZONE, HL_ZONE):
        complaints = [
            line
            for line in log.splitlines()
            if zone in line and ("was expected" in line or "offline" in line)
        ]
        assert not complaints, "\n".join(complaints)
    # ... and the lists still answer after those rounds.
    assert "S25RBL_RULE" in _ours(rspamd.scan(DYNAMIC[0]))


def _refused_outside_zones(rspamd: Rspamd) -> float:
    """How many questions s25rbl refused as outside its zones, from its /metrics."""
    assert rspamd.s25rbl.api is not None
    host, port = rspamd.s25rbl.api
    url = f"http://{host}:{port}/metrics"
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    text = rspamd.ns.exec(sys.executable, "-c", fetch).stdout
    line = re.compile(
        r'^s25rbl_dns_queries_total\{(?=[^}]*zone="-")(?=[^}]*result="refused")[^}]*\} (\S+)$', re.M
    )
    return sum(float(m.group(1)) for m in line.finditer(text))


def test_stock_lists_asked_only_s25rbl(rspamd: Rspamd) -> None:
    # The namespace has no interface but loopback ...
    links = rspamd.ns.ip("-o", "link", "show")
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links
    # ... so the stock lists' questions (a scan's, and their monitors') reach s25rbl, which
    # refuses them as outside its zones. Whether a stock list still shows up as <LIST>_FAIL
    # depends on whether rspamd's monitor has already marked it offline, so only what does
    # show is checked: no stock list was answered by anything else.
    before = _refused_outside_zones(rspamd)
    symbols = _symbols(rspamd.scan(CLEAN[0], hostname=CLEAN[1], helo=CLEAN[1]))
    failed = {name: opts for name, opts in symbols.items() if name.endswith("_FAIL")}
    assert all(opt.endswith("query refused") for opts in failed.values() for opt in opts), failed
    deadline = time.monotonic() + 10
    while _refused_outside_zones(rspamd) <= before:
        assert time.monotonic() < deadline, "no stock-list question reached s25rbl"
        time.sleep(0.5)
