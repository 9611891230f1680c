"""The figures' memory: what each counter grew by per sample, in bounded rings."""

from __future__ import annotations

from collections import Counter

import pytest

from s25rbl.node.counters import LOOKUP_BUCKETS, Snapshot
from s25rbl.ui.history import MAX_SERIES, History, snapshot_counters


class Counters:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def __call__(self) -> dict[str, float]:
        return dict(self.values)


def history(size: int = 5) -> tuple[History, Counters]:
    counters = Counters()
    times = iter(range(100, 10_000, 60))
    return History([counters], size=size, interval=60, clock=lambda: float(next(times))), counters


def test_each_sample_keeps_what_the_counters_grew_by() -> None:
    h, c = history()
    c.values = {"q": 10}
    h.start()
    for total in (15, 15, 40):
        c.values = {"q": total}
        h.sample()
    window = h.window()
    assert window.series("q") == [5, 0, 25]
    assert window.times == [100.0, 160.0, 220.0]


def test_the_ring_keeps_the_last_samples_oldest_first() -> None:
    h, c = history(size=3)
    h.start()
    for n in range(1, 6):
        c.values = {"q": n * 10}
        h.sample()
    assert h.window().series("q") == [10, 10, 10]
    assert len(h.window().times) == 3 and h.window(2).times == h.window().times[1:]


def test_a_counter_that_went_back_restarted_from_zero() -> None:
    h, c = history()
    c.values = {"q": 100}
    h.start()
    c.values = {"q": 7}  # a worker process was replaced: its count starts again
    h.sample()
    assert h.window().series("q") == [7]


def test_a_new_series_appears_with_zeros_before_it() -> None:
    h, c = history()
    h.start()
    h.sample()
    c.values = {"policy:tarpit_started": 3}
    h.sample()
    assert h.window().series("policy:tarpit_started") == [0, 3]
    assert h.window().names("policy:") == ["policy:tarpit_started"]


def test_the_number_of_series_is_bounded() -> None:
    h, c = history()
    h.start()
    c.values = {f"s{n}": n for n in range(MAX_SERIES + 50)}
    h.sample()
    assert len(h.window().values) == MAX_SERIES


def test_a_failing_source_loses_only_its_own_figures() -> None:
    h, c = history()

    def broken() -> dict[str, float]:
        raise RuntimeError("boom")

    h.add_source(broken)
    h.start()
    c.values = {"q": 4}
    h.sample()
    assert h.window().series("q") == [4]


def test_snapshot_counters_add_up_steps_and_latency_outcomes() -> None:
    snap = Snapshot()
    snap.queries = Counter(
        {("blocklist", "127.0.0.2", "s25r-rule"): 3, ("blocklist", "127.0.0.2", "clean"): 2}
    )
    snap.lookups = Counter({"fresh": 4, "cache_hits": 6})
    buckets = len(LOOKUP_BUCKETS) + 1
    snap.latency_counts = {"fresh": [1] + [0] * (buckets - 1), "tempfail": [0] * (buckets - 1) + [2]}
    snap.latency_sums = {"fresh": 0.001, "tempfail": 10.0}
    flat = snapshot_counters(snap)
    assert flat["q:blocklist:127.0.0.2"] == 5
    assert flat["lookup:fresh"] == 4 and flat["lookup:cache_hits"] == 6 and flat["lookup:overload"] == 0
    assert flat["latency:le0"] == 1 and flat[f"latency:le{buckets - 1}"] == 2
    assert flat["latency:sum"] == pytest.approx(10.001)
