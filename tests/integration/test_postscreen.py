"""Interop: the real Postfix postscreen with the shipped ``deploy/postfix/postscreen.cf.snippet``.

postscreen takes the SMTP port of a lab Postfix (``tests/integration/netns.py``) in front of
smtpd, which keeps the shipped ``main.cf.snippet``; the snippet's lines are added to
``main.cf`` as shipped (zones substituted). The instance is set up as busy sites run it: DNSBL
and pregreet failures enforced, and the deep protocol tests on (a new client that passes them
must come back in a second session), with a short greeting wait to keep the test quick.

What the recipe promises, and the tests check in the SMTP dialogue and in Postfix's log:
a client on the whitelist zone skips every other postscreen test and delivers at once; a
client the blocklist zone lists is never rejected by postscreen (which rejects only with
550/521) and gets the S25R 450 from smtpd's ``reject_rbl_client``. A last test shows why:
the same listing at postscreen's threshold is a permanent 550.

Needs root, ``ip netns``, ``postfix`` (with postscreen and dnsblog) and ``unbound``: without
them the tests skip with the reason, or fail when ``S25RBL_CI`` is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.integration.netns import (
    BL_ZONE,
    WL_ZONE,
    LabUnavailable,
    MailLab,
    Postfix,
    SmtpResult,
    deploy_postscreen_snippet,
    mail_lab,
    wait_for,
)

pytestmark = pytest.mark.interop

WHITELISTED = ("198.51.100.20", "p2000-ipad12.tokyo.ocn.ne.jp")  # rule 1, on the operator whitelist
DYNAMIC = ("198.51.100.7", "p1234-ipad12.tokyo.ocn.ne.jp")  # rule 1: the blocklist zone lists it
CLEAN = ("198.51.100.8", "mail.example.org")  # listed nowhere
AT_THRESHOLD = ("198.51.100.30", "p3000-ipad12.tokyo.ocn.ne.jp")  # rule 1, for the counter-example

# A production-like postscreen: what fails is enforced, the deep protocol tests are on.
BUSY_SITE = {
    "postscreen_dnsbl_action": "enforce",
    "postscreen_greet_action": "enforce",
    "postscreen_greet_wait": "3s",
    "postscreen_pipelining_enable": "yes",
    "postscreen_non_smtp_command_enable": "yes",
    "postscreen_bare_newline_enable": "yes",
}


@pytest.fixture(scope="module")
def lab() -> Iterator[MailLab]:
    try:
        with mail_lab(start_postfix=False) as running:
            for ip, name in (WHITELISTED, DYNAMIC, CLEAN, AT_THRESHOLD):
                running.add_client(ip, name)
            added = running.cli(
                "entries", "add", "white", "ip", WHITELISTED[0], "--reason", "postscreen test"
            )
            assert added.returncode == 0, added.stdout + added.stderr
            yield running
    except LabUnavailable as err:
        message = f"the Postfix lab cannot run here: {err}"
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def postscreen(lab: MailLab) -> Postfix:
    # The whitelist entry must be live before postscreen caches anything about the client.
    wait_for(lambda: "white_address 1" in "".join(lab.s25rbl.output), 10, "the whitelist entry to load")
    return lab.extra_postfix("postscreen", 25, BUSY_SITE, postscreen=True)


def explain(lab: MailLab, result: SmtpResult) -> str:
    return f"\n--- SMTP:\n{result.transcript()}\n{lab.diagnostics()}"


def session(lab: MailLab, client: tuple[str, str], port: int = 25) -> SmtpResult:
    ip, name = client
    return lab.smtp(ip, helo=name, port=port)


def lines_about(instance: Postfix, ip: str, after: int = 0) -> list[str]:
    return [
        line for line in instance.log_text()[after:].splitlines() if f"[{ip}]" in line or f" {ip} " in line
    ]


def test_the_shipped_recipe_is_what_postscreen_runs(postscreen: Postfix) -> None:
    assert deploy_postscreen_snippet() in postscreen.main_cf()
    sites = postscreen.postconf("-h", "postscreen_dnsbl_sites").split()
    assert sites == [f"{WL_ZONE}=127.0.0.[2..3]*-2", f"{BL_ZONE}=127.0.0.[2..4]*1"]
    assert postscreen.postconf("-h", "postscreen_dnsbl_threshold").strip() == "2"
    assert postscreen.postconf("-h", "postscreen_dnsbl_allowlist_threshold").strip() == "-1"


def test_an_allowlisted_client_passes_postscreen_without_the_other_tests(
    lab: MailLab, postscreen: Postfix
) -> None:
    mark = postscreen.log_size()
    result = session(lab, WHITELISTED)
    # Delivered in its first session: no pregreet wait, no deep protocol tests, no reconnect.
    assert result.rcpt == [(250, "2.1.5 Ok")], explain(lab, result)
    assert result.data is not None and result.data[0] == 250, explain(lab, result)
    ip = WHITELISTED[0]
    postscreen.wait_for_log(
        rf"dnsblog\[\d+\]: addr {re.escape(ip)} listed by domain {WL_ZONE} as 127\.0\.0\.2", after=mark
    )
    postscreen.wait_for_log(rf"postscreen\[\d+\]: PASS NEW \[{re.escape(ip)}\]", after=mark)
    postscreen.wait_for_log(
        rf"smtpd\[\d+\]: .*RCPT from .*\[{re.escape(ip)}\]: action=permit_dnswl_client", after=mark
    )
    assert not [
        line for line in lines_about(postscreen, ip, mark) if "postscreen" in line and "reject" in line
    ]


def test_an_unlisted_client_meets_the_deep_protocol_tests(lab: MailLab, postscreen: Postfix) -> None:
    # The control: without the allowlist a new client is held by postscreen's own tests.
    result = session(lab, CLEAN)
    assert result.rcpt and result.rcpt[0][0] == 450 and "4.3.2" in result.rcpt[0][1], explain(lab, result)


def test_a_listed_client_is_not_rejected_by_postscreen_and_gets_the_s25r_450_from_smtpd(
    lab: MailLab, postscreen: Postfix
) -> None:
    ip = DYNAMIC[0]
    mark = postscreen.log_size()
    first = session(lab, DYNAMIC)
    # postscreen saw the listing (weight 1, under the threshold of 2) and did not reject for it:
    # its only answer is the deep protocol tests' 450 4.3.2 of a new client's first session.
    postscreen.wait_for_log(
        rf"dnsblog\[\d+\]: addr {re.escape(ip)} listed by domain {BL_ZONE} as 127\.0\.0\.2", after=mark
    )
    assert first.rcpt and first.rcpt[0][0] == 450 and "4.3.2" in first.rcpt[0][1], explain(lab, first)
    postscreen.wait_for_log(rf"postscreen\[\d+\]: PASS NEW \[{re.escape(ip)}\]", after=mark)
    assert not any("DNSBL rank" in line for line in lines_about(postscreen, ip, mark))
    # The retry: postscreen hands it to smtpd, whose reject_rbl_client gives S25R's 450.
    second = session(lab, DYNAMIC)
    assert second.rcpt, explain(lab, second)
    code, text = second.rcpt[0]
    assert code == 450 and text.startswith("4.7.1 "), explain(lab, second)
    assert f"blocked using {BL_ZONE}; S25R check, be patient [r1]" in text, explain(lab, second)
    postscreen.wait_for_log(rf"postscreen\[\d+\]: PASS OLD \[{re.escape(ip)}\]", after=mark)
    postscreen.wait_for_log(
        rf"smtpd\[\d+\]: NOQUEUE: reject: RCPT from \S+\[{re.escape(ip)}\]: 450 4\.7\.1", after=mark
    )


def test_the_blocklist_at_postscreens_threshold_would_reject_permanently(
    lab: MailLab, postscreen: Postfix
) -> None:
    # Why the recipe keeps s25rbl under the threshold: at it, postscreen answers 550, a
    # permanent rejection a real mail server never retries, the opposite of S25R.
    instance = lab.extra_postfix(
        "postscreen-at-threshold",
        2525,
        {
            "postscreen_dnsbl_action": "enforce",
            "postscreen_dnsbl_threshold": "1",
            "postscreen_greet_wait": "3s",
        },
        postscreen=True,
    )
    result = session(lab, AT_THRESHOLD, port=2525)
    assert result.rcpt and result.rcpt[0][0] == 550, explain(lab, result)
    instance.wait_for_log(rf"postscreen\[\d+\]: DNSBL rank 1 for \[{re.escape(AT_THRESHOLD[0])}\]")
