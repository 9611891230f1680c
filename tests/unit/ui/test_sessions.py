"""Sessions of the operator's page and the sign-in limit: expiry, bounds, CSRF comparison."""

from __future__ import annotations

import pytest

from s25rbl.ui.sessions import MAX_FLASHES, Sessions, SignInLimiter


class Tick:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("steps", "alive"),
    [
        ([10, 10, 10], True),  # seen every 10 s: the idle limit (60 s) never passes
        ([61], False),  # idle too long
        ([50, 50, 50, 50, 50], False),  # never idle for long, but past the lifetime (200 s)
        ([50, 50, 50], True),
    ],
    ids=["busy", "idle", "past-lifetime", "within-lifetime"],
)
def test_a_session_ends_when_idle_or_past_its_lifetime(steps: list[float], alive: bool) -> None:
    tick = Tick()
    sessions = Sessions(idle=60, lifetime=200, clock=tick)
    cookie, _ = sessions.create("token", "ops")
    found = True
    for step in steps:
        tick.now += step
        found = sessions.get(cookie) is not None
    assert found is alive
    assert len(sessions) == (1 if alive else 0)  # an ended session is forgotten, not kept


def test_sessions_are_bounded_and_the_least_recently_seen_gives_way() -> None:
    tick = Tick()
    sessions = Sessions(idle=600, lifetime=6000, clock=tick, limit=3)
    cookies = [sessions.create(f"t{i}", f"n{i}")[0] for i in range(3)]
    tick.now += 1
    assert sessions.get(cookies[0]) is not None  # seen: now the most recent
    newest, _ = sessions.create("t3", "n3")
    assert len(sessions) == 3
    assert sessions.get(cookies[1]) is None  # the least recently seen one went
    assert all(sessions.get(c) is not None for c in (cookies[0], cookies[2], newest))


@pytest.mark.parametrize(
    "cookie", [None, "", "x" * 101, "not-a-session"], ids=["none", "empty", "long", "unknown"]
)
def test_unknown_cookies_find_no_session(cookie: str | None) -> None:
    sessions = Sessions(idle=60, lifetime=600)
    sessions.create("token", "ops")
    assert sessions.get(cookie) is None


def test_cookie_and_csrf_token_are_long_random_and_distinct() -> None:
    sessions = Sessions(idle=60, lifetime=600)
    (c1, s1), (c2, s2) = sessions.create("t", "a"), sessions.create("t", "b")
    assert len({c1, c2, s1.csrf, s2.csrf}) == 4 and min(len(c1), len(s1.csrf)) >= 40
    assert s1.key != c1  # filed under a digest, not the cookie itself


@pytest.mark.parametrize(
    ("sent", "ok"),
    [("same", True), ("other", False), ("", False), (None, False)],
    ids=["match", "wrong", "empty", "missing"],
)
def test_csrf_check(sent: str | None, ok: bool) -> None:
    _, session = Sessions(idle=60, lifetime=600).create("t", "a")
    token = session.csrf if sent == "same" else sent
    assert session.csrf_ok(token) is ok


def test_end_all_ends_every_session_of_a_token_only() -> None:
    sessions = Sessions(idle=60, lifetime=600)
    a1, _ = sessions.create("revoked", "a")
    a2, _ = sessions.create("revoked", "a")
    b, _ = sessions.create("kept", "b")
    sessions.end_all("revoked")
    assert sessions.get(a1) is None and sessions.get(a2) is None and sessions.get(b) is not None


def test_flashes_are_shown_once_and_bounded() -> None:
    _, session = Sessions(idle=60, lifetime=600).create("t", "a")
    for n in range(MAX_FLASHES + 3):
        session.flash("ok", f"message {n}" + "x" * 1000)
    shown = session.take_flashes()
    assert len(shown) == MAX_FLASHES and shown[-1][1].startswith(f"message {MAX_FLASHES + 2}")
    assert all(len(text) <= 500 for _, text in shown)
    assert session.take_flashes() == []


def test_failed_sign_ins_wait_per_address_and_the_window_frees_them() -> None:
    tick = Tick()
    limiter = SignInLimiter(per_address=3, overall=100, window=60, clock=tick)
    for _ in range(3):
        assert limiter.retry_after("192.0.2.1") == 0
        limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == pytest.approx(60)
    assert limiter.retry_after("192.0.2.2") == 0  # others are not held up
    tick.now += 61
    assert limiter.retry_after("192.0.2.1") == 0


def test_a_success_forgets_the_addresss_failures() -> None:
    limiter = SignInLimiter(per_address=2, overall=100, window=60, clock=Tick())
    limiter.failed("192.0.2.1")
    limiter.succeeded("192.0.2.1")
    limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 0


def test_many_addresses_together_hit_the_overall_limit() -> None:
    tick = Tick()
    limiter = SignInLimiter(per_address=5, overall=10, window=60, clock=tick)
    for n in range(10):
        limiter.failed(f"192.0.2.{n}")
    assert limiter.retry_after("198.51.100.1") > 0  # a fresh address waits too


def test_the_limiter_remembers_a_bounded_number_of_addresses() -> None:
    limiter = SignInLimiter(per_address=5, overall=10**6, window=60, clock=Tick(), max_addresses=100)
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter._failures) == 100
