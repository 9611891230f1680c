"""The policy service's counters: plain numbers the listener bumps and ``/metrics`` and
``/v1/stats`` read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from s25rbl.policy.decide import Outcome

TARPIT_OUTCOMES = ("started", "survived", "delivered", "abandoned")
# Postfix's protocol states; any other stage is counted as OTHER, so that a client's made-up
# protocol_state values cannot grow the counters (and /metrics's labels) without bound.
STAGES = frozenset(("CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN"))
GREYLIST_OUTCOMES = ("deferred", "passed")
# The outcomes also counted under tarpits (True) or greylist (False), by which name.
_ALSO: dict[Outcome, tuple[bool, str]] = {
    Outcome.TARPIT: (True, "started"),
    Outcome.SURVIVED: (True, "survived"),
    Outcome.DELIVERED: (True, "delivered"),
    Outcome.DEFERRED: (False, "deferred"),
    Outcome.PASSED: (False, "passed"),
}


@dataclass
class PolicyCounters:
    """Counts since the node started."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, Outcome)
    tarpits: Counter[str] = field(default_factory=Counter)  # TARPIT_OUTCOMES
    greylist: Counter[str] = field(default_factory=Counter)  # GREYLIST_OUTCOMES
    bad_requests: Counter[str] = field(default_factory=Counter)  # by problem
    passes: int = 0  # passes recorded (once per session)
    learned: int = 0  # addresses learned through the policy
    connections: int = 0  # open now
    refused: int = 0  # connections closed at once: max_connections reached
    dry_run: int = 0  # treated requests answered DUNNO because of dry_run

    def decided(self, stage: str, outcome: Outcome) -> None:
        label = stage if stage in STAGES else ("-" if not stage else "OTHER")
        key = (label, outcome)  # the member itself: equal to its text, without the lookup
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        also = _ALSO.get(outcome)
        if also is not None:
            counter = self.tarpits if also[0] else self.greylist
            counter[also[1]] = counter.get(also[1], 0) + 1

    def as_json(self, in_progress: int, dropped: int) -> dict[str, Any]:
        """The figures ``/v1/stats`` shows under ``policy``."""
        by_outcome: Counter[str] = Counter()
        for (_stage, outcome), count in self.requests.items():
            by_outcome[str(outcome)] += count
        return {
            "requests": dict(sorted(by_outcome.items())),
            "tarpits": {k: self.tarpits[k] for k in TARPIT_OUTCOMES},
            "tarpits_in_progress": in_progress,
            "greylist": {k: self.greylist[k] for k in GREYLIST_OUTCOMES},
            "passes": self.passes,
            "learned": self.learned,
            "bad_requests": dict(sorted(self.bad_requests.items())),
            "connections": self.connections,
            "connections_refused": self.refused,
            "dry_run_answers": self.dry_run,
            "writes_dropped": dropped,
        }
