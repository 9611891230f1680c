"""Explain: the steps as shown, and which entries the page offers (only ones that would win)."""

from __future__ import annotations

import pytest

from s25rbl.lists.values import EntryKind
from s25rbl.resolve.rdns import RdnsResult
from s25rbl.ui.explain import steps_of, targets_of
from s25rbl.verdict.model import Code, Step, Verdict

NAME = "p1234-ipad12.tokyo.ocn.ne.jp"
RDNS = RdnsResult(names=(NAME, "spoofed.example"), confirmed=(NAME,))
IP = "203.0.113.7"


def verdict(code: Code, step: Step, rdns: RdnsResult | None = RDNS) -> Verdict:
    return Verdict(code, step, IP, rule="r1" if step is Step.S25R_RULE else None, rdns=rdns)


def test_the_steps_before_the_deciding_one_passed_and_those_after_were_not_reached() -> None:
    rows = steps_of(verdict(Code.S25R, Step.S25R_RULE), by_address=True)
    states = [r.state for r in rows]
    assert states == ["passed"] * 3 + ["looked up"] + ["passed"] * 3 + ["decided", "not reached"]


def test_a_decision_before_the_lookup_never_looked_anything_up() -> None:
    rows = steps_of(verdict(Code.NOT_LISTED, Step.LEARNED, rdns=None), by_address=True)
    assert [r.state for r in rows][:4] == ["passed", "passed", "decided", "not reached"]


def test_test_entries_have_no_steps() -> None:
    assert steps_of(verdict(Code.S25R, Step.TEST_ENTRY, rdns=None), by_address=True) == []


# (id, code, step, expected (kind, value) targets)
CASES = [
    ("s25r-listed", Code.S25R, Step.S25R_RULE, [("ip", IP), ("hostname", NAME), ("domain", "ocn.ne.jp")]),
    (
        "no-confirmed-name",
        Code.NO_RDNS,
        Step.NO_CONFIRMED_NAME,
        [("ip", IP), ("hostname", NAME), ("domain", "ocn.ne.jp")],
    ),
    (
        "blacklisted-address",
        Code.BLACKLIST,
        Step.BLACKLIST_ADDRESS,
        [("ip", IP)],
    ),  # a name entry would come too late
    ("tempfail", Code.TEMPFAIL, Step.RDNS_TEMPFAIL, [("ip", IP)]),
    ("clean", Code.NOT_LISTED, Step.CLEAN, [("ip", IP), ("hostname", NAME), ("domain", "ocn.ne.jp")]),
    (
        "whitelisted-name",
        Code.NOT_LISTED,
        Step.WHITELIST_NAME,
        [("ip", IP)],
    ),  # a name blacklist comes after it
    ("learned", Code.NOT_LISTED, Step.LEARNED, [("ip", IP)]),
    ("whitelisted-address", Code.NOT_LISTED, Step.WHITELIST_ADDRESS, []),  # nothing comes before step 1
]


@pytest.mark.parametrize(("code", "step", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_only_entries_that_would_change_the_verdict_are_offered(
    code: Code, step: Step, expected: list[tuple[str, str]]
) -> None:
    targets = targets_of(verdict(code, step), by_address=True)
    assert [(t.kind.value, t.value) for t in targets] == expected


def test_a_hostname_offers_the_name_and_its_registrable_domain() -> None:
    v = Verdict(Code.S25R, Step.S25R_RULE, NAME, rule="r1")
    assert [(t.kind, t.value) for t in targets_of(v, by_address=False)] == [
        (EntryKind.HOSTNAME, NAME),
        (EntryKind.DOMAIN, "ocn.ne.jp"),
    ]
