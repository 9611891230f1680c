"""A judge for learning tests that need no DNS: s25rbl's own verdict per address, from a dict."""

from __future__ import annotations

from s25rbl.learning.judge import Listing
from s25rbl.verdict.model import Code, Step
from s25rbl.verdict.s25r import first_general_rule


def by_rule(name: str) -> Listing:
    """An address whose confirmed name ``name`` a general rule lists (.2), or clean if none does."""
    if first_general_rule(name) is None:
        return Listing(Code.NOT_LISTED, Step.CLEAN, (name,))
    return Listing(Code.S25R, Step.S25R_RULE, (name,))


NO_NAME = Listing(Code.NO_RDNS, Step.NO_CONFIRMED_NAME)
CLEAN = Listing(Code.NOT_LISTED, Step.CLEAN, ("mail.example.org",))
BLACKLISTED = Listing(Code.BLACKLIST, Step.BLACKLIST_NAME, ("p1.dip.example.net",))
TEMPFAIL = Listing(Code.TEMPFAIL, Step.RDNS_TEMPFAIL)
TEST_ENTRY = Listing(Code.S25R, Step.TEST_ENTRY)


class DictJudge:
    """Judges addresses from ``listings``; an address not in it has no confirmed name (.4)."""

    def __init__(self, listings: dict[str, Listing] | None = None) -> None:
        self.listings = dict(listings or {})
        self.asked: list[str] = []

    def name(self, ip: str, name: str) -> DictJudge:
        self.listings[ip] = by_rule(name)
        return self

    async def __call__(self, ip: str) -> Listing:
        self.asked.append(ip)
        return self.listings.get(ip, NO_NAME)
