"""The policy service's part of the operator's page in a real browser (headless Chromium)
against a real node whose policy service is asked over its own socket, as Postfix asks it: a
greylisted triplet seen and cleared, and the next attempt greylisted afresh; a client
whitelisted from the greylist, seen in the DNS answers and the audit log; an address learned
from its tarpit passes, shown with them as evidence; a read-only token gets no controls.
(The views' keyboard, axe-core and screenshot checks run with the other pages, in
test_ui_browser.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_ui_browser import audit_rows, click, flash, signed_in_as
from tests.integration.ui_lab import DELAY, GREY, GREY_WL, SEEDED, TARPIT, TARPITTED, WL, Lab, start_lab
from tests.support import browser

pytestmark = pytest.mark.browser

DEFERRED = "DEFER_IF_PERMIT 4.7.1 S25R check, be patient"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    browser.need_browser()
    yield from start_lab(tmp_path_factory.mktemp("ui-policy-browser"))


@pytest.fixture(scope="module")
def driver(lab: Lab) -> Iterator[Any]:
    yield from browser.chromium()


@pytest.fixture
def page(driver: Any) -> Iterator[Any]:
    browser.viewport(driver, browser.DESKTOP)
    yield driver


def triplet_rows(driver: Any, lab: Lab, query: str, timeout: float = 10) -> list[Any]:
    """The greylist view's rows for ``query``, once there are some (the policy writes its state a
    moment after it answers)."""
    deadline = time.monotonic() + timeout
    while True:
        driver.get(f"{lab.base}/ui/review/greylist?q={query}")
        found = driver.find_elements("css selector", "tr[id^=triplet-]")
        if found or time.monotonic() > deadline:
            return list(found)
        time.sleep(0.2)


def test_a_cleared_triplet_is_greylisted_afresh_on_its_next_attempt(page: Any, lab: Lab) -> None:
    ip, _ = GREY
    sender = "clear-me@news.example"
    first = time.monotonic()
    assert (lab.policy(ip, "c1", sender=sender, stress="yes") or "").startswith(DEFERRED)
    signed_in_as(page, lab, "ops")
    (row,) = triplet_rows(page, lab, sender)
    triplet = row.get_attribute("id").removeprefix("triplet-")
    assert ip in row.text and "waiting" in row.text and "bob@example.org" in row.text
    attempted = row.find_element("css selector", "td[data-label='first attempt']").text
    click(page, f'button[aria-label="Clear triplet {triplet}"]')
    assert flash(page).startswith(f"Cleared 198.51.100.0/24 <{sender}> → <bob@example.org>")
    assert page.find_elements("css selector", "tr[id^=triplet-]") == []
    assert any("token:ops" in r and "greylist.delete" in r for r in audit_rows(page, lab, f"#{triplet}"))
    # Past the delay, the old triplet's retry would pass; the node forgot it (within a second
    # of the clearing), so the attempt is a first attempt again: deferred, a new triplet.
    time.sleep(max(DELAY + 0.5 - (time.monotonic() - first), 1.0))
    assert (lab.policy(ip, "c2", sender=sender, stress="yes") or "").startswith(DEFERRED)
    (again,) = triplet_rows(page, lab, sender)
    assert "waiting" in again.text
    assert again.find_element("css selector", "td[data-label='first attempt']").text > attempted


def test_whitelisting_a_greylisted_client_changes_the_dns_answer_and_is_audited(page: Any, lab: Lab) -> None:
    ip, _ = GREY_WL
    sender = "invoices@supplier.example"
    assert lab.answer(ip) == "127.0.0.2" and lab.answer(ip, WL) == "NXDOMAIN"
    assert (lab.policy(ip, "w1", sender=sender, stress="yes") or "").startswith(DEFERRED)
    signed_in_as(page, lab, "ops")
    (row,) = triplet_rows(page, lab, sender)
    triplet = row.get_attribute("id").removeprefix("triplet-")
    click(page, f'button[aria-label="Whitelist address {ip} (triplet {triplet})"]')
    assert flash(page).startswith(f"whitelisted ip {ip} (entry #")
    assert lab.answer(ip) == "NXDOMAIN" and lab.answer(ip, WL) == "127.0.0.2"
    assert lab.policy(ip, "w2", sender=sender, stress="yes") == "DUNNO"  # the policy lets it through
    assert any("token:ops" in r and "entry.add" in r for r in audit_rows(page, lab, ip))


def test_an_address_learned_from_its_tarpits_shows_its_passes_as_evidence(page: Any, lab: Lab) -> None:
    ip, host = TARPITTED
    for n in (1, 2):  # a patient sender: it sits through the tarpit and sends its message
        answers = lab.deliver(ip, f"t{n}", sender="orders@partner.example", recipient="buyer@example.org")
        assert answers == [f"SLEEP {TARPIT}", "DUNNO", "DUNNO"]
    deadline = time.monotonic() + 10
    while lab.answer(ip, WL) != "127.0.0.3":  # learned, after learn_after (2) passes
        assert time.monotonic() < deadline, "not learned from its two passes"
        time.sleep(0.2)
    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/review/learned?q={ip}")
    card = page.find_element("css selector", ".card")
    assert "2 policy passes" in card.text
    passes = card.find_element("css selector", "table.passes").text
    assert passes.count("tarpit survived") == 2 and host in passes and "orders@partner.example" in passes
    page.get(f"{lab.base}/ui/review/tarpits?q={ip}")
    sessions = [r.text for r in page.find_elements("css selector", "tr[id^=tarpit-]")]
    assert len(sessions) == 2 and all("delivered" in s and host in s for s in sessions)


def test_a_read_only_token_sees_the_policy_views_without_a_control(page: Any, lab: Lab) -> None:
    signed_in_as(page, lab, "viewer")
    for path in ("/ui/review/greylist", "/ui/review/tarpits"):
        page.get(lab.base + path)
        assert SEEDED[0] in page.find_element("css selector", "table.policy").text, path
        actions = [f.get_attribute("action") for f in page.find_elements("css selector", "form[method=post]")]
        assert actions == [f"{lab.base}/ui/signout"], (path, actions)
        assert page.find_elements("xpath", "//button[contains(., 'Clear') or contains(., 'Whitelist')]") == []
