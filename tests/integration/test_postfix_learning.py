"""Interop: the whole learning loop with the real Postfix, unbound, s25rbl and report-maillog.

The lab of ``tests/integration/netns.py`` (Postfix with the shipped ``deploy/postfix`` files,
unbound in front of s25rbl, SMTP clients from a second namespace) plus the log reporter:
``s25rbl report-maillog --follow`` reads the Postfix instance's ``maillog_file`` inside the MX
namespace and posts each S25R deferral to s25rbl's API there, with a ``report``-scoped token
made by the CLI, exactly as ``deploy/systemd/s25rbl-report-maillog.service`` does on an MX.

The lab's s25rbl learns quickly (``[learning] min_interval = 2`` seconds instead of 60, the
default ``retries = 2`` and window), so a client that retries "at proper intervals" does so
3 s apart. Retries count by when s25rbl receives the reports (product §5); the reporter
follows the log closely (``--interval 0.2``), so each deferral reaches s25rbl well within a
second of Postfix logging it, and each attempt is reported before the next is made:

- a client on a dynamic-looking address sends one message (same MAIL FROM, same RCPT TO) four
  times: the first attempt and its two retries get ``450 4.7.1 ... S25R check, be patient``,
  Postfix logs each deferral, the reporter sends it; once the second retry is reported the
  address is learned, and the next attempt is accepted and delivered;
- a bot that retries only once (plus a hammering third attempt, sooner than min_interval
  after the second) is reported three times yet never learned.

Caching, and why the lab keeps s25rbl's normal ``dns.ttl`` (300 s) for listed answers: the
shipped restriction list asks the whitelist zone first (``permit_dnswl_client``). Before
learning, the client's whitelist answer is NXDOMAIN, which resolvers keep only for
``dns.negative_ttl`` (the SOA minimum; 1 s in the lab, 300 s by default: far below the
intervals at which a real MTA retries). Once learned, the whitelist zone answers 127.0.0.3 as
soon as that negative answer expires, Postfix permits the client and never asks the blocklist
zone again, so the "listed" answer unbound still caches for ``dns.ttl`` does not matter. That
is the deployment story: no cache flush, no short positive TTL. Postfix's own per-process
DNSBL cache is the other half: the lab runs ``max_use = 1`` (one session per smtpd), as a
retry many minutes later would meet a fresh smtpd in a real deployment.

The loop runs twice: with s25rbl's store in a SQLite file, and in a database of the machine's
PostgreSQL, which the s25rbl inside the namespace reaches over the server's Unix socket.

Needs root, ``ip netns``, ``postfix`` and ``unbound``: without them the tests skip with the
reason, or fail when ``S25RBL_CI`` is set.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from dnslib import QTYPE

from tests.integration.netns import (
    BL_ZONE,
    WL_ZONE,
    LabUnavailable,
    MailLab,
    SmtpResult,
    dns_query,
    mail_lab,
    wait_for,
)
from tests.support.databases import BACKENDS, over_unix_socket, pg_database, psql_value

pytestmark = pytest.mark.interop

MIN_INTERVAL = 2.0  # [learning] min_interval in the lab: seconds
# How far apart the clients retry. Postfix's maillog_file stamps whole seconds (3.7: no
# fraction), and the reports carry those stamps: attempts >= 3 s apart by the clock are >= 3 s
# apart in the log too, clear of MIN_INTERVAL whatever the rounding.
SPACING = 3.0
LEARNING = f"""
[learning]
min_interval = {MIN_INTERVAL:g}
retries = 2
"""

# S25R rule 1, forward-confirmed: a small mail server on a dynamic address, retrying properly.
RETRIER = ("198.51.100.21", "p5678-ipad34.tokyo.ocn.ne.jp")
RETRIER_HELO = "smtp.example.com"
RETRIER_FROM = "alice@example.com"
RETRIER_TO = "carol@example.test"
# S25R rule 6, forward-confirmed: a bot that beats greylisting by retrying exactly once.
BOT = ("198.51.100.22", "dhcp22.pool.example.net")
BOT_HELO = "dhcp22.pool.example.net"
BOT_FROM = "promo@example.net"
BOT_TO = "dave@example.test"

BE_PATIENT = "S25R check, be patient"
_SUMMARY = re.compile(
    r"s25rbl report-maillog: (?P<lines>\d+) lines: (?P<reported>\d+) rejections reported "
    r"\((?P<accepted>\d+) accepted, (?P<duplicate>\d+) duplicate, (?P<refused>\d+) refused[^)]*\); "
    r"(?P<ignored>\d+) ignored 5xx, (?P<not_ours>\d+) not ours, (?P<not_rejections>\d+) not rejections, "
    r"(?P<unparsable>\d+) unparsable"
)
# Postfix's maillog_file stamp: "Mar  5 10:11:12 host postfix/smtpd[pid]: ..." (a fraction
# is accepted too, as syslog daemons may add one).
_STAMP = re.compile(r"^(?P<stamp>[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?) ")


# ------------------------------------------------------------------------------ helpers


@dataclass
class Reporter:
    """``s25rbl report-maillog --follow`` running inside the MX namespace, output drained."""

    process: subprocess.Popen[str]
    argv: list[str]
    output: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    def text(self) -> str:
        return "".join(self.output)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (what systemd sends), wait, and return the exit status; SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
                raise AssertionError(
                    f"report-maillog did not stop within {timeout} s of SIGTERM:\n{self.text()}"
                ) from None
        if self.pump is not None:
            self.pump.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)


@dataclass
class Loop:
    """The lab, the reporter, and the tokens the tests use."""

    lab: MailLab
    reporter: Reporter
    read_token: str

    def api(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        """GET ``path`` from s25rbl's API, which listens only inside the MX namespace."""
        host, port = self.lab.s25rbl.api or ("", 0)
        conn = http.client.HTTPConnection(host, port, timeout=10)
        with self.lab.mx.entered():
            conn.connect()  # the socket is created in the namespace and stays there
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def learned(self) -> dict[str, dict[str, Any]]:
        """``GET /v1/learned``: learned address -> its item (with ``evidence``)."""
        status, body = self.api("/v1/learned?limit=1000", self.read_token)
        assert status == 200, (status, body)
        return {item["value"]: item for item in json.loads(body)["items"]}

    def reports_accepted(self) -> int:
        """``s25rbl_reports_total{outcome="accepted"}`` from ``/metrics`` (public in the lab)."""
        status, body = self.api("/metrics")
        assert status == 200, (status, body)
        match = re.search(rb'^s25rbl_reports_total\{outcome="accepted"\} (\S+)$', body, re.MULTILINE)
        return int(float(match.group(1))) if match else 0

    def wait_reports(self, count: int, timeout: float = 10) -> None:
        """Until the API has accepted ``count`` reports in all (the reporter sends every 0.2 s)."""
        try:
            wait_for(lambda: self.reports_accepted() >= count, timeout, f"{count} reports accepted", 0.1)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.diagnostics()}") from None
        assert self.reports_accepted() == count, self.diagnostics()

    def whitelist_answer(self, ip: str, server: tuple[str, int] = ("127.0.0.1", 53)) -> list[str]:
        """The A records the whitelist zone gives for ``ip`` (through unbound by default)."""
        return self.zone_answer(ip, WL_ZONE, server)

    def zone_answer(self, ip: str, zone: str, server: tuple[str, int]) -> list[str]:
        name = ".".join(reversed(ip.split("."))) + "." + zone
        reply = dns_query(self.lab.mx, server, name)
        return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]

    def diagnostics(self) -> str:
        return f"{self.lab.diagnostics()}\n--- report-maillog output:\n{self.reporter.text()}"

    def explain(self, result: SmtpResult) -> str:
        return f"\n--- SMTP:\n{result.transcript()}\n{self.diagnostics()}"


def _fail_or_skip(err: LabUnavailable) -> None:
    message = f"the Postfix lab cannot run here: {err}"
    if os.environ.get("S25RBL_CI"):
        pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
    pytest.skip(message)


def start_reporter(lab: MailLab, token: str) -> Reporter:
    assert lab.s25rbl.api is not None
    host, port = lab.s25rbl.api
    argv = [
        sys.executable,
        "-m",
        "s25rbl",
        "--config",
        str(lab.s25rbl.config),
        "report-maillog",
        "--follow",
        "--api",
        f"http://{host}:{port}",
        "--token",
        token,
        "--state",
        str(lab.directory / "report-maillog.state"),
        "--interval",
        "0.2",
        "--poll",
        "0.2",
        str(lab.postfix.maillog),
    ]
    reporter = Reporter(lab.mx.popen(argv), argv)

    def pump() -> None:
        assert reporter.process.stdout is not None
        for line in reporter.process.stdout:
            reporter.output.append(line)

    reporter.pump = threading.Thread(target=pump, name="report-maillog", daemon=True)
    reporter.pump.start()
    try:
        wait_for(
            lambda: reporter.process.poll() is not None or "reporting rejections by" in reporter.text(),
            15,
            "report-maillog to start",
        )
    except AssertionError as err:
        reporter.stop()
        raise AssertionError(f"{err}\n{reporter.text()}") from None
    if reporter.process.poll() is not None:
        raise AssertionError(f"report-maillog exited {reporter.process.returncode}:\n{reporter.text()}")
    return reporter


def create_token(lab: MailLab, name: str, scope: str) -> str:
    made = lab.cli("token", "create", "--name", name, "--scope", scope)
    assert made.returncode == 0, made.stdout + made.stderr
    token = made.stdout.strip()
    assert token and "\n" not in token, made.stdout
    return token


@pytest.fixture(scope="module", params=BACKENDS)
def loop(request: pytest.FixtureRequest) -> Iterator[Loop]:
    """The whole loop, once with s25rbl's store in SQLite and once in PostgreSQL."""
    try:
        with contextlib.ExitStack() as stack:
            database_url = pg_url = None
            if request.param == "postgresql":
                pg_url = stack.enter_context(contextlib.contextmanager(pg_database)())
                database_url = over_unix_socket(pg_url)
            lab = stack.enter_context(mail_lab(s25rbl_extra=LEARNING, database_url=database_url))
            if pg_url is not None:  # the server really keeps its lists there
                assert int(psql_value(pg_url, "SELECT count(*) FROM entries")) > 0
            lab.add_client(*RETRIER)
            lab.add_client(*BOT)
            reporter = start_reporter(lab, create_token(lab, "mx", "report"))
            try:
                yield Loop(lab, reporter, create_token(lab, "reviewer", "read"))
            finally:
                reporter.stop()
    except LabUnavailable as err:
        _fail_or_skip(err)


def deferral_pattern(name: str, ip: str, sender: str, recipient: str, helo: str) -> str:
    """Postfix's log line for an S25R deferral by the blocklist zone, SMTP dialogue included."""
    return (
        rf"NOQUEUE: reject: RCPT from {re.escape(name)}\[{re.escape(ip)}\]: 450 4\.7\.1 Service unavailable; "
        rf"Client host \[{re.escape(ip)}\] blocked using {re.escape(BL_ZONE)}; {BE_PATIENT} \[r\d+\]; "
        rf"from=<{re.escape(sender)}> to=<{re.escape(recipient)}> proto=SMTP helo=<{re.escape(helo)}>$"
    )


def log_time(line: str) -> datetime:
    """The time stamp of a maillog line (classic syslog form, year of today)."""
    match = _STAMP.match(line)
    assert match, f"no syslog time stamp: {line!r}"
    stamp = match.group("stamp")
    form = "%Y %b %d %H:%M:%S.%f" if "." in stamp else "%Y %b %d %H:%M:%S"
    return datetime.strptime(f"{datetime.now().year} {stamp}", form)


def deferred_attempt(
    loop: Loop, client: tuple[str, str], *, helo: str, sender: str, recipient: str
) -> tuple[SmtpResult, str]:
    """One attempt that must get the S25R 450; returns its SMTP result and Postfix's log line."""
    ip, name = client
    mark = loop.lab.postfix.log_size()
    result = loop.lab.smtp(ip, helo=helo, sender=sender, recipients=(recipient,))
    assert result.error is None and len(result.rcpt) == 1, loop.explain(result)
    code, reply = result.rcpt[0]
    assert code == 450, f"expected the S25R 450, got {code} {reply}" + loop.explain(result)
    assert reply.startswith("4.7.1 ") and f"blocked using {BL_ZONE}; {BE_PATIENT}" in reply, loop.explain(
        result
    )
    assert result.data is None, loop.explain(result)
    match = loop.lab.postfix.wait_for_log(
        r"^.*" + deferral_pattern(name, ip, sender, recipient, helo), after=mark
    )
    return result, match.group(0)


# -------------------------------------------------------------------------------- tests


def test_client_retrying_at_proper_intervals_is_learned_and_its_mail_accepted(loop: Loop) -> None:
    ip, name = RETRIER
    lab = loop.lab
    assert ip not in loop.learned()
    base = loop.reports_accepted()

    # The first attempt and two retries, SPACING apart: each deferred, logged and reported.
    lines = []
    for attempt in range(3):
        if attempt:
            time.sleep(SPACING)
        _, line = deferred_attempt(
            loop, RETRIER, helo=RETRIER_HELO, sender=RETRIER_FROM, recipient=RETRIER_TO
        )
        lines.append(line)
        loop.wait_reports(base + attempt + 1)
        if attempt < 2:
            # The first attempt, then one retry: not yet (retries = 2).
            assert ip not in loop.learned(), f"learned after {attempt} retries\n{loop.diagnostics()}"
    times = [log_time(line) for line in lines]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= MIN_INTERVAL for gap in gaps), f"attempts only {gaps} s apart:\n" + "\n".join(lines)

    # The second retry's report made the address learned, on this node at once.
    item = wait_for(lambda: loop.learned().get(ip), 10, f"{ip} in GET /v1/learned")
    assert item["list"] == "white" and item["kind"] == "ip" and item["source"] == "learned", item
    assert item["expires_at"], item
    assert f"<{RETRIER_FROM}>" in item["reason"] and f"<{RETRIER_TO}>" in item["reason"], item
    # The evidence is the three attempts, with what the SMTP dialogue said.
    evidence = item["evidence"]
    assert len(evidence) == 3, json.dumps(evidence, indent=2)
    for report in evidence:
        assert report["client_ip"] == ip, report
        assert report["client_name"] == name, report
        assert report["helo"] == RETRIER_HELO, report
        assert report["sender"] == RETRIER_FROM, report
        assert report["recipient"] == RETRIER_TO, report
        assert report["reporter"], report
    reported = sorted(datetime.fromisoformat(r["time"]) for r in evidence)
    spaced = [(b - a).total_seconds() for a, b in itertools.pairwise(reported)]
    assert all(gap >= MIN_INTERVAL for gap in spaced), json.dumps(evidence, indent=2)

    # s25rbl itself answers at once: whitelisted (.3), and no longer listed in the blocklist.
    s25rbl_dns = lab.s25rbl.dns[0]
    assert loop.whitelist_answer(ip, s25rbl_dns) == ["127.0.0.3"], loop.diagnostics()
    assert loop.zone_answer(ip, BL_ZONE, s25rbl_dns) == [], loop.diagnostics()
    # Through unbound once the earlier NXDOMAIN has left its cache (negative_ttl = 1 s).
    wait_for(lambda: loop.whitelist_answer(ip) == ["127.0.0.3"], 5, "unbound to answer 127.0.0.3", 0.2)

    # The next attempt: permitted by the whitelist zone, the message queued and delivered.
    mark = lab.postfix.log_size()
    result = lab.smtp(ip, helo=RETRIER_HELO, sender=RETRIER_FROM, recipients=(RETRIER_TO,))
    assert result.error is None and result.rcpt and result.rcpt[0][0] == 250, loop.explain(result)
    assert result.data is not None and result.data[0] == 250 and result.queue_id, loop.explain(result)
    lab.postfix.wait_for_log(
        rf"permit: RCPT from {re.escape(name)}\[{re.escape(ip)}\]: action=permit_dnswl_client", after=mark
    )
    lab.postfix.wait_for_log(
        rf"{result.queue_id}: from=<{re.escape(RETRIER_FROM)}>, size=\d+, nrcpt=1 \(queue active\)",
        after=mark,
    )
    lab.postfix.wait_for_log(rf"{result.queue_id}: to=<{re.escape(RETRIER_TO)}>, .*status=sent", after=mark)
    assert "NOQUEUE: reject" not in lab.postfix.log_text()[mark:], loop.diagnostics()


def test_bot_retrying_once_is_not_learned(loop: Loop) -> None:
    ip, _ = BOT
    base = loop.reports_accepted()
    # The first attempt and one proper retry ...
    deferred_attempt(loop, BOT, helo=BOT_HELO, sender=BOT_FROM, recipient=BOT_TO)
    time.sleep(SPACING)
    _, second = deferred_attempt(loop, BOT, helo=BOT_HELO, sender=BOT_FROM, recipient=BOT_TO)
    # ... and, at once, a third attempt sooner than min_interval: still deferred, and it does
    # not count as another retry.
    _, third = deferred_attempt(loop, BOT, helo=BOT_HELO, sender=BOT_FROM, recipient=BOT_TO)
    gap = (log_time(third) - log_time(second)).total_seconds()
    assert gap < MIN_INTERVAL, f"the hammering attempt came {gap} s later: this machine is too slow"

    # All three were reported; the reports were taken, yet nothing was learned.
    loop.wait_reports(base + 3)
    assert ip not in loop.learned(), loop.diagnostics()
    assert loop.whitelist_answer(ip, loop.lab.s25rbl.dns[0]) == [], loop.diagnostics()
    assert loop.zone_answer(ip, BL_ZONE, loop.lab.s25rbl.dns[0]) == ["127.0.0.2"], loop.diagnostics()


def test_reporter_understood_every_deferral_and_stops_cleanly(loop: Loop) -> None:
    lab = loop.lab
    # Every S25R deferral Postfix logged (whichever tests ran) reaches the API exactly once.
    deferrals = re.findall(
        rf"NOQUEUE: reject: RCPT from \S+: 450 4\.7\.1 .*blocked using {re.escape(BL_ZONE)};.*$",
        lab.postfix.log_text(),
        re.MULTILINE,
    )
    loop.wait_reports(len(deferrals))

    status = loop.reporter.stop()
    output = loop.reporter.text()
    assert status == 0, f"report-maillog exited {status}:\n{output}"
    summaries = [m.groupdict() for m in _SUMMARY.finditer(output)]
    assert summaries, f"no summary from report-maillog:\n{output}"
    counts = {key: int(value) for key, value in summaries[-1].items()}
    assert counts["reported"] == len(deferrals), output
    assert counts["accepted"] == len(deferrals), output
    assert counts["duplicate"] == counts["refused"] == 0, output
    assert counts["unparsable"] == 0, output
    assert counts["ignored"] == counts["not_ours"] == 0, output
    # Every line read was classified: our deferrals, and Postfix's other lines (a line or two
    # logged after the reporter's last poll may be left for its next start).
    assert counts["lines"] == counts["reported"] + counts["not_rejections"], output
    assert counts["lines"] <= len(lab.postfix.log_text().splitlines()), output
    assert not re.search(r"\b(WARNING|ERROR|Traceback)\b", output), output
