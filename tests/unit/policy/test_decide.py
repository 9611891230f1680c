"""The policy's decisions (product §7), as tables: who is treated, each mode's RCPT, greylisting,
and what DATA and the end of a message mean after a tarpit."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from s25rbl.config import PolicySettings
from s25rbl.policy.decide import (
    DUNNO,
    ClientTarpit,
    Decision,
    Effect,
    Greylist,
    Mode,
    Outcome,
    Session,
    Triplet,
    TripletState,
    abandoned,
    after_tarpit,
    after_verdict,
    before_verdict,
    greylist,
    rcpt,
)
from s25rbl.policy.protocol import PolicyRequest
from s25rbl.verdict.model import Code, Step, Verdict

IP = ipaddress.ip_address("198.51.100.7")
NOW = 1_000_000.0
TARPIT = 65
SETTINGS = PolicySettings(tarpit=TARPIT, delay=300, retry_window=2 * 86400)


def request(stage: str = "RCPT", instance: str = "s1", **changes: Any) -> PolicyRequest:
    base = PolicyRequest(
        stage, IP, str(IP), "name", "helo", "a@example.org", "b@example.net", instance, False, False
    )
    return replace(base, **changes)


def verdict(code: Code, step: Step = Step.S25R_RULE, rule: str | None = "r1") -> Verdict:
    return Verdict(code, step, str(IP), rule=rule)


LISTED = verdict(Code.S25R)


# --- who is treated ------------------------------------------------------------------------

BEFORE = [
    ("connect", request("CONNECT"), Mode.TARGREY, "asked at CONNECT"),
    ("helo", request("HELO"), Mode.TARGREY, "asked at HELO"),
    ("mail", request("MAIL"), Mode.RGREY, "asked at MAIL"),
    ("no-stage", request(""), Mode.TARGREY, "asked at an unknown stage"),
    ("data-in-rgrey", request("DATA"), Mode.RGREY, "no tarpit to end"),
    ("eom-in-s25r", request("END-OF-MESSAGE"), Mode.S25R, "no tarpit to end"),
    ("authenticated", request(authenticated=True), Mode.TARGREY, "authenticated"),
]


@pytest.mark.parametrize(("req", "mode", "says"), [c[1:] for c in BEFORE], ids=[c[0] for c in BEFORE])
def test_requests_the_policy_does_not_act_on_are_answered_dunno_without_a_verdict(
    req: PolicyRequest, mode: Mode, says: str
) -> None:
    decided = before_verdict(req, mode)
    assert decided is not None and decided.action == DUNNO and decided.outcome is Outcome.NOT_TREATED
    assert says in decided.reason


@pytest.mark.parametrize(
    ("stage", "mode"),
    [("RCPT", m) for m in Mode]
    + [(s, m) for s in ("DATA", "END-OF-MESSAGE") for m in (Mode.STARPIT, Mode.TARGREY)],
)
def test_the_verdict_is_needed_at_rcpt_and_after_a_tarpit(stage: str, mode: Mode) -> None:
    assert before_verdict(request(stage), mode) is None


AFTER = [
    ("clean", verdict(Code.NOT_LISTED, Step.CLEAN), "targrey", "dunno", "DUNNO", Outcome.NOT_TREATED),
    (
        "whitelisted",
        verdict(Code.NOT_LISTED, Step.WHITELIST_NAME),
        "targrey",
        "dunno",
        "DUNNO",
        Outcome.NOT_TREATED,
    ),
    ("learned", verdict(Code.NOT_LISTED, Step.LEARNED), "s25r", "dunno", "DUNNO", Outcome.NOT_TREATED),
    (
        "tempfail-open",
        verdict(Code.TEMPFAIL, Step.RDNS_TEMPFAIL),
        "targrey",
        "dunno",
        "DUNNO",
        Outcome.TEMPFAIL,
    ),
    (
        "tempfail-defer",
        verdict(Code.TEMPFAIL, Step.RDNS_TEMPFAIL),
        "targrey",
        "defer",
        "DEFER_IF_PERMIT 4.7.1 reverse lookup temporarily failed, be patient",
        Outcome.TEMPFAIL,
    ),
    ("s25r-rule", LISTED, "s25r", "dunno", "450 4.7.1 S25R check, be patient [r1]", Outcome.REJECTED),
    (
        "s25r-blacklist",
        verdict(Code.BLACKLIST, Step.BLACKLIST_NAME, None),
        "s25r",
        "dunno",
        "450 4.7.1 domain check, be patient",
        Outcome.REJECTED,
    ),
    (
        "s25r-no-name",
        verdict(Code.NO_RDNS, Step.NO_CONFIRMED_NAME, None),
        "s25r",
        "dunno",
        "450 4.7.1 reverse lookup failure, be patient",
        Outcome.REJECTED,
    ),
]


@pytest.mark.parametrize(
    ("v", "mode", "tempfail", "action", "outcome"), [c[1:] for c in AFTER], ids=[c[0] for c in AFTER]
)
def test_the_verdict_alone_decides_for_unlisted_and_tempfailed_clients_and_in_mode_s25r(
    v: Verdict, mode: str, tempfail: str, action: str, outcome: Outcome
) -> None:
    decided = after_verdict(request(), v, replace(SETTINGS, mode=mode, on_tempfail=tempfail))
    assert decided is not None and (decided.action, decided.outcome) == (action, outcome)


@pytest.mark.parametrize("code", [Code.S25R, Code.BLACKLIST, Code.NO_RDNS])
@pytest.mark.parametrize("mode", ["rgrey", "starpit", "targrey"])
def test_a_listed_client_is_left_to_its_state_in_the_treating_modes(code: Code, mode: str) -> None:
    assert after_verdict(request(), verdict(code), replace(SETTINGS, mode=mode)) is None


def test_a_tempfailed_client_is_never_deferred_after_rcpt() -> None:
    decided = after_verdict(
        request("DATA"), verdict(Code.TEMPFAIL, Step.RDNS_TEMPFAIL), replace(SETTINGS, on_tempfail="defer")
    )
    assert decided is not None and decided.action == DUNNO


# --- RCPT of a listed client ---------------------------------------------------------------

STARTED = ClientTarpit("old", NOW - 10, survived=False, delivered=False)  # in its tarpit now
HUNG_UP = ClientTarpit("old", NOW - TARPIT - 31, survived=False, delivered=False)  # grace is 30 s
SURVIVED = ClientTarpit("old", NOW - 3600, survived=True, delivered=True)
SAME_SESSION = ClientTarpit("s1", NOW - 10, survived=False, delivered=False)

RCPT_CASES = [
    # id, mode, session, client, slot free, stress, expected (outcome or "greylist")
    ("rgrey-always-greylists", Mode.RGREY, None, None, True, False, "greylist"),
    ("starpit-first-recipient-tarpitted", Mode.STARPIT, None, None, True, False, Outcome.TARPIT),
    ("targrey-first-recipient-tarpitted", Mode.TARGREY, None, None, True, False, Outcome.TARPIT),
    (
        "targrey-second-recipient-of-the-session",
        Mode.TARGREY,
        Session.TARPITTED,
        None,
        True,
        False,
        Outcome.SESSION,
    ),
    (
        "starpit-second-recipient-of-the-session",
        Mode.STARPIT,
        Session.TARPITTED,
        None,
        True,
        False,
        Outcome.SESSION,
    ),
    ("second-recipient-known-from-the-store", Mode.TARGREY, None, SAME_SESSION, True, False, Outcome.SESSION),
    (
        "second-recipient-even-without-a-free-slot",
        Mode.TARGREY,
        Session.TARPITTED,
        None,
        False,
        True,
        Outcome.SESSION,
    ),
    ("targrey-hung-up-last-time-greylisted", Mode.TARGREY, None, HUNG_UP, True, False, "greylist"),
    ("starpit-hung-up-last-time-tarpitted-again", Mode.STARPIT, None, HUNG_UP, True, False, Outcome.TARPIT),
    ("targrey-parallel-session-tarpitted-too", Mode.TARGREY, None, STARTED, True, False, Outcome.TARPIT),
    ("targrey-survived-last-time-tarpitted-again", Mode.TARGREY, None, SURVIVED, True, False, Outcome.TARPIT),
    ("stress-greylists-instead", Mode.TARGREY, None, None, True, True, "greylist"),
    ("starpit-stress-greylists-instead", Mode.STARPIT, None, None, True, True, "greylist"),
    ("max-tarpits-greylists-instead", Mode.TARGREY, None, None, False, False, "greylist"),
]


@pytest.mark.parametrize(
    ("mode", "session", "client", "slot_free", "stress", "expected"),
    [c[1:] for c in RCPT_CASES],
    ids=[c[0] for c in RCPT_CASES],
)
def test_rcpt_of_a_listed_client(
    mode: Mode,
    session: Session | None,
    client: ClientTarpit | None,
    slot_free: bool,
    stress: bool,
    expected: Outcome | str,
) -> None:
    step = rcpt(mode, request(stress=stress), session, client, slot_free=slot_free, now=NOW, tarpit=TARPIT)
    if expected == "greylist":
        assert isinstance(step, Greylist), step
        return
    assert isinstance(step, Decision) and step.outcome is expected
    if expected is Outcome.TARPIT:
        assert (step.action, step.effect) == (f"SLEEP {TARPIT}", Effect.START_TARPIT)
    else:
        assert (step.action, step.effect) == (DUNNO, Effect.NONE)


def test_a_session_without_instance_is_never_taken_for_another() -> None:
    client = ClientTarpit("", NOW - 10, survived=False, delivered=False)
    step = rcpt(Mode.TARGREY, request(instance=""), None, client, slot_free=True, now=NOW, tarpit=TARPIT)
    assert isinstance(step, Decision) and step.outcome is Outcome.TARPIT


@pytest.mark.parametrize(
    ("age", "survived", "gone"),
    [
        (TARPIT + 30, False, False),  # DATA may still come: the grace is min(tarpit, 30 s)
        (TARPIT + 31, False, True),
        (TARPIT + 3600, True, False),
    ],
    ids=["within-grace", "after-grace", "survived-is-never-abandoned"],
)
def test_a_tarpit_counts_as_hung_up_once_its_session_can_no_longer_reach_data(
    age: float, survived: bool, gone: bool
) -> None:
    assert abandoned(ClientTarpit("x", NOW - age, survived, False), NOW, TARPIT) is gone


def test_a_short_tarpit_has_a_short_grace() -> None:
    assert abandoned(ClientTarpit("x", NOW - 5, False, False), NOW, 2)  # 2 s tarpit + 2 s grace


# --- greylisting ---------------------------------------------------------------------------

TEXT = "S25R check, be patient [r1]"
GREYLIST = [
    (
        "first-attempt",
        None,
        f"DEFER_IF_PERMIT 4.7.1 {TEXT}",
        Outcome.DEFERRED,
        Effect.CREATE_TRIPLET,
    ),
    (
        "retry-too-soon",
        TripletState(NOW - 299, None),
        f"DEFER_IF_PERMIT 4.7.1 {TEXT}",
        Outcome.DEFERRED,
        Effect.NONE,
    ),
    ("retry-after-delay", TripletState(NOW - 300, None), DUNNO, Outcome.PASSED, Effect.PASS_TRIPLET),
    (
        "retry-at-end-of-window",
        TripletState(NOW - 2 * 86400, None),
        DUNNO,
        Outcome.PASSED,
        Effect.PASS_TRIPLET,
    ),
    (
        "retry-after-window",
        TripletState(NOW - 2 * 86400 - 1, None),
        f"DEFER_IF_PERMIT 4.7.1 {TEXT}",
        Outcome.DEFERRED,
        Effect.RESET_TRIPLET,
    ),
    ("passed-before", TripletState(NOW - 9000, NOW - 8000), DUNNO, Outcome.KNOWN, Effect.TOUCH_TRIPLET),
]


@pytest.mark.parametrize(
    ("state", "action", "outcome", "effect"), [c[1:] for c in GREYLIST], ids=[c[0] for c in GREYLIST]
)
def test_greylisting(state: TripletState | None, action: str, outcome: Outcome, effect: Effect) -> None:
    decided = greylist(state, NOW, SETTINGS, TEXT, "mode rgrey")
    assert (decided.action, decided.outcome, decided.effect) == (action, outcome, effect)
    assert decided.reason.startswith("mode rgrey; ")


# --- after the tarpit ----------------------------------------------------------------------

AFTER_TARPIT = [
    ("data-after-tarpit-survived", "DATA", Session.TARPITTED, None, Outcome.SURVIVED, Effect.SURVIVE),
    ("data-again", "DATA", Session.SURVIVED, None, Outcome.NOT_TREATED, Effect.NONE),
    (
        "message-after-tarpit-delivered",
        "END-OF-MESSAGE",
        Session.SURVIVED,
        None,
        Outcome.DELIVERED,
        Effect.DELIVER,
    ),
    (
        "message-without-data-stage",
        "END-OF-MESSAGE",
        Session.TARPITTED,
        None,
        Outcome.DELIVERED,
        Effect.DELIVER,
    ),
    ("message-counted-once", "END-OF-MESSAGE", Session.DELIVERED, None, Outcome.NOT_TREATED, Effect.NONE),
    ("data-of-a-session-not-tarpitted", "DATA", None, None, Outcome.NOT_TREATED, Effect.NONE),
    ("data-of-another-session", "DATA", None, STARTED, Outcome.NOT_TREATED, Effect.NONE),
    ("data-known-from-the-store", "DATA", None, SAME_SESSION, Outcome.SURVIVED, Effect.SURVIVE),
    (
        "message-known-from-the-store",
        "END-OF-MESSAGE",
        None,
        replace(SAME_SESSION, survived=True),
        Outcome.DELIVERED,
        Effect.DELIVER,
    ),
    (
        "message-delivered-on-another-node",
        "END-OF-MESSAGE",
        None,
        replace(SAME_SESSION, survived=True, delivered=True),
        Outcome.NOT_TREATED,
        Effect.NONE,
    ),
]


@pytest.mark.parametrize(
    ("stage", "session", "client", "outcome", "effect"),
    [c[1:] for c in AFTER_TARPIT],
    ids=[c[0] for c in AFTER_TARPIT],
)
def test_after_the_tarpit(
    stage: str, session: Session | None, client: ClientTarpit | None, outcome: Outcome, effect: Effect
) -> None:
    decided = after_tarpit(request(stage), session, client)
    assert (decided.action, decided.outcome, decided.effect) == (DUNNO, outcome, effect)


# --- triplets ------------------------------------------------------------------------------

TRIPLETS = [
    ("v4-slash-24", "198.51.100.7", 24, 64, "198.51.100.0/24"),
    ("v4-host", "198.51.100.7", 32, 64, "198.51.100.7/32"),
    ("v6-slash-64", "2001:db8:1:2:3::7", 24, 64, "2001:db8:1:2::/64"),
    ("v6-slash-48", "2001:db8:1:2:3::7", 24, 48, "2001:db8:1::/48"),
]


@pytest.mark.parametrize(
    ("ip", "v4", "v6", "network"), [c[1:] for c in TRIPLETS], ids=[c[0] for c in TRIPLETS]
)
def test_a_triplet_is_of_the_client_network(ip: str, v4: int, v6: int, network: str) -> None:
    settings = replace(SETTINGS, ipv4_prefix=v4, ipv6_prefix=v6)
    assert Triplet.of(ipaddress.ip_address(ip), "a@example.org", "b@example.net", settings).network == network


def test_a_triplet_compares_senders_and_recipients_as_learning_does() -> None:
    first = Triplet.of(IP, "prvs=1234abcd=alice@Example.COM", "Bob@Example.NET", SETTINGS)
    retry = Triplet.of(
        ipaddress.ip_address("198.51.100.200"), "prvs=9876fedc=alice@example.com", "bob@example.net", SETTINGS
    )
    assert first == retry  # another address of the pool, a fresh BATV tag, other case: the same
    assert (first.sender, first.recipient) == ("alice@example.com", "bob@example.net")
    other = Triplet.of(IP, "alice@example.com", "carol@example.net", SETTINGS)
    assert other.key != first.key and len(first.key) == 32
