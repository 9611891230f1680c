"""Interop: the real SpamAssassin uses s25rbl as a DNSBL through ``check_rbl``.

SpamAssassin runs with a throw-away configuration that loads only the plugins a DNSBL
rule needs (``Check`` runs the rules, ``DNSEval`` provides ``check_rbl``), and sends every
DNS query to our server (``dns_server``). No other network test is loaded. The relay
addresses are public-looking (81.2.69.0/24) because SpamAssassin skips private addresses
in DNSBL checks; no packet is ever sent to them: they appear only in Received headers and
in the DNS data the tests' own authoritative upstream serves.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server import RunningServer
from tests.support.fakedns import FakeAuthority

pytestmark = pytest.mark.interop

ZONE = "bl.s25rbl.test"
DEPLOY_RULES = Path(__file__).resolve().parents[2] / "deploy" / "spamassassin" / "s25rbl.cf"
MX = "mx.s25rbl-site.example"  # our trusted MX, the one that adds the topmost Received header
MX_IP = "192.0.2.25"

DYNAMIC_RELAY = ("81.2.69.77", "p3456-ipad21.tokyo.ocn.ne.jp")  # S25R rule 1, forward-confirmed
CLEAN_RELAY = ("81.2.69.78", "mx.relay.example.org")  # a mail server's name, forward-confirmed
NO_PTR_RELAY = "81.2.69.79"  # no reverse name at all: rule 0

SUB_RULES = {
    "S25R_RULE": "127.0.0.2",
    "S25R_BLACKLIST": "127.0.0.3",
    "S25R_NO_RDNS": "127.0.0.4",
    "S25R_TEMPFAIL": "127.0.0.5",
}
OUR_RULES = {"S25R_LISTED", "S25R_TXT", *SUB_RULES}


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed; this interop test needs the real program"
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
        pytest.skip(message)
    return path


def _write_config(server: RunningServer, tmp_path: Path) -> tuple[Path, Path]:
    """Write (site dir, rules dir): plugins and site settings, then our rules."""
    site = tmp_path / "sa-site"
    site.mkdir(exist_ok=True)
    # Only what a DNSBL rule needs: Check runs the rules, DNSEval provides check_rbl.
    (site / "init.pre").write_text(
        "loadplugin Mail::SpamAssassin::Plugin::Check\nloadplugin Mail::SpamAssassin::Plugin::DNSEval\n"
    )
    settings = [
        f"dns_server {server.host}:{server.port}",
        "dns_available yes",
        "rbl_timeout 10",
        # Only our MX is trusted (and 127/8, always implied), so the relay that connected to
        # it is the last external one. The MX's address appears in no header.
        "clear_trusted_networks",
        f"trusted_networks {MX_IP}",
        "clear_internal_networks",
        f"internal_networks {MX_IP}",
        # The stock 20_aux_tlds.cf is not loaded: name the TLDs our messages use.
        "util_rb_tld example jp org test",
        "util_rb_2tld ne.jp",
        # Nothing is learned or written outside tmp_path.
        "use_bayes 0",
        "bayes_auto_learn 0",
        f"bayes_path {tmp_path / 'bayes'}",
        # The stock rules (10_default_prefs.cf) are not loaded: define the header and report.
        "report_safe 0",
        'add_header all Status "_YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_"',
        "clear_report_template",
        "report Content analysis details:   (_SCORE_ points, _REQD_ required)",
        "report _SUMMARY_",
        "ifplugin Mail::SpamAssassin::Plugin::AWL",
        "use_auto_welcomelist 0",
        "endif",
        "ifplugin Mail::SpamAssassin::Plugin::TxRep",
        "use_txrep 0",
        "endif",
    ]
    (site / "local.cf").write_text("\n".join(settings) + "\n")
    # The rules are the shipped deploy/spamassassin/s25rbl.cf, pointed at the test zone, so
    # the file operators copy is the file tested.
    shipped = (DEPLOY_RULES.read_text()).replace("bl.s25r.example.org.", f"{ZONE}.")
    assert f"'{ZONE}.'" in shipped
    # The default rules directory holds our rules only: no stock rule is loaded.
    rules = tmp_path / "sa-rules"
    rules.mkdir(exist_ok=True)
    (rules / "50_s25rbl.cf").write_text(shipped)
    return site, rules


def _message(relay_ip: str, relay_name: str | None) -> str:
    shown = f"{relay_name} ({relay_name} [{relay_ip}])" if relay_name else f"unknown ([{relay_ip}])"
    return (
        f"Received: from {shown}\r\n"
        f"\tby {MX} (Postfix) with ESMTP id 4Xq2Lz0Zk1z9sW\r\n"
        "\tfor <postmaster@s25rbl-site.example>; Tue, 04 Jun 2024 10:00:00 +0900 (JST)\r\n"
        "From: Sender <sender@example.org>\r\n"
        "To: <postmaster@s25rbl-site.example>\r\n"
        "Subject: interop test\r\n"
        "Date: Tue, 04 Jun 2024 09:59:58 +0900\r\n"
        "Message-ID: <interop-test@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "Hello, this is a plain test message.\r\n"
    )


@pytest.fixture
def spamassassin() -> str:
    return _require("spamassassin")


def _run_spamassassin(
    program: str, server: RunningServer, tmp_path: Path, message: str
) -> subprocess.CompletedProcess[str]:
    site, rules = _write_config(server, tmp_path)
    prefs = tmp_path / "user_prefs"
    prefs.write_text("")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C"}
    return subprocess.run(
        [
            program,
            "-t",
            "-D",
            "dns,dnseval,async,check,config",
            f"--configpath={rules}",
            f"--siteconfigpath={site}",
            f"--prefspath={prefs}",
        ],
        input=message,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )


@pytest.fixture
def passwd_state_dir() -> Iterator[None]:
    """Remove the empty ``~/.spamassassin`` SpamAssassin creates in the passwd home directory.

    SpamAssassin 4 picks a "global state dir" for its dns_block_rule files by creating
    ``.spamassassin`` in the home directory from getpwuid() (not $HOME, which points into
    tmp_path) and writing and deleting a probe file there. Nothing stays in it; if the test
    created it, the test removes it again.
    """
    home = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".spamassassin"
    existed = home.exists()
    yield
    if not existed:
        with contextlib.suppress(OSError):  # not empty or already gone: leave it alone
            home.rmdir()


def _tests_hit(output: str) -> set[str]:
    """The rule names in the X-Spam-Status header (folded lines unfolded)."""
    headers = output.split("\n\n", 1)[0]
    unfolded = re.sub(r"\n[ \t]+", " ", headers)
    match = re.search(r"^X-Spam-Status:.*?\btests=(\S*)", unfolded, re.MULTILINE)
    assert match, f"no X-Spam-Status tests= in SpamAssassin output:\n{output}"
    return {t for t in match.group(1).split(",") if t and t != "none"}


def _reverse(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


CASES = [
    ("dynamic-relay", DYNAMIC_RELAY[0], DYNAMIC_RELAY[1], {"S25R_LISTED", "S25R_RULE", "S25R_TXT"}),
    ("clean-relay", CLEAN_RELAY[0], CLEAN_RELAY[1], set()),
    ("no-ptr-relay", NO_PTR_RELAY, None, {"S25R_LISTED", "S25R_NO_RDNS"}),
]


@pytest.mark.parametrize(("ip", "ptr", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_spamassassin_check_rbl_sees_the_verdict(
    spamassassin: str,
    server: RunningServer,
    upstream: FakeAuthority,
    tmp_path: Path,
    passwd_state_dir: None,
    ip: str,
    ptr: str | None,
    expected: set[str],
) -> None:
    assert not ipaddress.ip_address(ip).is_private  # SpamAssassin would skip the DNSBL check
    if ptr is not None:
        upstream.add_ptr(ip, ptr)
        upstream.add_host(ptr, ip)
    upstream.reset_log()

    result = _run_spamassassin(spamassassin, server, tmp_path, _message(ip, ptr))

    assert result.returncode == 0, result.stderr[-4000:]
    assert re.findall(r"^.*\bwarn: .*$", result.stderr, re.MULTILINE) == []  # a clean config
    hits = _tests_hit(result.stdout) & OUR_RULES
    assert hits == expected, result.stderr[-4000:]
    # The DNSBL query really happened: SpamAssassin asked our zone for the relay ...
    query = ".".join(reversed(ip.split("."))) + "." + ZONE
    launched = re.findall(r"async: launching (\w+)/(\S+?),", result.stderr)
    assert ("A", query) in launched, result.stderr[-4000:]
    # ... only our server, and only for our zone (no other network test is loaded) ...
    assert {n for _, n in launched if not n.lower().endswith("." + ZONE)} == set()
    servers = set(re.findall(r"dns: bgsend, DNS servers: (.+)$", result.stderr, re.MULTILINE))
    assert servers == {f"[{server.host}]:{server.port}"}
    # ... and s25rbl computed the verdict from live lookups of that relay.
    assert any(q[:2] == (_reverse(ip), "PTR") for q in upstream.queries), upstream.queries
    if expected:
        assert "S25R_LISTED" in result.stdout  # the report names the rule too
