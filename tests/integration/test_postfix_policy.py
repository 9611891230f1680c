"""Interop: real Postfix asking s25rbl's policy service, with the shipped ``deploy/postfix/policy-*.cf``.

The mail lab (``tests/integration/netns.py``): Postfix instances and s25rbl nodes in the site's
namespace, SMTP clients with S25R-dynamic names (forward-confirmed by the tests' authoritative
DNS) in the other. The nodes share one PostgreSQL database, as an organisation's nodes do
(reached over the server's Unix socket). Each Postfix instance (one smtpd process per session,
``max_use = 1``) asks its own node, with the shipped snippet of the node's mode. The tarpit is
short here (3 s, and so its grace), the greylisting delay 10 s; SMTP clients wait 20 s.

- a patient sender sits through the tarpit and is delivered on its first attempt; after
  ``learn_after`` (2) messages the whitelist zone answers 127.0.0.3 for it and the tarpit ends;
- a client that hangs up during the tarpit is greylisted when it comes back, and delivered
  once ``delay`` has passed since its first attempt;
- two recipients in one session: one tarpit, no greylisting;
- two MXs, each with its own node: tarpitted on mx1, recognised (greylisted) on mx2;
- s25rbl stopped: Postfix's ``default_action=DUNNO`` lets mail through; a dry run changes
  nothing the client sees but records its decision;
- modes ``rgrey`` and ``starpit`` end to end once (``s25r`` in the stopped-node test).

Needs root, ``ip netns``, Postfix, unbound and PostgreSQL: without them the tests skip with
the reason, or fail when ``S25RBL_CI`` is set.
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
from dnslib import QTYPE

from tests.integration.netns import (
    MX_IP,
    WL_ZONE,
    LabUnavailable,
    MailLab,
    Postfix,
    SmtpResult,
    dns_query,
    mail_lab,
    wait_for,
)
from tests.integration.server import RunningServer
from tests.support.databases import over_unix_socket, pg_database

pytestmark = pytest.mark.interop

TARPIT, DELAY = 3, 10
POLICY = f"""tarpit = {TARPIT}
delay = {DELAY}
learn_after = 2
"""
HELO = "mail.example.com"
RECIPIENT = "user@example.test"
DEFERRED = "4.7.1 <{rcpt}>: Recipient address rejected: S25R check, be patient [r1]"
SHIPPED = re.compile(r"inet:127\.0\.0\.1:10030\b")


def dynamic(n: int) -> tuple[str, str]:
    """A client on a dynamic-looking address (S25R rule 1, forward-confirmed)."""
    return f"198.51.100.{n}", f"p{n}-ipad{n}.tokyo.ocn.ne.jp"


def shipped_parameters(mode: str, policy: tuple[str, int]) -> dict[str, str]:
    """The main.cf parameters of ``deploy/postfix/policy-MODE.cf``, asking ``policy``."""
    from tests.integration.netns import DEPLOY_POSTFIX

    text = (DEPLOY_POSTFIX / f"policy-{mode}.cf").read_text()
    if not SHIPPED.search(text):
        raise AssertionError(f"deploy/postfix/policy-{mode}.cf no longer asks inet:127.0.0.1:10030")
    text = SHIPPED.sub(f"inet:{policy[0]}:{policy[1]}", text)
    parameters: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():
            parameters[name] += " " + line.strip()
        else:
            name, _, value = line.partition("=")
            name = name.strip()
            parameters[name] = value.strip()
    return parameters


@dataclass
class Site:
    """A Postfix instance and the s25rbl node it asks."""

    lab: MailLab
    postfix: Postfix
    node: RunningServer
    port: int

    def smtp(
        self, client: tuple[str, str], sender: str, recipients: tuple[str, ...] = (RECIPIENT,)
    ) -> SmtpResult:
        return self.lab.smtp(client[0], helo=HELO, sender=sender, recipients=recipients, port=self.port)

    def hang_up_in_tarpit(self, client: tuple[str, str], sender: str, recipient: str = RECIPIENT) -> None:
        """MAIL and RCPT, then hang up without waiting for the RCPT reply."""
        smtp = smtplib.SMTP(local_hostname=HELO, timeout=20, source_address=(client[0], 0))
        try:
            with self.lab.net.entered():
                smtp.sock = socket.create_connection((MX_IP, self.port), 20, (client[0], 0))
            smtp.file = None
            smtp.getreply()
            smtp.ehlo(HELO)
            assert smtp.mail(sender)[0] == 250
            smtp.putcmd("rcpt", f"TO:<{recipient}>")
        finally:
            smtp.close()

    def api(self, path: str) -> Any:
        """GET from the node's API (inside the site's namespace), with the lab's read token."""
        assert self.node.api is not None
        conn = http.client.HTTPConnection(*self.node.api, timeout=10)
        with self.lab.mx.entered():
            conn.connect()
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token(self.node)}"})
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body)
            return json.loads(body)
        finally:
            conn.close()

    def tarpits(self, ip: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api(f"/v1/tarpits?client={ip}")["items"]
        return items

    def settled(self, ip: str, count: int, delivered: bool) -> list[dict[str, Any]]:
        """The client's ``count`` tarpit records, once written (a moment after the decisions:
        the node writes in batches), each delivered if ``delivered``."""

        def ready() -> list[dict[str, Any]] | None:
            records = self.tarpits(ip)
            done = len(records) == count and all(r["delivered_at"] is not None for r in records)
            return records if done or (len(records) == count and not delivered) else None

        try:
            return wait_for(ready, 5, f"{count} tarpit records of {ip}", 0.1)
        except AssertionError as err:
            raise AssertionError(f"{err}: {self.tarpits(ip)}\n{self.explain()}") from None

    def logged(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The first match of ``pattern`` in the node's output (its policy decisions)."""
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return wait_for(
                lambda: regex.search("".join(self.node.output)), timeout, f"/{pattern}/ in s25rbl's log"
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.explain()}") from None

    def explain(self, result: SmtpResult | None = None) -> str:
        smtp = f"\n--- SMTP:\n{result.transcript()}" if result is not None else ""
        return f"{smtp}\n{self.postfix.log_tail()}\n--- s25rbl:\n{''.join(self.node.output[-30:])}"

    def delivered(self, result: SmtpResult, recipients: int = 1) -> None:
        """Every recipient accepted, the message queued and sent (to the lab's discard)."""
        assert result.error is None, self.explain(result)
        assert [code for code, _ in result.rcpt] == [250] * recipients, self.explain(result)
        assert result.data is not None and result.data[0] == 250 and result.queue_id, self.explain(result)
        self.postfix.wait_for_log(rf"{result.queue_id}: to=<[^>]+>, .*status=sent")

    def deferred(self, result: SmtpResult, recipient: str = RECIPIENT) -> None:
        assert result.error is None and result.data is None, self.explain(result)
        assert result.rcpt == [(450, DEFERRED.format(rcpt=recipient))], self.explain(result)


_TOKENS: dict[int, str] = {}


def token(node: RunningServer) -> str:
    """A read token of the node's store (made once per node with the real CLI)."""
    if id(node) not in _TOKENS:
        made = node.cli("token", "create", "--name", f"reader{len(_TOKENS)}", "--scope", "read")
        assert made.returncode == 0, made.stderr
        _TOKENS[id(node)] = made.stdout.strip()
    return _TOKENS[id(node)]


@dataclass
class Lab:
    lab: MailLab
    ports: Iterator[int]

    def site(self, name: str, mode: str, policy: str = POLICY, node: RunningServer | None = None) -> Site:
        """A Postfix instance with the shipped snippet of ``mode``, asking ``node`` (a new node
        in that mode if none is given)."""
        if node is None:
            node = self.lab.add_s25rbl(f"s25rbl-{name}", policy=f'mode = "{mode}"\n{policy}')
        assert node.policy is not None
        port = next(self.ports)
        # The policy replaces main.cf.snippet's DNSBL restrictions, which the lab's base has.
        parameters = {"smtpd_client_restrictions": "", **shipped_parameters(mode, node.policy)}
        postfix = self.lab.extra_postfix(name, port, parameters)
        return Site(self.lab, postfix, node, port)


def _unavailable(err: LabUnavailable) -> None:
    message = f"the Postfix lab cannot run here: {err}"
    if os.environ.get("S25RBL_CI"):
        pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    try:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(contextlib.contextmanager(pg_database)())
            the_lab = stack.enter_context(
                mail_lab(database_url=over_unix_socket(url), s25rbl_policy=POLICY, start_postfix=False)
            )
            for n in range(31, 45):
                the_lab.add_client(*dynamic(n))
            yield Lab(the_lab, iter(range(2600, 2700)))
    except LabUnavailable as err:
        _unavailable(err)


@pytest.fixture(scope="module")
def mx1(lab: Lab) -> Site:
    """Postfix with policy-targrey.cf asking the lab's own node (whose DNS unbound asks)."""
    return lab.site("mx1", "targrey", node=lab.lab.s25rbl)


def whitelist_answer(lab: MailLab, ip: str, server: tuple[str, int]) -> list[str]:
    name = ".".join(reversed(ip.split("."))) + "." + WL_ZONE
    return [str(rr.rdata) for rr in dns_query(lab.mx, server, name).rr if rr.rtype == QTYPE.A]


# --- taRgrey --------------------------------------------------------------------------------


def test_a_patient_sender_is_delivered_on_its_first_attempt_and_learned_after_two_messages(mx1: Site) -> None:
    client = dynamic(31)
    ip = client[0]
    for message in (1, 2):
        result = mx1.smtp(client, f"alice{message}@example.com")
        mx1.delivered(result)
        mx1.logged(
            rf"\[{re.escape(ip)}\] RCPT from=<alice{message}@example\.com> .*: SLEEP {TARPIT} \(tarpit"
        )
        mx1.logged(
            rf"\[{re.escape(ip)}\] END-OF-MESSAGE from=<alice{message}@example\.com> .*tarpit-delivered"
        )
    records = mx1.settled(ip, 2, delivered=True)
    assert all(r["survived_at"] is not None for r in records), records
    mx1.logged(rf"learned {re.escape(ip)}: learned: 2 policy passes")
    # The whitelist zone knows it at once on the node, and through the site's unbound.
    assert whitelist_answer(mx1.lab, ip, mx1.node.dns[0]) == ["127.0.0.3"]
    wait_for(lambda: whitelist_answer(mx1.lab, ip, ("127.0.0.1", 53)) == ["127.0.0.3"], 5, "unbound's answer")
    learned = {item["value"]: item for item in mx1.api("/v1/learned")["items"]}
    assert [p["kind"] for p in learned[ip]["passes"]] == ["tarpit", "tarpit"]
    # No tarpit any more: the next message goes through without one.
    mx1.delivered(mx1.smtp(client, "alice3@example.com"))
    assert len(mx1.tarpits(ip)) == 2


def test_a_client_that_hung_up_is_greylisted_when_it_comes_back_and_delivered_after_the_delay(
    mx1: Site,
) -> None:
    client = dynamic(32)
    sender = "bob@example.com"
    started = time.monotonic()
    mx1.hang_up_in_tarpit(client, sender)
    mx1.postfix.wait_for_log(
        rf"lost connection after RCPT from {re.escape(client[1])}\[{re.escape(client[0])}\]"
    )
    time.sleep(max(0.0, started + 2 * TARPIT + 1 - time.monotonic()))  # the tarpit and its grace are over
    mx1.deferred(mx1.smtp(client, sender))
    ip = re.escape(client[0])
    mx1.logged(rf"\[{ip}\] RCPT from=<bob@example\.com> .*greylist-deferred: hung up during a tarpit")
    time.sleep(max(0.0, started + DELAY + 1 - time.monotonic()))  # delay since the first attempt
    mx1.delivered(mx1.smtp(client, sender))
    mx1.logged(rf"\[{re.escape(client[0])}\] RCPT from=<bob@example\.com> .*greylist-passed")


def test_two_recipients_in_one_session_meet_one_tarpit_and_no_greylisting(mx1: Site) -> None:
    client = dynamic(33)
    recipients = ("first@example.test", "second@example.test")
    mx1.delivered(mx1.smtp(client, "carol@example.com", recipients), recipients=2)
    (record,) = mx1.settled(client[0], 1, delivered=True)
    assert record["recipient"] == "first@example.test"
    ip = re.escape(client[0])
    mx1.logged(
        rf"\[{ip}\] RCPT .*to=<second@example\.test> .*: DUNNO \(session: a later recipient of a tarpitted"
    )
    assert not re.search(rf"\[{ip}\] .*greylist", "".join(mx1.node.output)), mx1.explain()


def test_a_client_tarpitted_on_one_mx_is_recognised_on_another(lab: Lab, mx1: Site) -> None:
    mx2 = lab.site("mx2", "targrey")  # its own node, on the same store
    client = dynamic(34)
    sender = "dave@example.com"
    started = time.monotonic()
    mx1.hang_up_in_tarpit(client, sender)
    mx1.logged(rf"\[{re.escape(client[0])}\] RCPT from=<dave@example\.com> .*SLEEP {TARPIT}")
    time.sleep(max(0.0, started + 2 * TARPIT + 1 - time.monotonic()))
    mx2.deferred(mx2.smtp(client, sender))
    mx2.logged(rf"\[{re.escape(client[0])}\] RCPT from=<dave@example\.com> .*hung up during a tarpit")
    time.sleep(max(0.0, started + DELAY + 1 - time.monotonic()))
    mx2.delivered(mx2.smtp(client, sender))  # the triplet's first attempt was the one on mx1


# --- outage and dry run ------------------------------------------------------------------------


def test_with_s25rbl_stopped_postfix_lets_mail_through(lab: Lab) -> None:
    site = lab.site("mx-s25r", "s25r")
    client = dynamic(35)
    result = site.smtp(client, "erin@example.com")
    assert result.rcpt == [(450, DEFERRED.format(rcpt=RECIPIENT))], site.explain(result)  # mode s25r
    site.node.stop()
    mark = site.postfix.log_size()
    site.delivered(site.smtp(client, "erin@example.com"))
    site.postfix.wait_for_log(r"warning: problem talking to server 127\.0\.0\.1:\d+", after=mark)


def test_a_dry_run_changes_nothing_the_client_sees_but_records_the_decision(lab: Lab) -> None:
    site = lab.site("mx-dry", "targrey", policy=POLICY + "dry_run = true\n")
    client = dynamic(36)
    site.delivered(site.smtp(client, "frank@example.com"))
    site.logged(rf"\[{re.escape(client[0])}\] RCPT .*: SLEEP {TARPIT} \(tarpit: .*\) dry run: answered DUNNO")
    (record,) = site.settled(client[0], 1, delivered=False)
    assert record["sender"] == "frank@example.com"


# --- the other modes ---------------------------------------------------------------------------


def test_rgrey_defers_a_listed_client_until_it_retries_after_the_delay(lab: Lab) -> None:
    site = lab.site("mx-rgrey", "rgrey")
    client = dynamic(37)
    started = time.monotonic()
    site.deferred(site.smtp(client, "gina@example.com"))
    time.sleep(max(0.0, started + DELAY + 1 - time.monotonic()))
    site.delivered(site.smtp(client, "gina@example.com"))
    site.logged(rf"\[{re.escape(client[0])}\] RCPT .*greylist-passed: mode rgrey")
    assert site.tarpits(client[0]) == []


def test_starpit_tarpits_a_listed_client_and_delivers_on_the_first_attempt(lab: Lab) -> None:
    site = lab.site("mx-starpit", "starpit")
    client = dynamic(38)
    site.delivered(site.smtp(client, "hank@example.com"))
    site.settled(client[0], 1, delivered=True)
    site.logged(rf"\[{re.escape(client[0])}\] RCPT .*: SLEEP {TARPIT} \(tarpit")
