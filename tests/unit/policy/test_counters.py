"""The policy service's counters."""

from __future__ import annotations

from s25rbl.policy.counters import PolicyCounters
from s25rbl.policy.decide import Outcome


def test_made_up_stages_are_counted_as_other_so_the_counters_stay_bounded() -> None:
    counters = PolicyCounters()
    for n in range(1000):
        counters.decided(f"STAGE{n}", Outcome.NOT_TREATED)
    counters.decided("RCPT", Outcome.NOT_TREATED)
    counters.decided("", Outcome.NOT_TREATED)
    assert counters.requests == {
        ("OTHER", "not-treated"): 1000,
        ("RCPT", "not-treated"): 1,
        ("-", "not-treated"): 1,
    }
