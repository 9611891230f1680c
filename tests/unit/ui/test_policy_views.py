"""The policy views' own rules: which network a search names, what became of a tarpitted
session, when a triplet passes and expires, and the policy counters as the figures' series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from s25rbl.config import PolicySettings
from s25rbl.policy.counters import PolicyCounters
from s25rbl.policy.decide import Outcome
from s25rbl.store.models import GreylistTriplet, TarpitRecord
from s25rbl.ui.history import History, policy_counters
from s25rbl.ui.policy import network_of, tarpit_status, triplet_times

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_an_address_names_its_triplet_network_with_the_configured_prefix() -> None:
    settings = PolicySettings(ipv4_prefix=24, ipv6_prefix=48)
    assert network_of("192.0.2.77", settings) == "192.0.2.0/24"
    assert network_of("2001:db8:1:2::9", settings) == "2001:db8:1::/48"
    assert network_of("192.0.2.77/16", settings) == "192.0.0.0/16"
    assert network_of("alice@example.com", settings) is None
    assert network_of("10.0.0.0/99", settings) is None


def test_a_tarpitted_session_is_abandoned_only_once_it_can_no_longer_reach_data() -> None:
    cutoff = T0

    def record(
        started: datetime, survived: datetime | None = None, delivered: datetime | None = None
    ) -> TarpitRecord:
        return TarpitRecord(started_at=started, survived_at=survived, delivered_at=delivered)

    assert tarpit_status(record(T0 - timedelta(seconds=1)), cutoff) == "abandoned"
    assert tarpit_status(record(T0 + timedelta(seconds=1)), cutoff) == "in tarpit"
    assert tarpit_status(record(T0 - timedelta(hours=1), survived=T0), cutoff) == "survived"
    assert tarpit_status(record(T0 - timedelta(hours=1), survived=T0, delivered=T0), cutoff) == "delivered"


def test_a_waiting_triplet_passes_after_the_delay_and_expires_after_the_retry_window() -> None:
    settings = PolicySettings(delay=300, retry_window=86400, max_age=10 * 86400)
    waiting = GreylistTriplet(first_seen=T0, last_seen=T0, passed_at=None)
    assert triplet_times(waiting, settings) == {
        "passes_from": T0 + timedelta(seconds=300),
        "expires": T0 + timedelta(days=1),
    }
    seen = T0 + timedelta(days=3)
    passed = GreylistTriplet(first_seen=T0, last_seen=seen, passed_at=T0 + timedelta(minutes=6))
    assert triplet_times(passed, settings) == {"expires": seen + timedelta(days=10)}


def test_the_policy_counters_are_series_of_the_figures() -> None:
    counters = PolicyCounters()
    h = History([lambda: policy_counters(counters)], size=4, interval=60)
    h.start()
    counters.decided("RCPT", Outcome.TARPIT)
    counters.decided("RCPT", Outcome.DEFERRED)
    counters.decided("RCPT", Outcome.DEFERRED)
    counters.tarpits["abandoned"] += 1
    h.sample()
    window = h.window()
    assert window.names("policy:tarpit_") == [
        "policy:tarpit_abandoned",
        "policy:tarpit_delivered",
        "policy:tarpit_started",
        "policy:tarpit_survived",
    ]
    assert window.series("policy:tarpit_started") == [1]
    assert window.series("policy:tarpit_abandoned") == [1]
    assert window.series("policy:greylist_deferred") == [2]
    assert window.series("policy:greylist_passed") == [0]
