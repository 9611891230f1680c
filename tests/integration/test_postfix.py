"""Interop: the real Postfix uses s25rbl, wired with the shipped ``deploy/postfix`` files.

Postfix, unbound and s25rbl run in a network namespace (``tests/integration/netns.py`` draws
the lab); SMTP clients connect from addresses of a second namespace whose DNS the tests'
fake authority serves. Every test checks the real SMTP dialogue and Postfix's own log.

Needs root, ``ip netns``, ``postfix`` and ``unbound``: without them the tests skip with the
reason, or fail when ``S25RBL_CI`` is set.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest

from tests.integration.netns import (
    BL_ZONE,
    HL_ZONE,
    UPSTREAM_IP,
    WL_ZONE,
    LabUnavailable,
    MailLab,
    SmtpResult,
    dns_query,
    mail_lab,
)

pytestmark = pytest.mark.interop

DYNAMIC = ("198.51.100.7", "p1234-ipad12.tokyo.ocn.ne.jp")  # S25R rule 1, forward-confirmed
CLEAN = ("198.51.100.8", "mail.example.org")  # a mail server's name, forward-confirmed
TO_WHITELIST = ("198.51.100.9", "p5678-ipad34.osaka.ocn.ne.jp")  # rule 1; whitelisted by a test
NO_PTR = "198.51.100.10"  # no reverse name at all: rule 0
DYNAMIC_HELO = "dhcp1234.pool.example.net"  # rule 6, as a HELO name
RECIPIENT = "user@example.test"


@pytest.fixture(scope="module")
def lab() -> Iterator[MailLab]:
    try:
        with mail_lab() as running:
            running.add_client(DYNAMIC[0], DYNAMIC[1])
            running.add_client(CLEAN[0], CLEAN[1])
            running.add_client(TO_WHITELIST[0], TO_WHITELIST[1])
            running.add_client(NO_PTR)
            yield running
    except LabUnavailable as err:
        message = f"the Postfix lab cannot run here: {err}"
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
        pytest.skip(message)


def explain(lab: MailLab, result: SmtpResult) -> str:
    return f"\n--- SMTP:\n{result.transcript()}\n{lab.diagnostics()}"


def rcpt(lab: MailLab, result: SmtpResult) -> tuple[int, str]:
    assert result.error is None and len(result.rcpt) == 1, explain(lab, result)
    return result.rcpt[0]


def assert_s25r_deferral(lab: MailLab, result: SmtpResult, zone: str, what: str, text: str) -> None:
    """RCPT got the shipped rbl_reply: ``450 4.7.1 ... [what] blocked using ZONE; TEXT``."""
    code, reply = rcpt(lab, result)
    assert code == 450, f"expected the S25R 450, got {code} {reply}" + explain(lab, result)
    assert reply.startswith("4.7.1 "), explain(lab, result)
    assert f"[{what}] blocked using {zone}; {text}" in reply, explain(lab, result)


def test_dynamic_client_is_deferred_with_be_patient(lab: MailLab) -> None:
    ip, name = DYNAMIC
    mark = lab.postfix.log_size()
    result = lab.smtp(ip, helo=name)
    assert_s25r_deferral(lab, result, BL_ZONE, ip, "S25R check, be patient [r1]")
    # Postfix knew the client's name (its own PTR + A lookups through unbound) ...
    lab.postfix.wait_for_log(rf"connect from {re.escape(name)}\[{re.escape(ip)}\]", after=mark)
    # ... and logged the deferral with s25rbl's TXT.
    lab.postfix.wait_for_log(
        rf"NOQUEUE: reject: RCPT from {re.escape(name)}\[{re.escape(ip)}\]: 450 4\.7\.1 Service unavailable; "
        rf"Client host \[{re.escape(ip)}\] blocked using {re.escape(BL_ZONE)}; "
        r"S25R check, be patient \[r1\];",
        after=mark,
    )


def test_clean_mail_server_is_accepted_and_delivered(lab: MailLab) -> None:
    ip, name = CLEAN
    mark, asked = lab.postfix.log_size(), len(lab.unbound.queries())
    # A HELO different from the client name, so both hostname-zone lookups can be told apart.
    result = lab.smtp(ip, helo="relay.example.org")
    assert rcpt(lab, result)[0] == 250, explain(lab, result)
    assert result.data is not None and result.data[0] == 250, explain(lab, result)
    queue_id = result.queue_id
    assert queue_id, explain(lab, result)
    lab.postfix.wait_for_log(rf"connect from {re.escape(name)}\[{re.escape(ip)}\]", after=mark)
    lab.postfix.wait_for_log(
        rf"{queue_id}: to=<{re.escape(RECIPIENT)}>, relay=none, .*status=sent", after=mark
    )
    # The whole shipped restriction list ran: every s25rbl zone was asked, through unbound.
    reverse = ".".join(reversed(ip.split(".")))
    queries = lab.unbound.queries()[asked:]
    for expected in (
        (f"{reverse}.{WL_ZONE}", "A"),
        (f"{reverse}.{BL_ZONE}", "A"),
        (f"{name}.{HL_ZONE}", "A"),  # reject_rhsbl_reverse_client
        (f"relay.example.org.{HL_ZONE}", "A"),  # reject_rhsbl_helo
    ):
        assert expected in queries, f"Postfix did not ask {expected}: {queries}" + explain(lab, result)


def test_whitelisted_client_is_accepted_by_permit_dnswl_client(lab: MailLab) -> None:
    ip, name = TO_WHITELIST
    before = lab.smtp(ip, helo=name, body=None)
    assert_s25r_deferral(lab, before, BL_ZONE, ip, "S25R check, be patient [r1]")

    added = lab.cli("entries", "add", "white", "ip", ip, "--reason", "postfix interop test")
    assert added.returncode == 0, added.stdout + added.stderr
    entry_id = re.search(r"added entry (\S+):", added.stdout)
    assert entry_id, added.stdout
    try:
        mark = lab.postfix.log_size()
        # The server reloads its lists within lists.refresh_interval; unbound forgets the
        # earlier "not whitelisted" answer after the lab's negative TTL (1 s).
        deadline = time.monotonic() + 10
        while True:
            result = lab.smtp(ip, helo=name)
            if (result.rcpt and result.rcpt[0][0] == 250) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert rcpt(lab, result)[0] == 250, "still deferred 10 s after whitelisting" + explain(lab, result)
        assert result.data is not None and result.data[0] == 250, explain(lab, result)
        lab.postfix.wait_for_log(
            rf"permit: RCPT from {re.escape(name)}\[{re.escape(ip)}\]: action=permit_dnswl_client", after=mark
        )
        lab.postfix.wait_for_log(
            rf"{result.queue_id}: to=<{re.escape(RECIPIENT)}>, .*status=sent", after=mark
        )
    finally:
        removed = lab.cli("entries", "remove", entry_id.group(1))
        assert removed.returncode == 0, removed.stdout + removed.stderr


def test_the_whitelist_permits_only_past_s25rbls_own_checks(lab: MailLab) -> None:
    # The shipped permit_dnswl_client is filtered to s25rbl's whitelist codes and sits in a
    # list of s25rbl's checks only: a whitelisted (or learned) client skips them, and still
    # meets the restrictions of the later stages. A variant adds one after s25rbl's, refusing
    # this client by address: the whitelist must not let it past.
    items = shipped_list(lab)
    assert f"permit_dnswl_client {WL_ZONE}=127.0.0.[2..3]" in items, items
    assert not any(
        item.startswith("permit_dnswl_client") for item in shipped_list(lab, "smtpd_recipient_restrictions")
    )
    ip, name = TO_WHITELIST
    later = f"reject_unauth_destination, check_client_access inline:{{ {ip}=REJECT }}, permit"
    variant = lab.extra_postfix("postfix-later", 2526, {"smtpd_recipient_restrictions": later})
    added = lab.cli("entries", "add", "white", "ip", ip, "--reason", "postfix interop test")
    assert added.returncode == 0, added.stdout + added.stderr
    entry_id = re.search(r"added entry (\S+):", added.stdout)
    assert entry_id, added.stdout
    try:
        mark = variant.log_size()
        deadline = time.monotonic() + 10
        while True:  # until the whitelist answer reaches unbound (negative TTL 1 s)
            result = lab.smtp(ip, helo=name, body=None, port=2526)
            if (result.rcpt and result.rcpt[0][0] != 450) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        code, reply = rcpt(lab, result)
        assert code == 554 and "Access denied" in reply, f"{code} {reply}" + explain(lab, result)
        variant.wait_for_log(
            rf"permit: RCPT from {re.escape(name)}\[{re.escape(ip)}\]: action=permit_dnswl_client", after=mark
        )
    finally:
        removed = lab.cli("entries", "remove", entry_id.group(1))
        assert removed.returncode == 0, removed.stdout + removed.stderr


def test_dynamic_helo_is_deferred_by_reject_rhsbl_helo(lab: MailLab) -> None:
    ip, name = CLEAN  # a clean client: only its HELO name is dynamic
    mark = lab.postfix.log_size()
    result = lab.smtp(ip, helo=DYNAMIC_HELO)
    assert_s25r_deferral(lab, result, HL_ZONE, DYNAMIC_HELO, "S25R check, be patient [r6]")
    lab.postfix.wait_for_log(
        rf"NOQUEUE: reject: RCPT from {re.escape(name)}\[{re.escape(ip)}\]: 450 4\.7\.1 Service unavailable; "
        rf"Helo command \[{re.escape(DYNAMIC_HELO)}\] blocked using {re.escape(HL_ZONE)}; "
        rf"S25R check, be patient \[r6\];",
        after=mark,
    )


def shipped_list(lab: MailLab, parameter: str = "smtpd_client_restrictions") -> list[str]:
    shipped = lab.postfix.postconf("-h", parameter)
    return [item.strip() for item in shipped.replace("\n", " ").split(",") if item.strip()]


def test_dynamic_reverse_name_is_deferred_by_reject_rhsbl_reverse_client(lab: MailLab) -> None:
    # With the shipped list reject_rbl_client defers this client first. A second Postfix in
    # the same namespace runs the shipped list without reject_rbl_client, so the hostname
    # zone decides: Postfix asks it about the name it looked up itself.
    items = shipped_list(lab)
    without_rbl = [item for item in items if not item.startswith("reject_rbl_client ")]
    assert len(without_rbl) == len(items) - 1, items
    assert f"reject_rhsbl_reverse_client {HL_ZONE}=127.0.0.[2..3]" in without_rbl, items
    variant = lab.extra_postfix("postfix-rhsbl", 2525, {"smtpd_client_restrictions": ", ".join(without_rbl)})
    ip, name = DYNAMIC
    mark, asked = variant.log_size(), len(lab.unbound.queries())
    result = lab.smtp(ip, helo="relay.example.org", port=2525)
    assert_s25r_deferral(lab, result, HL_ZONE, name, "S25R check, be patient [r1]")
    variant.wait_for_log(
        rf"NOQUEUE: reject: RCPT from {re.escape(name)}\[{re.escape(ip)}\]: 450 4\.7\.1 Service unavailable; "
        rf"Unverified Client host \[{re.escape(name)}\] blocked using {re.escape(HL_ZONE)}; "
        rf"S25R check, be patient \[r1\];",
        after=mark,
    )
    queries = lab.unbound.queries()[asked:]
    assert (f"{name}.{HL_ZONE}", "A") in queries, queries
    assert not any(qname.endswith(BL_ZONE) for qname, _ in queries), queries


def test_client_without_reverse_name_is_deferred_as_rule_0(lab: MailLab) -> None:
    mark = lab.postfix.log_size()
    result = lab.smtp(NO_PTR, helo="mail.example.org")
    assert_s25r_deferral(lab, result, BL_ZONE, NO_PTR, "reverse lookup failure, be patient")
    lab.postfix.wait_for_log(rf"connect from unknown\[{re.escape(NO_PTR)}\]", after=mark)
    lab.postfix.wait_for_log(
        rf"NOQUEUE: reject: RCPT from unknown\[{re.escape(NO_PTR)}\]: 450 4\.7\.1 .*"
        rf"blocked using {re.escape(BL_ZONE)}; reverse lookup failure, be patient;",
        after=mark,
    )


def test_postfix_runs_the_shipped_configuration_without_complaint(lab: MailLab) -> None:
    result = lab.smtp(CLEAN[0], helo=CLEAN[1], body=None)
    assert rcpt(lab, result)[0] == 250, explain(lab, result)
    logs = "\n".join(p.log_text() for p in (lab.postfix, *lab.extra_instances))
    complaints = [line for line in logs.splitlines() if re.search(r"\b(warning|error|fatal|panic):", line)]
    assert not complaints, "\n".join(complaints) + "\n" + lab.diagnostics()


def test_no_dns_query_leaves_the_lab(lab: MailLab) -> None:
    # A name outside the lab's zones: unbound refuses it itself, it asks nobody.
    reply = dns_query(lab.mx, ("127.0.0.1", 53), "www.example.", "A")
    assert reply.header.rcode == 5, reply  # REFUSED
    contacted = lab.unbound.servers_contacted()
    allowed = {"127.0.0.1@5300", f"{UPSTREAM_IP}@{lab.upstream.port}"}
    assert contacted and contacted <= allowed, f"unbound contacted {contacted}, only {allowed} allowed"
