"""Interop: a real Exim runs the shipped ``deploy/exim/s25rbl.acl`` against s25rbl.

Exim (Debian's daemon, unpacked by ``scripts/unpack-exim.sh``), unbound and s25rbl run in the
site's network namespace of the mail lab (``tests/integration/netns.py``); SMTP clients connect
from addresses of the "internet" namespace, whose DNS the tests' fake authority serves.
Every test checks the real SMTP dialogue and Exim's own logs; the lab's unbound shows which
DNS questions Exim asked.

Needs root, ``ip netns``, ``unbound`` and the unpacked Exim: without them the tests skip with
the reason, or fail when ``S25RBL_CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dnslib import QTYPE

from tests.integration.exim import Exim, PolicyStub, find_exim, policy_request, shipped_acl, without_statement
from tests.integration.netns import (
    BL_ZONE,
    HL_ZONE,
    MX_IP,
    WL_ZONE,
    LabUnavailable,
    MailLab,
    SmtpResult,
    dns_query,
    mail_lab,
    wait_for,
)

pytestmark = pytest.mark.interop

DYNAMIC = ("198.51.100.7", "p1234-ipad12.tokyo.ocn.ne.jp")  # S25R rule 1, forward-confirmed
CLEAN = ("198.51.100.8", "mail.example.org")  # a mail server's name, forward-confirmed
WHITELISTED = ("198.51.100.9", "p5678-ipad34.osaka.ocn.ne.jp")  # rule 1, on the operator whitelist
NO_PTR = ("198.51.100.10", None)  # no reverse name at all: rule 0
BLACKLISTED = ("198.51.100.11", "mx.spam.example.com")  # a clean name in a blacklisted domain
BLACK_DOMAIN = "spam.example.com"
HELO = "relay.example.org"  # every client says this: only the client's address and name matter
RECIPIENT = "user@example.test"

SHIPPED_PORT = 2525  # the shipped ACL as it is
HOSTNAME_PORTS = {"host_lookup": 2526, "lookup_on_use": 2527}  # the ACL less its address-zone defer
POLICY_PORT = 2528
LATER_PORT = 2529  # the shipped ACL, then a statement refusing the whitelisted client


@dataclass
class EximLab:
    lab: MailLab
    shipped: Exim
    hostname_only: dict[str, Exim]

    def smtp(self, client: tuple[str, str | None], port: int) -> SmtpResult:
        return self.lab.smtp(client[0], helo=HELO, recipients=(RECIPIENT,), port=port)

    def explain(self, result: SmtpResult, *instances: Exim) -> str:
        parts = [f"\n--- SMTP:\n{result.transcript()}"]
        parts += [exim.diagnostics() for exim in instances or (self.shipped, *self.hostname_only.values())]
        parts.append("--- s25rbl output tail:\n" + "".join(self.lab.s25rbl.output[-20:]))
        return "\n".join(parts)


def unavailable(err: LabUnavailable) -> None:
    message = f"the Exim lab cannot run here: {err}"
    if os.environ.get("S25RBL_CI"):
        pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
    pytest.skip(message)


def s25rbl_answers(lab: MailLab, name: str) -> list[str]:
    """The A records s25rbl itself (not unbound, which would cache) gives for ``name``."""
    reply = dns_query(lab.mx, (lab.s25rbl.host, lab.s25rbl.port), name)
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def reverse(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


@pytest.fixture(scope="module")
def exim_lab() -> Iterator[EximLab]:
    try:
        find_exim()
        with mail_lab(start_postfix=False) as lab, contextlib.ExitStack() as stack:
            for ip, name in (DYNAMIC, CLEAN, WHITELISTED, NO_PTR, BLACKLISTED):
                lab.add_client(ip, name)
            for args in (("white", "ip", WHITELISTED[0]), ("black", "domain", BLACK_DOMAIN)):
                added = lab.cli("entries", "add", *args, "--reason", "exim interop test")
                assert added.returncode == 0, added.stdout + added.stderr
            # s25rbl reloads its lists within lists.refresh_interval; ask it directly, so that
            # unbound caches no answer from before.
            wait_for(
                lambda: (
                    s25rbl_answers(lab, f"{reverse(WHITELISTED[0])}.{WL_ZONE}") == ["127.0.0.2"]
                    and s25rbl_answers(lab, f"{BLACKLISTED[1]}.{HL_ZONE}") == ["127.0.0.3"]
                ),
                10,
                "s25rbl to load the test's list entries",
            )
            shipped = stack.enter_context(
                Exim(lab.mx, lab.directory / "exim-shipped", shipped_acl(), listen=(MX_IP, SHIPPED_PORT))
            )
            # As test_postfix does for reject_rhsbl_reverse_client: without the address zone's
            # defer, the hostname zone decides. Once with Exim's usual host_lookup = * (the name
            # is known at connect time), once without (the ACL's own reference looks it up).
            hostname_acl = without_statement(shipped_acl(), f"{BL_ZONE}=")
            hostname_only = {
                variant: stack.enter_context(
                    Exim(
                        lab.mx,
                        lab.directory / f"exim-{variant}",
                        hostname_acl,
                        listen=(MX_IP, port),
                        host_lookup="*" if variant == "host_lookup" else None,
                    )
                )
                for variant, port in HOSTNAME_PORTS.items()
            }
            yield EximLab(lab, shipped, hostname_only)
    except LabUnavailable as err:
        unavailable(err)


def assert_deferred(exim_lab: EximLab, exim: Exim, result: SmtpResult, text: str, mark: int) -> None:
    """RCPT got ``451 S25R: TEXT`` (the ACL's defer), and Exim logged it as a temporary rejection."""
    assert result.error is None and len(result.rcpt) == 1, exim_lab.explain(result, exim)
    code, reply = result.rcpt[0]
    assert (code, reply) == (451, f"S25R: {text}"), exim_lab.explain(result, exim)
    exim.wait_for_log(
        rf"\[{re.escape(result.source)}\]:\d+ F=<sender@example\.org> temporarily rejected RCPT "
        rf"<{re.escape(RECIPIENT)}>: S25R: {re.escape(text)}$",
        log="reject",
        after=mark,
    )


def assert_accepted_and_delivered(exim_lab: EximLab, exim: Exim, result: SmtpResult, mark: int) -> None:
    """RCPT and DATA got 250, and Exim delivered the message (to its blackhole)."""
    assert result.error is None and [code for code, _ in result.rcpt] == [250], exim_lab.explain(result, exim)
    assert result.data is not None and result.data[0] == 250, exim_lab.explain(result, exim)
    message_id = re.search(r"\bid=(\S+)", result.data[1])
    assert message_id, exim_lab.explain(result, exim)
    exim.wait_for_log(
        rf"{re.escape(message_id.group(1))} => :blackhole: <{re.escape(RECIPIENT)}>", after=mark
    )


# ------------------------------------------------------------------------ the shipped ACL


@pytest.mark.parametrize(
    ("client", "text"),
    [
        pytest.param(DYNAMIC, "S25R check, be patient [r1]", id="dynamic-name-rule-1"),
        pytest.param(BLACKLISTED, "domain check, be patient", id="operator-blacklist"),
        pytest.param(NO_PTR, "reverse lookup failure, be patient", id="no-reverse-name-rule-0"),
    ],
)
def test_shipped_acl_defers_a_listed_client_with_451_and_the_s25r_text(
    exim_lab: EximLab, client: tuple[str, str | None], text: str
) -> None:
    exim = exim_lab.shipped
    mark = exim.log_size("reject")
    result = exim_lab.smtp(client, SHIPPED_PORT)
    assert_deferred(exim_lab, exim, result, text, mark)


def test_shipped_acl_accepts_a_clean_forward_confirmed_client_after_asking_every_zone(
    exim_lab: EximLab,
) -> None:
    ip, name = CLEAN
    exim, unbound = exim_lab.shipped, exim_lab.lab.unbound
    mark, asked = exim.log_size(), len(unbound.queries())
    result = exim_lab.smtp(CLEAN, SHIPPED_PORT)
    assert_accepted_and_delivered(exim_lab, exim, result, mark)
    # Exim knew the client's name (its own PTR + A lookups through unbound) ...
    exim.wait_for_log(
        rf"<= sender@example\.org H={re.escape(name)} \({HELO}\) \[{re.escape(ip)}\]", after=mark
    )
    # ... and the whole ACL ran: each zone asked once, in order, through the site's unbound.
    zones = [
        query for query in unbound.queries()[asked:] if query[0].endswith(("s25rbl.test", ".in-addr.arpa"))
    ]
    assert zones == [
        (f"{reverse(ip)}.in-addr.arpa", "PTR"),
        (f"{reverse(ip)}.{WL_ZONE}", "A"),
        (f"{reverse(ip)}.{BL_ZONE}", "A"),
        (f"{name}.{HL_ZONE}", "A"),
    ], exim_lab.explain(result, exim)


def test_shipped_acl_accepts_an_operator_whitelisted_client_before_any_blocklist(exim_lab: EximLab) -> None:
    ip, name = WHITELISTED
    # Its name is S25R-dynamic: the hostname zone lists it, so only the whitelist lets it in.
    assert s25rbl_answers(exim_lab.lab, f"{name}.{HL_ZONE}") == ["127.0.0.2"]
    exim, unbound = exim_lab.shipped, exim_lab.lab.unbound
    mark, asked = exim.log_size(), len(unbound.queries())
    result = exim_lab.smtp(WHITELISTED, SHIPPED_PORT)
    assert_accepted_and_delivered(exim_lab, exim, result, mark)
    queries = unbound.queries()[asked:]
    assert (f"{reverse(ip)}.{WL_ZONE}", "A") in queries, exim_lab.explain(result, exim)
    # The whitelist ended s25rbl's statements: neither blocking zone was asked.
    assert not [q for q in queries if q[0].endswith((BL_ZONE, HL_ZONE))], f"{queries}" + exim_lab.explain(
        result, exim
    )


def test_the_whitelist_lets_a_client_past_s25rbls_statements_only(exim_lab: EximLab) -> None:
    # The shipped ACL has no "accept": a whitelisted (or learned) client still meets the
    # statements after it. A variant adds one that refuses this client by address.
    ip, _ = WHITELISTED
    later = f"  deny    message       = a later statement\n          hosts         = {ip}\n"
    with Exim(
        exim_lab.lab.mx,
        exim_lab.lab.directory / "exim-later",
        shipped_acl() + later,
        listen=(MX_IP, LATER_PORT),
    ) as exim:
        result = exim_lab.smtp(WHITELISTED, LATER_PORT)
        assert result.error is None and len(result.rcpt) == 1, exim_lab.explain(result, exim)
        assert result.rcpt[0] == (550, "a later statement"), exim_lab.explain(result, exim)


# --------------------------------------------------------------------- the hostname zone


@pytest.mark.parametrize("variant", list(HOSTNAME_PORTS))
@pytest.mark.parametrize(
    ("client", "text"),
    [
        pytest.param(DYNAMIC, "S25R check, be patient [r1]", id="dynamic-name-deferred"),
        pytest.param(BLACKLISTED, "domain check, be patient", id="blacklisted-domain-deferred"),
        pytest.param(CLEAN, None, id="clean-name-accepted"),
        pytest.param(NO_PTR, None, id="no-name-not-asked"),
    ],
)
def test_hostname_zone_judges_the_client_name_exim_confirmed(
    exim_lab: EximLab, variant: str, client: tuple[str, str | None], text: str | None
) -> None:
    name = client[1]
    exim, unbound = exim_lab.hostname_only[variant], exim_lab.lab.unbound
    mark, reject_mark, asked = exim.log_size(), exim.log_size("reject"), len(unbound.queries())
    result = exim_lab.smtp(client, HOSTNAME_PORTS[variant])
    if text is None:
        assert_accepted_and_delivered(exim_lab, exim, result, mark)
    else:
        assert_deferred(exim_lab, exim, result, text, reject_mark)
    queries = [qname for qname, _ in unbound.queries()[asked:]]
    assert not [q for q in queries if q.endswith(BL_ZONE)], f"{queries}" + exim_lab.explain(result, exim)
    hostname_queries = [q for q in queries if q.endswith(HL_ZONE)]
    if name is None:
        # No confirmed name: "condition = ${if def:sender_host_name}" skips the lookup.
        assert hostname_queries == [], f"{queries}" + exim_lab.explain(result, exim)
    else:
        assert hostname_queries[:1] == [f"{name}.{HL_ZONE}"], f"{queries}" + exim_lab.explain(result, exim)


def test_exim_runs_the_shipped_acl_without_complaint(exim_lab: EximLab) -> None:
    result = exim_lab.smtp(CLEAN, SHIPPED_PORT)
    assert [code for code, _ in result.rcpt] == [250], exim_lab.explain(result)
    for exim in (exim_lab.shipped, *exim_lab.hostname_only.values()):
        assert exim.log_text("panic") == "", exim.diagnostics()
        # e.g. "DNS list lookup defer", "failed to expand", "error in ACL"; the deferrals
        # themselves are no complaint (their S25R text may say "failure").
        complaints = [
            line
            for line in exim.log_text().splitlines()
            if re.search(r"\b(defer|failed|error|warning)\b", line, re.IGNORECASE)
            and "temporarily rejected RCPT" not in line
        ]
        assert not complaints, "\n".join(complaints) + "\n" + exim.diagnostics()


# ---------------------------------------------- an ACL that asks a policy service
#
# A worked example of the harness for ACLs that ask a Postfix-style policy service with
# ${readsocket}: PolicyStub plays the service inside the site's namespace and records each
# request; the ACL learns the stub's port from a configuration macro.

POLICY_ATTRIBUTES = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "protocol_name": "${uc:$received_protocol}",
    "client_address": "$sender_host_address",
    "client_name": "${if def:sender_host_name{$sender_host_name}{unknown}}",
    "helo_name": "$sender_helo_name",
    "sender": "$sender_address",
    "recipient": "$local_part@$domain",
}


def policy_acl(options: str) -> str:
    """Ask the service at 127.0.0.1:POLICY_SERVICE_PORT; defer on ``action=DEFER_IF_PERMIT TEXT``.

    ``${readsocket{SOCKET}{REQUEST}{OPTIONS}{EOL}{ON FAILURE}}``: OPTIONS starts with the
    timeout; EOL replaces each newline of the answer (``action=... TEXT`` and the empty line
    that ends it); on failure (no service, timeout) the lookup yields ``action=DUNNO``. The
    defer's message is TEXT, trimmed.
    """
    request = policy_request(POLICY_ATTRIBUTES)
    lookup = (
        "${readsocket{inet:127.0.0.1:POLICY_SERVICE_PORT}{" + request + "}{" + options + "}{ }{action=DUNNO}}"
    )
    return f"""\
  warn    set acl_m_policy = {lookup}
  defer   message       = ${{sg{{$acl_m_policy}}{{\\N^action=\\S+\\s*|\\s+$\\N}}{{}}}}
          condition     = ${{if match{{$acl_m_policy}}{{\\N^action=DEFER_IF_PERMIT\\N}}}}
"""


def defer_dynamic(asked: dict[str, str]) -> str:
    if asked.get("client_address") == DYNAMIC[0]:
        return "DEFER_IF_PERMIT S25R: S25R check, be patient [r1]"
    return "DUNNO"


@contextlib.contextmanager
def policy_exim(exim_lab: EximLab, name: str, options: str) -> Iterator[tuple[PolicyStub, Exim]]:
    lab = exim_lab.lab
    with (
        PolicyStub(lab.mx, defer_dynamic) as stub,
        Exim(
            lab.mx,
            lab.directory / name,
            policy_acl(options),
            listen=(MX_IP, POLICY_PORT),
            macros={"POLICY_SERVICE_PORT": str(stub.port)},
        ) as exim,
    ):
        yield stub, exim


def test_readsocket_acl_gets_the_answer_of_a_policy_service_that_keeps_the_connection_open(
    exim_lab: EximLab,
) -> None:
    # The stub keeps each connection open after its answer, as Postfix's policy services do:
    # the lookup returns at once only because Exim half-closes its side after the request.
    with policy_exim(exim_lab, "exim-policy", "5s") as (stub, exim):
        mark, reject_mark = exim.log_size(), exim.log_size("reject")
        started = time.monotonic()
        deferred = exim_lab.smtp(DYNAMIC, POLICY_PORT)
        assert time.monotonic() - started < 4, "the lookup waited for readsocket's timeout"
        assert_deferred(exim_lab, exim, deferred, "S25R check, be patient [r1]", reject_mark)
        accepted = exim_lab.smtp(CLEAN, POLICY_PORT)
        assert_accepted_and_delivered(exim_lab, exim, accepted, mark)
        common = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "SMTP"}
        common |= {"helo_name": HELO, "sender": "sender@example.org", "recipient": RECIPIENT}
        assert stub.received() == [
            {**common, "client_address": DYNAMIC[0], "client_name": DYNAMIC[1]},
            {**common, "client_address": CLEAN[0], "client_name": CLEAN[1]},
        ], exim.diagnostics()


def test_readsocket_with_shutdown_no_waits_for_the_timeout_and_falls_back(exim_lab: EximLab) -> None:
    # Without the half-close the service waits for a next request that never comes: Exim
    # reads until its timeout, then takes the failure string (here: accept).
    with policy_exim(exim_lab, "exim-policy-no-shutdown", "1s:shutdown=no") as (stub, exim):
        mark = exim.log_size()
        started = time.monotonic()
        result = exim_lab.smtp(DYNAMIC, POLICY_PORT)
        assert time.monotonic() - started >= 1, exim_lab.explain(result, exim)
        assert_accepted_and_delivered(exim_lab, exim, result, mark)
        assert [asked["client_address"] for asked in stub.received()] == [DYNAMIC[0]], exim.diagnostics()
