"""The verdict of product §4, in order: the first step that decides wins.

Steps 1-3 need memory only; step 4 needs the reverse lookup (often cached); steps 5-9 work on
its result. ``decide_fast`` returns a verdict without awaiting when it can, so the responder
answers most queries without scheduling a task.

A learned address (step 3) never overrides the operator's blacklist (product §5): by IP or
CIDR step 2 comes first; by hostname, domain or regex the names are needed, so while the
operator has such entries a learned address is decided after the lookup (step 6 can still
list it), and at step 3 at once when there are none.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable

from s25rbl.clock import Clock, SystemClock
from s25rbl.lists.values import EntryRow, IPAddress, parse_address_literal
from s25rbl.resolve.rdns import RdnsResult, ReverseLookup
from s25rbl.verdict.hits import HitCounter
from s25rbl.verdict.lists import ListIndex, to_match
from s25rbl.verdict.model import Code, Match, Step, Verdict

log = logging.getLogger(__name__)

TEST_LISTED = ipaddress.IPv4Address("127.0.0.2")
TEST_UNLISTED = ipaddress.IPv4Address("127.0.0.1")


class VerdictEngine:
    """The verdict on an address (product §4) or a hostname (§3a), from the current lists and
    reverse lookups; counts the entries that decide."""

    def __init__(
        self,
        lists: Callable[[], ListIndex],
        rdns: ReverseLookup,
        *,
        tempfail_ttl: int = 30,
        ip_literal_names: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.lists = lists  # the current snapshot; a new object whenever the lists change
        self.rdns = rdns
        self._tempfail_ttl = tempfail_ttl
        self._ip_literal_names = ip_literal_names
        self.clock = clock or SystemClock()
        self.hits = HitCounter(self.clock)

    def decide_fast(self, ip: IPAddress) -> Verdict | None:
        """The verdict if it needs no waiting (lists, test entries, cached lookup), else None."""
        early = self._before_lookup(ip)
        if early is not None:
            return early
        rdns = self.rdns.cached(ip)
        if rdns is None:
            return None
        return self._after_lookup(ip, rdns, cached=True)

    def valid_until(self, ip: IPAddress, verdict: Verdict, forever: float = math.inf) -> float | None:
        """How long ``verdict`` stays right (clock.monotonic() time): one from the lists alone
        until they change (``forever``); one from a reverse lookup until that lookup leaves the
        cache (None, never to be reused, if it was not cached: a TTL-0 result, an overload)."""
        if verdict.rdns is None:
            return forever
        return self.rdns.expires_at(ip, verdict.rdns)

    async def decide(self, ip: IPAddress, *, ignore_learned: bool = False) -> Verdict:
        """The verdict; ``ignore_learned``: as if the address were not learned (what learning
        judges a reported address by: would s25rbl list it on its own?)."""
        early = self._before_lookup(ip, ignore_learned=ignore_learned)
        if early is not None:
            return early
        rdns, cached = await self.rdns.lookup(ip)
        return self._after_lookup(ip, rdns, cached=cached, ignore_learned=ignore_learned)

    async def decide_after_lists(self, ip: IPAddress, querier: str | None = None) -> Verdict:
        """Steps 4-9 only: for a caller to whom ``decide_fast`` just returned None, so steps
        1-3 have already found nothing that decides (not repeated: they cost as much as the
        rest). ``querier``: the address of the DNS client asking, whose lookups share slots
        fairly with other clients' (None: asked from here)."""
        rdns, cached = await self.rdns.lookup(ip, querier)
        return self._after_lookup(ip, rdns, cached=cached)

    def decide_looked_up(self, ip: IPAddress, rdns: RdnsResult, *, cached: bool) -> Verdict:
        """Steps 4-9 on a lookup's result: for a caller to whom ``decide_fast`` returned None
        and who did the lookup itself (``rdns.start``, the DNS responder's fresh verdicts)."""
        return self._after_lookup(ip, rdns, cached=cached)

    def decide_name(self, name: str) -> Verdict:
        """The verdict on a hostname as given (product §3a): no lookups, memory only.

        For MTAs that already did the reverse and forward lookups themselves. The order is
        the address verdict's from step 5 on: whitelist, blacklist, rules.
        """
        name = name.lower().rstrip(".")
        if name == "test":  # RFC 5782 domain-list test entries
            return Verdict(Code.S25R, Step.TEST_ENTRY, name, rule="test")
        if name == "invalid":
            return Verdict(Code.NOT_LISTED, Step.TEST_ENTRY, name)
        literal = parse_address_literal(name)
        if literal is not None:
            # An address where a name should be (HELO [192.0.2.1], or a client without a
            # name): judged as rule 0 judges a client without a confirmed name, if wanted.
            code = Code.NO_RDNS if self._ip_literal_names else Code.NOT_LISTED
            return Verdict(code, Step.IP_LITERAL, name)
        lists = self.lists()
        match = lists.white_name((name,))
        if match is not None:
            return self._decided(Verdict(Code.NOT_LISTED, Step.WHITELIST_NAME, name, match=match))
        match = lists.black_name((name,))
        if match is not None:
            return self._decided(Verdict(Code.BLACKLIST, Step.BLACKLIST_NAME, name, match=match))
        hit = lists.rules.match(name)
        if hit is None:
            return Verdict(Code.NOT_LISTED, Step.CLEAN, name)
        label, _pattern, row = hit
        match = to_match(row, name) if row is not None else None
        self.hits.hit(match)
        return Verdict(Code.S25R, Step.S25R_RULE, name, rule=label, match=match)

    # --- the steps -----------------------------------------------------------------------

    def _before_lookup(self, ip: IPAddress, *, ignore_learned: bool = False) -> Verdict | None:
        if ip == TEST_LISTED:
            return Verdict(Code.S25R, Step.TEST_ENTRY, str(ip), rule="test")
        if ip == TEST_UNLISTED:
            return Verdict(Code.NOT_LISTED, Step.TEST_ENTRY, str(ip))
        lists = self.lists()
        match = lists.white_address(ip)  # 1. operator whitelist by IP or CIDR
        if match is not None:
            return self._decided(Verdict(Code.NOT_LISTED, Step.WHITELIST_ADDRESS, str(ip), match=match))
        match = lists.black_address(ip)  # 2. operator blacklist by IP or CIDR
        if match is not None:
            return self._decided(Verdict(Code.BLACKLIST, Step.BLACKLIST_ADDRESS, str(ip), match=match))
        if ignore_learned:
            return None
        match = lists.learned_address(ip)  # 3. learned from retries ...
        if match is not None and not lists.black_names:
            # ... at once while no name can blacklist it; else after the lookup (step 6 first).
            return self._decided(Verdict(Code.NOT_LISTED, Step.LEARNED, str(ip), match=match))
        return None

    def _after_lookup(
        self, ip: IPAddress, rdns: RdnsResult, *, cached: bool, ignore_learned: bool = False
    ) -> Verdict:
        address = str(ip)
        lists = self.lists()
        learned = None if ignore_learned else lists.learned_address(ip)
        if learned is not None:
            return self._learned_after_lookup(lists, address, learned, rdns, cached=cached)
        if rdns.tempfail:  # 4. the reverse lookup failed for now: say so, briefly
            return Verdict(
                Code.TEMPFAIL, Step.RDNS_TEMPFAIL, address, rdns=rdns, cached=cached, ttl=self._tempfail_ttl
            )
        # 5. whitelist by name: only forward-confirmed names may grant anything.
        match = lists.white_name(rdns.confirmed)
        if match is not None:
            return self._decided(
                Verdict(Code.NOT_LISTED, Step.WHITELIST_NAME, address, match=match, rdns=rdns, cached=cached)
            )
        # 6. blacklist by name: any PTR name counts, confirmed or not, since a name claimed
        # by the address's owner can only hurt that owner.
        match = lists.black_name(rdns.confirmed + tuple(n for n in rdns.names if n not in rdns.confirmed))
        if match is not None:
            return self._decided(
                Verdict(Code.BLACKLIST, Step.BLACKLIST_NAME, address, match=match, rdns=rdns, cached=cached)
            )
        if not rdns.confirmed:  # 7. rule 0: no PTR, or none resolves back
            return Verdict(Code.NO_RDNS, Step.NO_CONFIRMED_NAME, address, rdns=rdns, cached=cached)
        # 8. S25R rules: listed only if every confirmed name looks dynamic; one proper name
        # among them is what a real mail server with several PTRs has.
        first: tuple[str, str, EntryRow | None] | None = None
        for name in rdns.confirmed:
            hit = lists.rules.match(name)
            if hit is None:
                return Verdict(Code.NOT_LISTED, Step.CLEAN, address, rdns=rdns, cached=cached)
            if first is None:
                first = (hit[0], name, hit[2])
        assert first is not None
        label, name, row = first
        match = None
        if row is not None:
            match = to_match(row, name)
            self.hits.hit(match)
        return Verdict(Code.S25R, Step.S25R_RULE, address, rule=label, match=match, rdns=rdns, cached=cached)

    def _learned_after_lookup(
        self, lists: ListIndex, address: str, learned: Match, rdns: RdnsResult, *, cached: bool
    ) -> Verdict:
        """A learned address while the operator blacklists names: listed only if step 6 would
        list it (step 5, the whitelist by name, still comes first); otherwise step 3 decides.
        A lookup that failed for now cannot show a blacklisted name: the learned entry stands."""
        if not rdns.tempfail and lists.white_name(rdns.confirmed) is None:
            match = lists.black_name(rdns.confirmed + tuple(n for n in rdns.names if n not in rdns.confirmed))
            if match is not None:
                return self._decided(
                    Verdict(
                        Code.BLACKLIST, Step.BLACKLIST_NAME, address, match=match, rdns=rdns, cached=cached
                    )
                )
        return self._decided(
            Verdict(Code.NOT_LISTED, Step.LEARNED, address, match=learned, rdns=rdns, cached=cached)
        )

    def _decided(self, verdict: Verdict) -> Verdict:
        self.hits.hit(verdict.match)
        return verdict
