"""Report limits: token buckets per key, refilled with time, bounded in the keys they hold."""

from __future__ import annotations

import pytest

from s25rbl.learning.limits import RateLimiter, ReportLimits
from tests.support.clock import FakeClock


def test_a_burst_is_granted_then_refused_until_the_bucket_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, 10, max_keys=100, clock=clock)  # one a second, ten saved up
    assert [limiter.take("mx1") for _ in range(10)] == [0.0] * 10
    assert limiter.take("mx1") == pytest.approx(1.0)
    assert limiter.take("mx2") == 0.0  # keys are independent
    clock.advance(3)
    assert limiter.take("mx1", 3) == 0.0
    assert limiter.take("mx1") == pytest.approx(1.0)


def test_a_refused_take_takes_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, 10, max_keys=100, clock=clock)
    assert limiter.take("mx1", 8) == 0.0
    assert limiter.take("mx1", 5) == pytest.approx(3.0)  # 2 there, 3 more needed
    assert limiter.take("mx1", 2) == 0.0


def test_more_than_the_burst_can_never_be_taken() -> None:
    limiter = RateLimiter(60, 10, max_keys=100, clock=FakeClock())
    assert limiter.take("mx1", 11) == float("inf")


def test_the_keys_held_are_bounded_least_recently_used_first_out() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, 2, max_keys=1000, clock=clock)
    limiter.take("hot", 2)
    for n in range(5000):
        limiter.take(f"2001:db8::{n:x}")
        if n % 100 == 0:
            limiter.take("hot", 0)  # used recently: kept
    assert len(limiter) == 1000
    assert limiter.take("hot") > 0  # still empty: not forgotten


def test_a_whole_batch_always_fits_a_reporters_burst() -> None:
    limits = ReportLimits(per_reporter=10, per_address=60, max_batch=1000, clock=FakeClock())
    assert limits.reporters.take("mx1", 1000) == 0.0
    assert limits.reporters.take("mx1", 1) > 0
