"""Interop: a real Exim runs the shipped ``deploy/exim/s25rbl-policy.acl`` (RCPT) and
``s25rbl-policy-data.acl`` (DATA) against s25rbl's real policy service in the mail lab.

Exim asks with ``${readsocket}``, one connection per request; the tarpit is Exim's ``delay``.
The lab's node runs taRgrey with a 3 s tarpit and a 10 s greylisting delay. Needs root,
``ip netns``, unbound and an Exim binary (``scripts/unpack-exim.sh``, or ``S25RBL_TEST_EXIM``):
without them the tests skip with the reason, or fail when ``S25RBL_CI`` is set.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import smtplib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.exim import Exim, find_exim, shipped_acl
from tests.integration.netns import MX_IP, REPO, LabUnavailable, MailLab, SmtpResult, mail_lab, wait_for

pytestmark = pytest.mark.interop

TARPIT, DELAY = 3, 10
POLICY = f"tarpit = {TARPIT}\ndelay = {DELAY}\n"
HELO = "mail.example.com"
RECIPIENTS = ("user@example.test", "other@example.test")
POLICY_ACL = REPO / "deploy" / "exim" / "s25rbl-policy.acl"
POLICY_DATA_ACL = REPO / "deploy" / "exim" / "s25rbl-policy-data.acl"
SHIPPED_SERVICE = "127.0.0.1:10030"
PORT, NOBODY_PORT = 2540, 2541


def dynamic(n: int) -> tuple[str, str]:
    return f"198.51.100.{n}", f"p{n}-ipad{n}.tokyo.ocn.ne.jp"


CLEAN = ("198.51.100.50", "mail.example.org")


@dataclass
class EximPolicy:
    lab: MailLab
    exim: Exim  # asks the lab's s25rbl
    orphan: Exim  # asks a port where nothing listens: s25rbl stopped
    token: str

    def smtp(self, client: tuple[str, str], sender: str, port: int = PORT, **kw: Any) -> SmtpResult:
        return self.lab.smtp(client[0], helo=HELO, sender=sender, port=port, **kw)

    def api(self, path: str) -> Any:
        assert self.lab.s25rbl.api is not None
        conn = http.client.HTTPConnection(*self.lab.s25rbl.api, timeout=10)
        with self.lab.mx.entered():
            conn.connect()
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def explain(self, result: SmtpResult | None = None) -> str:
        smtp = f"\n--- SMTP:\n{result.transcript()}" if result is not None else ""
        return f"{smtp}\n{self.exim.diagnostics()}\n--- s25rbl:\n{''.join(self.lab.s25rbl.output[-30:])}"

    def logged(self, pattern: str) -> None:
        regex = re.compile(pattern, re.MULTILINE)
        try:
            wait_for(
                lambda: regex.search("".join(self.lab.s25rbl.output)), 10, f"/{pattern}/ in s25rbl's log"
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.explain()}") from None

    def delivered(self, exim: Exim, result: SmtpResult, count: int) -> None:
        assert result.error is None and [c for c, _ in result.rcpt] == [250] * count, self.explain(result)
        assert result.data is not None and result.data[0] == 250, self.explain(result)
        message_id = re.search(r"\bid=(\S+)", result.data[1])
        assert message_id, self.explain(result)
        exim.wait_for_log(rf"{re.escape(message_id.group(1))} => :blackhole:")


def _unavailable(err: LabUnavailable) -> None:
    message = f"the Exim lab cannot run here: {err}"
    if os.environ.get("S25RBL_CI"):
        pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def lab() -> Iterator[EximPolicy]:
    try:
        find_exim()
        with mail_lab(start_postfix=False, s25rbl_policy=POLICY) as the_lab, contextlib.ExitStack() as stack:
            for n in range(51, 55):
                the_lab.add_client(*dynamic(n))
            the_lab.add_client(*CLEAN)
            assert the_lab.s25rbl.policy is not None
            service = f"127.0.0.1:{the_lab.s25rbl.policy[1]}"
            made = the_lab.cli("token", "create", "--name", "reader", "--scope", "read")
            assert made.returncode == 0, made.stderr

            def instance(name: str, port: int, to: str) -> Exim:
                acl = shipped_acl(POLICY_ACL, {SHIPPED_SERVICE: to})
                data = shipped_acl(POLICY_DATA_ACL, {SHIPPED_SERVICE: to})
                return stack.enter_context(
                    Exim(the_lab.mx, the_lab.directory / name, acl, listen=(MX_IP, port), data_acl=data)
                )

            yield EximPolicy(
                the_lab,
                instance("exim-policy", PORT, service),
                instance("exim-orphan", NOBODY_PORT, "127.0.0.1:9"),
                made.stdout.strip(),
            )
    except LabUnavailable as err:
        _unavailable(err)


def test_a_patient_client_is_tarpitted_once_and_its_message_is_a_pass(lab: EximPolicy) -> None:
    client = dynamic(51)
    result = lab.smtp(client, "alice@example.com", recipients=RECIPIENTS)
    lab.delivered(lab.exim, result, 2)
    ip = re.escape(client[0])
    lab.logged(rf"\[{ip}\] RCPT .*to=<user@example\.test> .*: SLEEP {TARPIT} \(tarpit")
    lab.logged(rf"\[{ip}\] RCPT .*to=<other@example\.test> .*: DUNNO \(session: a later recipient")
    lab.logged(rf"\[{ip}\] END-OF-MESSAGE .*tarpit-delivered")
    # Written a moment after the decision: the node writes in batches.
    records = wait_for(
        lambda: [r for r in lab.api(f"/v1/tarpits?client={client[0]}")["items"] if r["delivered_at"]] or None,
        5,
        "the delivered tarpit record",
        0.1,
    )
    assert [r["client_name"] for r in records] == [client[1]]


def test_a_client_that_hung_up_is_deferred_with_the_s25r_text_and_accepted_after_the_delay(
    lab: EximPolicy,
) -> None:
    client = dynamic(52)
    started = time.monotonic()
    smtp = smtplib.SMTP(local_hostname=HELO, timeout=20, source_address=(client[0], 0))
    try:
        with lab.lab.net.entered():
            smtp.sock = socket.create_connection((MX_IP, PORT), 20, (client[0], 0))
        smtp.file = None
        smtp.getreply()
        smtp.ehlo(HELO)
        assert smtp.mail("bob@example.com")[0] == 250
        smtp.putcmd("rcpt", f"TO:<{RECIPIENTS[0]}>")  # and hang up during the delay
    finally:
        smtp.close()
    lab.logged(rf"\[{re.escape(client[0])}\] RCPT .*SLEEP {TARPIT}")
    time.sleep(max(0.0, started + 2 * TARPIT + 1 - time.monotonic()))
    deferred = lab.smtp(client, "bob@example.com")
    assert deferred.rcpt == [(451, "S25R check, be patient [r1]")], lab.explain(deferred)
    lab.exim.wait_for_log(
        r"temporarily rejected RCPT <user@example\.test>: S25R check, be patient \[r1\]", "reject"
    )
    time.sleep(max(0.0, started + DELAY + 1 - time.monotonic()))
    lab.delivered(lab.exim, lab.smtp(client, "bob@example.com"), 1)


def test_a_clean_client_is_accepted_and_a_stopped_service_lets_mail_through(lab: EximPolicy) -> None:
    lab.delivered(lab.exim, lab.smtp(CLEAN, "carol@example.com"), 1)
    lab.delivered(lab.orphan, lab.smtp(dynamic(53), "dave@example.com", port=NOBODY_PORT), 1)
    for exim in (lab.exim, lab.orphan):
        assert exim.log_text("panic") == "", exim.diagnostics()
        complaints = [
            line
            for line in exim.log_text().splitlines()
            if re.search(r"\b(failed to expand|error in ACL|syntax error)\b", line, re.IGNORECASE)
        ]
        assert not complaints, "\n".join(complaints)
