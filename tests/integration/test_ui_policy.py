"""The policy service's part of the operator's page over real HTTP without a browser: the
greylist and tarpits views fed by real policy requests over the node's policy socket, their
search and paging, scopes and CSRF on their writes, page sizes with the longest values the
store keeps, and the figures of tarpits and greylists. Chromium drives the daily work
(test_ui_policy_browser.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from s25rbl.ui.policy import GREYLIST_PAGE, TARPITS_PAGE
from tests.integration.test_ui import flashes
from tests.integration.ui_client import Browserless
from tests.integration.ui_lab import SEEDED, TARPIT, Lab, start_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from start_lab(tmp_path_factory.mktemp("ui-policy"))


def ops(lab: Lab, token: str | None = None) -> Browserless:
    assert lab.server.api is not None
    page = Browserless(*lab.server.api)
    assert page.sign_in(token or lab.admin).status == 303
    return page


def eventually(check: object, timeout: float = 10) -> None:
    """Wait until ``check()`` is true: the policy's writes reach the store a moment after its
    answers."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def rows(text: str, prefix: str) -> list[str]:
    return re.findall(rf'<tr id="{prefix}-(\d+)"', text)


def test_the_greylist_shows_the_triplets_the_policy_deferred_and_searches_them(lab: Lab) -> None:
    page = ops(lab)
    ip = SEEDED[0]
    eventually(lambda: len(rows(page.get("/ui/review/greylist?q=sales@example.org").text, "triplet")) == 2)
    listing = page.get("/ui/review/greylist?q=newsletter@shop.example").text
    (tid,) = rows(listing, "triplet")
    assert ip in listing and "198.51.100.0/24" in listing and "waiting" in listing
    assert SEEDED[1] in listing  # the name its tarpitted sessions recorded
    # An address of the client's network finds its triplets by the index, not by text.
    by_network = page.get("/ui/review/greylist?q=198.51.100.200").text
    assert tid in rows(by_network, "triplet") and "of 198.51.100.0/24" in by_network
    assert rows(page.get("/ui/review/greylist?q=newsletter&status=passed").text, "triplet") == []
    assert rows(page.get("/ui/review/greylist?q=newsletter&status=waiting").text, "triplet") == [tid]
    first = rows(page.get("/ui/review/greylist?q=sales@example.org").text, "triplet")
    older = page.get(f"/ui/review/greylist?q=sales@example.org&before={first[0]}").text
    assert rows(older, "triplet") == first[1:]  # keyset paging: what is below the cursor


def test_the_tarpits_show_each_session_and_its_outcome(lab: Lab) -> None:
    page = ops(lab)
    ip, host = SEEDED
    eventually(lambda: len(rows(page.get(f"/ui/review/tarpits?q={ip}").text, "tarpit")) == 2)
    time.sleep(TARPIT * 2 + 0.5)  # the session left in its tarpit has hung up by now
    listing = page.get(f"/ui/review/tarpits?q={ip}").text
    assert host in listing and "delivered" in listing and "abandoned" in listing
    abandoned = page.get(f"/ui/review/tarpits?q={ip}&status=abandoned").text
    survived = page.get(f"/ui/review/tarpits?q={ip}&status=survived").text
    assert len(rows(abandoned, "tarpit")) == len(rows(survived, "tarpit")) == 1
    assert rows(page.get("/ui/review/tarpits?q=orders@shop").text, "tarpit") == rows(listing, "tarpit")


def test_a_read_only_token_sees_the_views_without_controls_and_its_posts_are_refused(lab: Lab) -> None:
    page = ops(lab, lab.viewer)
    for path, row in (("/ui/review/greylist", "triplet"), ("/ui/review/tarpits", "tarpit")):
        text = page.get(path).text
        assert rows(text, row), path  # something that an admin could act on
        assert re.findall(r'<form method="post" action="([^"]+)"', text) == [], path
    csrf = page.csrf()
    for path, form in [("/ui/greylist/1/clear", {}), ("/ui/policy/whitelist", {"ip": SEEDED[0]})]:
        reply = page.post(path, {"csrf": csrf, **form})
        assert reply.status == 403 and "lacks the &#39;write&#39; scope" in reply.text, path
    assert lab.answer(SEEDED[0]) == "127.0.0.2"


@pytest.mark.parametrize("path", ["/ui/greylist/1/clear", "/ui/policy/whitelist"])
def test_the_policy_writes_need_the_sessions_csrf_token(lab: Lab, path: str) -> None:
    reply = ops(lab).post(path, {"ip": SEEDED[0]})
    assert reply.status == 403 and "CSRF token is missing or out of date" in reply.text


def test_bad_input_to_the_policy_writes_is_told_plainly(lab: Lab) -> None:
    page = ops(lab)
    back = "/ui/review/greylist"
    page.post("/ui/greylist/99999999/clear", {"csrf": page.csrf(), "back": back})
    assert flashes(page, back) == ["no greylisted triplet with id 99999999"]
    page.post("/ui/greylist/x1/clear", {"csrf": page.csrf(), "back": back})
    assert flashes(page, back) == ["triplet: 'x1' is not a triplet number"]
    page.post("/ui/policy/whitelist", {"csrf": page.csrf(), "back": back, "ip": "not-an-ip"})
    assert flashes(page, back) == ["address: 'not-an-ip' is not an IPv4 or IPv6 address"]
    assert page.get("/ui/review/greylist?status=bogus&before=abc").status == 200


def test_the_views_stay_under_100_kb_with_the_longest_values_the_store_keeps(lab: Lab) -> None:
    long = {"sender": "s" * 500 + "@x.example", "helo_name": "h" * 255}
    assert max(GREYLIST_PAGE, TARPITS_PAGE) < 56
    for n in range(56):  # more than a page of each
        ip = f"198.51.100.{100 + n}"  # no name in the tests' DNS: listed by rule 0
        recipient = f"{n:02d}" + "r" * 490 + "@example.org"
        assert lab.policy(ip, f"long-g{n}", stress="yes", recipient=recipient, **long)
        assert lab.policy(ip, f"long-t{n}", recipient=recipient, **long) == f"SLEEP {TARPIT}"
        if n == 27:
            time.sleep(TARPIT * 2 + 0.5)  # those tarpits ended: below max_tarpits (50) again
    page = ops(lab)
    eventually(lambda: "Older" in page.get("/ui/review/tarpits?q=@x.example").text)
    for path, full in (
        ("/ui/review/greylist?q=@x.example", GREYLIST_PAGE),
        ("/ui/review/tarpits?q=@x.example", TARPITS_PAGE),
        ("/ui/review/greylist", GREYLIST_PAGE),
    ):
        reply = page.get(path)
        assert reply.status == 200 and len(re.findall(r'<tr id="', reply.text)) == full, path
        assert len(reply.body) < 100 * 1024, f"{path} is {len(reply.body)} bytes"
        assert "Older" in reply.text, path


def test_figures_chart_tarpits_and_greylists_from_the_counters_and_the_store(lab: Lab) -> None:
    page = ops(lab)
    lab.policy(SEEDED[0], "figures-1", stress="yes", sender="figures@shop.example")
    time.sleep(2.2)  # two samples (ui.sample_interval 1 s here)
    text = page.get("/ui/figures").text
    charts = {
        "Policy service: tarpitted sessions per minute by outcome": ("started", "survived", "abandoned"),
        "Policy service: greylisted attempts per minute by outcome": ("deferred", "passed"),
    }
    for caption, series in charts.items():
        figure = re.search(rf"<figcaption>{caption}</figcaption>(.*?)</figure>", text, re.S)
        assert figure, caption
        legend = re.findall(r'<span class="sw s\d"></span>([a-z]+)', figure.group(1))
        assert set(series) <= set(legend), legend
        assert "<polyline" in figure.group(1) or "<circle" in figure.group(1)
    # From the store: every node's tarpitted sessions and passes, per hour (a bar a value).
    for caption in (
        "Tarpitted sessions per hour",
        "Policy passes (tarpits survived, greylists passed) per hour",
    ):
        figure = re.search(
            rf"<figcaption>{re.escape(caption)}, last 48 hours</figcaption>(.*?)</figure>", text, re.S
        )
        assert figure, caption
        bars = [int(n) for n in re.findall(r"<title>[^<]*: (\d+)</title></rect>", figure.group(1))]
        assert len(bars) == 48 and sum(bars) >= 1, (caption, bars)
