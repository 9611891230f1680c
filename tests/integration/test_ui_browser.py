"""The operator's page in a real browser (headless Chromium) against a real node: the daily S25R
work done with clicks and keys, each change seen in the node's DNS answers and in the audit
log; what a read-only token and a forged or CSRF-less POST get; sign-out; keyboard-only use;
axe-core's accessibility check; screenshots at desktop and phone widths, light and dark.

One node and one browser serve the whole module (each test uses hosts of its own)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ui_client import Browserless
from tests.integration.ui_lab import EXPLAIN, KEYBOARD, LEARN, POOL, POOL2, REVOKE, SPARE, WL, Lab, start_lab
from tests.support import browser

pytestmark = pytest.mark.browser

PAGES = [
    ("review-learned", "/ui/review/learned"),
    ("review-suggestions", "/ui/review/suggestions?status=all"),
    ("review-forbidden", "/ui/review/forbidden"),
    ("review-greylist", "/ui/review/greylist"),
    ("review-tarpits", "/ui/review/tarpits"),
    ("explain", f"/ui/explain?q={EXPLAIN[0]}"),
    ("lists", "/ui/lists"),
    ("import", "/ui/import"),
    ("figures", "/ui/figures"),
    ("audit", "/ui/audit"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    browser.need_browser()
    yield from start_lab(tmp_path_factory.mktemp("ui-browser"))


@pytest.fixture(scope="module")
def driver(lab: Lab) -> Iterator[Any]:
    yield from browser.chromium()


@pytest.fixture
def page(driver: Any) -> Iterator[Any]:
    """The module's browser at desktop size in the light scheme, whatever the last test left."""
    browser.viewport(driver, browser.DESKTOP)
    yield driver


def wait_for_load(driver: Any, action: Any) -> None:
    """Do ``action`` (a click, a key) and wait until it has replaced the page."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    action()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def signed_in_as(driver: Any, lab: Lab, who: str) -> None:
    """Make the browser's session ``who``'s (ops: admin, viewer: read only), signing in with
    the token typed into the form and Enter, as a person would."""
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{lab.base}/ui/review")
    header = driver.find_elements("css selector", "form.who span")
    if header and header[0].text.split()[0] == who:
        return
    if header:
        wait_for_load(driver, lambda: driver.find_element("css selector", "form.who button").click())
        # Signing out redirects; load the sign-in form afresh so that the field found below
        # belongs to the document that is shown, not to one still being replaced.
        driver.get(f"{lab.base}/ui/review")
    token = lab.admin if who == "ops" else lab.viewer
    field = driver.find_element("id", "token")
    wait_for_load(driver, lambda: field.send_keys(token + Keys.ENTER))
    assert driver.find_element("css selector", "form.who span").text.split()[0] == who


def click(driver: Any, css: str) -> None:
    wait_for_load(driver, lambda: driver.find_element("css selector", css).click())


def flash(driver: Any) -> str:
    return str(driver.find_element("css selector", ".flash").text)


def audit_rows(driver: Any, lab: Lab, target: str) -> list[str]:
    driver.get(f"{lab.base}/ui/audit?q={target}")
    return [row.text for row in driver.find_elements("css selector", "tbody tr")]


def test_the_learned_address_a_report_created_is_shown_with_its_evidence(page: Any, lab: Lab) -> None:
    ip, host = LEARN
    result = lab.report(ip, host, 3, sender="bounce-7@news.example", key="learn")
    assert result["learned"] == [ip]
    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/review/learned?q={ip}")
    card = page.find_element("css selector", ".card")
    assert ip in card.find_element("tag name", "h2").text
    evidence = card.find_element("css selector", "table.evidence").text
    assert "bounce-7@news.example" in evidence and host in evidence and "token:mx1" in evidence
    assert lab.answer(ip, WL) == "127.0.0.3"


def test_revoking_a_learned_address_flips_its_dns_answer_and_is_audited(page: Any, lab: Lab) -> None:
    ip, host = REVOKE
    assert lab.report(ip, host, 3, sender="alerts@bank.example", key="revoke")["learned"] == [ip]
    assert lab.answer(ip) == "NXDOMAIN"
    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/review/learned?q={ip}")
    click(page, f'button[aria-label="Revoke {ip}"]')
    assert flash(page) == f"{ip} revoked."
    assert lab.answer(ip) == "127.0.0.2"  # listed again by the S25R rules
    assert lab.answer(ip, WL) == "NXDOMAIN"
    assert any("token:ops" in row and "learned.revoke" in row for row in audit_rows(page, lab, ip))


def test_approving_a_pool_suggestion_whitelists_its_domain_in_dns_and_is_audited(page: Any, lab: Lab) -> None:
    (ip_a, host_a), (ip_b, host_b) = POOL
    lab.report(ip_a, host_a, 2, sender="orders@shop.example", key="pool-a")
    result = lab.report(ip_b, host_b, 1, sender="orders@shop.example", key="pool-b")
    assert result["suggested"] == ["pool.isp-a.example"] and not result["learned"]
    assert lab.answer(ip_a) == lab.answer(ip_b) == "127.0.0.2"
    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/review/suggestions")
    card = page.find_element("xpath", "//li[contains(@class,'card')][.//h2[contains(., 'isp-a.example')]]")
    assert ip_a in card.text and ip_b in card.text  # the addresses behind the suggestion
    click(page, 'button[aria-label="Approve: whitelist pool.isp-a.example"]')
    assert flash(page).startswith("pool.isp-a.example whitelisted (entry #")
    for ip in (ip_a, ip_b):
        assert lab.answer(ip) == "NXDOMAIN"
        assert lab.answer(ip, WL) == "127.0.0.2"
    assert any("token:ops" in r and "suggestion.approve" in r for r in audit_rows(page, lab, "isp-a.example"))


def test_whitelisting_from_explain_changes_the_dns_answer_and_is_audited(page: Any, lab: Lab) -> None:
    ip, host = EXPLAIN
    assert lab.answer(ip) == "127.0.0.2"
    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/explain?q={ip}")
    steps = page.find_element("css selector", "ol.steps").text
    assert "decided S25R rules" in steps and host in steps and "confirmed" in steps
    button = page.find_element("xpath", f'//button[normalize-space()="Whitelist hostname {host}"]')
    wait_for_load(page, button.click)
    assert flash(page).startswith(f"whitelisted hostname {host} (entry #")
    assert "not listed" in page.find_element("id", "verdict-h").text
    assert lab.answer(ip) == "NXDOMAIN" and lab.answer(ip, WL) == "127.0.0.2"
    assert any("token:ops" in r and "entry.add" in r for r in audit_rows(page, lab, host))


def test_a_read_only_token_sees_every_page_but_no_write_control(page: Any, lab: Lab) -> None:
    lab.report(SPARE[0], SPARE[1], 3, sender="x@y.example", key="spare")  # something to revoke
    signed_in_as(page, lab, "viewer")
    for _, path in PAGES:
        page.get(lab.base + path)
        if path == "/ui/audit":  # the audit log needs the admin scope, as GET /v1/audit
            assert "lacks the 'admin' scope" in page.find_element("css selector", ".flash").text
            continue
        assert page.find_element("tag name", "h1").text
        actions = [f.get_attribute("action") for f in page.find_elements("css selector", "form[method=post]")]
        assert actions == [f"{lab.base}/ui/signout"], (path, actions)
    nav = page.find_element("css selector", "header nav").text
    assert "Audit" not in nav


def test_a_forged_post_from_a_read_only_session_is_refused(page: Any, lab: Lab) -> None:
    signed_in_as(page, lab, "viewer")
    page.get(f"{lab.base}/ui/review/learned")
    # The viewer's own session and CSRF token, on a form the page never offered them.
    forge = """
        const f = document.createElement("form"); f.method = "post"; f.action = "/ui/learned/revoke";
        for (const [k, v] of [["csrf", arguments[0]], ["ip", arguments[1]]]) {
            const i = document.createElement("input"); i.type = "hidden"; i.name = k; i.value = v;
            f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();
    """
    csrf = page.find_element("css selector", "form.who input[name=csrf]").get_attribute("value")
    wait_for_load(page, lambda: page.execute_script(forge, csrf, SPARE[0]))
    assert "lacks the 'write' scope" in flash(page)
    assert lab.answer(SPARE[0], WL) == "127.0.0.3"  # still learned


def test_a_write_without_the_csrf_token_is_refused(page: Any, lab: Lab) -> None:
    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/lists")
    forge = """
        const f = document.createElement("form"); f.method = "post"; f.action = "/ui/lists/add";
        for (const [k, v] of [["list", "black"], ["kind", "ip"], ["value", "192.0.2.99"]]) {
            const i = document.createElement("input"); i.type = "hidden"; i.name = k; i.value = v;
            f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();
    """
    wait_for_load(page, lambda: page.execute_script(forge))
    assert "CSRF token is missing" in flash(page)
    assert lab.answer("192.0.2.99") != "127.0.0.3"


def test_signing_out_ends_the_session_on_the_server(page: Any, lab: Lab) -> None:
    signed_in_as(page, lab, "ops")
    cookie = page.get_cookie("s25rbl_session")["value"]
    click(page, "form.who button")
    assert page.current_url.endswith("/ui/signin?bye=1")
    page.get(f"{lab.base}/ui/review")
    assert "/ui/signin" in page.current_url
    # The old cookie, replayed by hand, is worth nothing either: the session itself ended.
    assert lab.server.api is not None
    replay = Browserless(*lab.server.api, cookies={"s25rbl_session": cookie})
    assert replay.get("/ui/review").status == 303
    assert (
        replay.post(
            "/ui/lists/add", {"csrf": "x", "list": "black", "kind": "ip", "value": "192.0.2.98"}
        ).status
        == 403
    )


CONTROLS = "a[href], button, input:not([type=hidden]), select, textarea, summary"
MARK = f"document.querySelectorAll('{CONTROLS}').forEach((e, i) => e.setAttribute('data-kb', String(i)))"
SHOWN = f"""return [...document.querySelectorAll('{CONTROLS}')]
    .filter(e => e.checkVisibility() && !e.disabled).map(e => e.getAttribute('data-kb'))"""


def tab_through(driver: Any, limit: int = 400) -> list[str]:
    """Press Tab from the top of the page until the focus comes round again, opening each
    closed ``<details>`` on the way with Enter (as a keyboard user would); what was reached."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur(); window.focus();")
    reached: list[str] = []
    for _ in range(limit):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        mark, closed = driver.execute_script(
            "const e = document.activeElement;"
            "return [e.getAttribute('data-kb'), e.tagName === 'SUMMARY' && !e.parentElement.open]"
        )
        if mark is None or (reached and mark == reached[0]):
            break
        reached.append(mark)
        if closed:
            ActionChains(driver).send_keys(Keys.ENTER).perform()
    return reached


@pytest.mark.parametrize(("slug", "path"), PAGES, ids=[p[0] for p in PAGES])
def test_the_keyboard_alone_reaches_every_control(page: Any, lab: Lab, slug: str, path: str) -> None:
    signed_in_as(page, lab, "ops")
    page.get(lab.base + path)
    page.execute_script(MARK)
    reached = set(tab_through(page))
    shown = page.execute_script(SHOWN)  # after the keyboard opened what it could
    assert len(shown) > 7, slug  # the header's links and sign-out at least
    assert [m for m in shown if m not in reached] == [], slug


def test_a_learned_address_is_revoked_with_the_keyboard_alone(page: Any, lab: Lab) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ip, host = KEYBOARD
    assert lab.report(ip, host, 3, sender="noreply@travel.example", key="keyboard")["learned"] == [ip]
    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/review/learned?q={ip}")
    page.execute_script("document.activeElement && document.activeElement.blur();")
    for _ in range(60):
        ActionChains(page).send_keys(Keys.TAB).perform()
        if page.execute_script("return document.activeElement.getAttribute('aria-label')") == f"Revoke {ip}":
            break
    else:
        pytest.fail(f"Tab never reached the Revoke button of {ip}")
    wait_for_load(page, lambda: ActionChains(page).send_keys(Keys.ENTER).perform())
    assert flash(page) == f"{ip} revoked."
    assert lab.answer(ip) == "127.0.0.2"


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize(
    ("slug", "path"), [*PAGES, ("signin", "/ui/signin")], ids=[*(p[0] for p in PAGES), "signin"]
)
def test_axe_finds_no_serious_accessibility_violation(
    page: Any, lab: Lab, slug: str, path: str, dark: bool
) -> None:
    if slug == "signin":
        page.delete_all_cookies()
    else:
        signed_in_as(page, lab, "ops")
    browser.viewport(page, browser.DESKTOP, dark=dark)
    page.get(lab.base + path)
    assert browser.axe_violations(page) == []


@pytest.mark.parametrize(("slug", "path"), PAGES, ids=[p[0] for p in PAGES])
def test_screenshots_at_desktop_and_phone_widths_and_no_sideways_scrolling_on_a_phone(
    page: Any, lab: Lab, slug: str, path: str
) -> None:
    signed_in_as(page, lab, "ops")
    for (ip, host), times in zip(POOL2, (2, 1), strict=True):  # an open suggestion, with its buttons
        lab.report(ip, host, times, sender="invoices@billing.example", key=f"shots-{ip}")
    docs = os.environ.get("S25RBL_UI_SCREENSHOTS")  # also write the README's pictures there
    for size, label in ((browser.DESKTOP, "desktop"), (browser.PHONE, "phone")):
        for dark in (False, True):
            browser.viewport(page, size, dark=dark)
            page.get(lab.base + path)
            shot = browser.screenshot(page, f"{slug}-{label}-{'dark' if dark else 'light'}")
            assert shot.stat().st_size > 1000
            if label == "phone":
                wide = page.execute_script("return document.documentElement.scrollWidth")
                assert wide <= size[0], f"{slug} is {wide} px wide on a {size[0]} px phone"
            in_readme = slug not in ("review-forbidden", "import")
            if (
                docs
                and in_readme
                and ((label == "desktop" and not dark) or (slug == "review-learned" and dark))
            ):
                browser.viewport(page, (1100, 760) if label == "desktop" else size, dark=dark)
                page.get(lab.base + path)
                Path(docs).mkdir(parents=True, exist_ok=True)
                name = slug if label == "desktop" else f"{slug}-{label}-dark"
                browser.screenshot(page, name, full=False).replace(Path(docs) / f"{name}.png")


def test_the_slash_key_moves_the_focus_to_the_search_field(page: Any, lab: Lab) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    signed_in_as(page, lab, "ops")
    page.get(f"{lab.base}/ui/lists")
    page.execute_script("document.activeElement && document.activeElement.blur();")
    ActionChains(page).send_keys("/").perform()
    assert page.execute_script("return document.activeElement.id") == "q"
    ActionChains(page).send_keys("/x").perform()  # typed into the field, not caught again
    assert page.find_element("id", "q").get_attribute("value") == "/x"


def test_figures_draw_charts_from_the_nodes_own_counters(page: Any, lab: Lab) -> None:
    signed_in_as(page, lab, "ops")
    for ip in (LEARN[0], EXPLAIN[0], "203.0.113.7"):
        lab.answer(ip)
    time.sleep(1.5)  # a sample of the counters after those queries (ui.sample_interval 1 s)
    page.get(f"{lab.base}/ui/figures")
    captions = [c.text for c in page.find_elements("css selector", "figcaption")]
    assert "Blocklist zone: queries per minute by answer" in captions
    assert any(c.startswith("Addresses learned per day") for c in captions)
    assert page.find_elements("css selector", "svg.chart polyline, svg.chart circle")
    assert re.search(r"blocklist \d+", page.find_element("css selector", "main p.meta").text)
